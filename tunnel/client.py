"""Opening a tunnel WebSocket as a client (the agent, test agents, simulated agents).

The upgrade is websockets' ``ClientProtocol`` (its request, its checks of the answer:
accept key, subprotocol, extensions) over a plain asyncio connection; once it is open
the same protocol object moves into a :class:`tunnel.link.WsLink`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from typing import Final, cast

from websockets.client import ClientProtocol
from websockets.http11 import Response
from websockets.protocol import State as WsState
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

import wire
from tunnel.link import WS_LOGGER, WsLink, set_nodelay

#: Largest handshake answer read before giving up (a relay's JSON error is ~200 bytes).
MAX_HANDSHAKE_RESPONSE: Final = 64 * 1024


class HandshakeRefused(Exception):
    """The server answered the upgrade with something other than 101 (see ``response``)."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"upgrade refused with {response.status_code}")
        self.response = response


class HandshakeFailed(Exception):
    """The answer was a 101 that breaks the rules (key, subprotocol), or not HTTP."""


class _Upgrade(asyncio.Protocol):
    """Sends the upgrade request and reads the answer with websockets' protocol.

    The protocol object gets the answer's head and, for a refusal, its body; never a
    byte past a 101's head: what follows it (the server may write its first messages
    in the same segment) is kept in :attr:`rest` for the link, as it arrived.
    """

    def __init__(self, ws: ClientProtocol, headers: Sequence[tuple[str, str]]) -> None:
        self.ws = ws
        self.headers = headers
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[Sequence[object]] = asyncio.get_running_loop().create_future()
        self.rest = bytearray()  # received past the 101's head, for the link
        self.lost: tuple[Exception | None] | None = None  # connection_lost after done
        self._received = 0
        self._tail = b""  # the last bytes of the head so far (its end may straddle reads)
        self._head_done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        request = self.ws.connect()
        for name, value in self.headers:
            request.headers[name] = value
        self.ws.send_request(request)
        self.transport.write(b"".join(self.ws.data_to_send()))

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            self.rest += data  # the link's, once it takes over
            return
        self._received += len(data)
        rest = b""
        if not self._head_done:
            probe = self._tail + data
            end = probe.find(b"\r\n\r\n")
            if end >= 0:
                cut = end + 4 - len(self._tail)
                data, rest = data[:cut], data[cut:]
                self._head_done = True
            else:
                self._tail = probe[-3:]
        self.ws.receive_data(data)
        if self._answered(rest):
            return
        if rest:  # the head of a refusal: its body follows
            self.ws.receive_data(rest)
            if self._answered(b""):
                return
        if self._received > MAX_HANDSHAKE_RESPONSE:
            self.done.set_exception(HandshakeFailed("the handshake answer is too large"))

    def _answered(self, rest: bytes) -> bool:
        """Resolve :attr:`done` if the answer is complete or broken."""
        events = self.ws.events_received()
        if events:
            self.rest += rest
            self.done.set_result(events)
            return True
        if self.ws.handshake_exc is not None:  # not HTTP: fail now, not at the timeout
            self.done.set_exception(HandshakeFailed(str(self.ws.handshake_exc)))
            return True
        return False

    def eof_received(self) -> bool | None:
        if not self.done.done():
            self.ws.receive_eof()
            events = self.ws.events_received()
            if events:
                self.done.set_result(events)
            else:
                self.done.set_exception(HandshakeFailed("connection closed during the upgrade"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionResetError("connection lost in upgrade"))
        else:
            self.lost = (exc,)  # before the link took over: it is told


async def connect_link(
    uri: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    open_timeout: float = 10.0,
    subprotocols: Sequence[str] = (wire.SUBPROTOCOL,),
    sock: socket.socket | None = None,
) -> tuple[WsLink, Response]:
    """Connect to ``ws[s]://host[:port]/path`` and upgrade with the tunnel subprotocol.

    Returns the open link (attach a session to it) and the server's 101 answer.
    ``subprotocols`` other than the default are for tests of refusals. ``sock``: an
    already connected socket to use (through a proxy; TLS still verifies the URL's
    host); it belongs to the link from then on.

    Raises:
        HandshakeRefused: any other status (its response carries the body).
        HandshakeFailed: a malformed or rule-breaking answer.
        OSError, ssl.SSLError, TimeoutError: from the connection itself.
    """
    parsed = parse_uri(uri)
    ws = ClientProtocol(
        parsed,
        subprotocols=[Subprotocol(p) for p in subprotocols] or None,
        extensions=None,  # no permessage-deflate
        max_size=wire.MAX_FRAME_SIZE,
        logger=WS_LOGGER,
    )
    loop = asyncio.get_running_loop()
    context = ssl_context if parsed.secure else None
    if parsed.secure and context is None:
        context = ssl.create_default_context()
    async with asyncio.timeout(open_timeout):
        if sock is None:
            transport, upgrade = await loop.create_connection(
                lambda: _Upgrade(ws, headers), parsed.host, parsed.port, ssl=context
            )
        else:
            server_hostname = parsed.host if context is not None else None
            transport, upgrade = await loop.create_connection(
                lambda: _Upgrade(ws, headers),
                sock=sock,
                ssl=context,
                server_hostname=server_hostname,
            )
        try:
            events = await upgrade.done
        except BaseException:
            transport.abort()
            raise
    response = cast(Response, events[0])
    if ws.state is not WsState.OPEN:
        transport.abort()
        if response.status_code != 101:
            raise HandshakeRefused(response)
        raise HandshakeFailed(str(ws.handshake_exc or "upgrade failed"))
    link = WsLink(True, ping_interval=ping_interval, ping_timeout=ping_timeout)
    link.adopt(transport, bytes(upgrade.rest))
    if upgrade.lost is not None:
        link.connection_lost(upgrade.lost[0])
    return link, response
