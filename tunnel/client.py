"""Opening a tunnel WebSocket as a client (the agent, test agents, simulated agents).

The upgrade (RFC 6455 sections 4.1-4.2) is written here over a plain asyncio
connection, and the answer's head and body are parsed with httptools (llhttp); once it
is open the connection moves into a :class:`tunnel.link.WsLink`.

Why not websockets' ``ClientProtocol`` (the first implementation): importing
websockets cost the agent about 2.5 MiB of its idle RSS (its ``version`` module imports
``importlib.metadata``, and with it ``email``, ``tempfile``...; measured with the
connected agent's VmRSS, 32.7 MiB before, 30.3 without it), for one request and one
answer. The relay still accepts with websockets
(:mod:`tunnel.server`).

What is checked, as the RFC asks of a client: a 101 answer in HTTP/1.1 with
``Upgrade: websocket``, ``Connection: upgrade`` and the ``Sec-WebSocket-Accept`` of
the key sent; no extension (none is offered); exactly one subprotocol, one of those
offered (none if none was). Anything else in a 101 fails the handshake
(:class:`HandshakeFailed`), as does an answer that is not HTTP; any other status is a
refusal (:class:`HandshakeRefused`, with its body).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import os
import re
import socket
import ssl
import urllib.parse
from collections.abc import Sequence
from typing import Final, cast

import httptools

import wire
from tunnel.link import WS_LOGGER, WsLink, set_nodelay

#: Largest handshake answer read before giving up (a relay's JSON error is ~200 bytes).
MAX_HANDSHAKE_RESPONSE: Final = 64 * 1024

#: RFC 6455 section 1.3: appended to the key before hashing it into the accept value.
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: RFC 9110 section 5.6.2 token (a header name, a subprotocol).
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

#: A header value the request may carry: visible ASCII, spaces and tabs, no CR or LF.
_VALUE: Final = re.compile(r"[\t\x20-\x7e]*")


class Headers:
    """An answer's header fields in order, looked up by case-insensitive name."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Sequence[tuple[str, str]] = ()) -> None:
        self._fields = list(fields)

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in the order received."""
        name = name.lower()
        return [value for key, value in self._fields if key.lower() == name]

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.get_all(name)
        return ", ".join(values) if values else default

    def __getitem__(self, name: str) -> str:
        """The value of ``name`` (several are joined with ", ", RFC 9110 section 5.3)."""
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_all(name))

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """The server's answer to the upgrade: a 101's head, or a refusal with its body."""

    status_code: int
    reason_phrase: str
    headers: Headers
    body: bytes = b""


class HandshakeRefused(Exception):
    """The server answered the upgrade with something other than 101 (see ``response``)."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"upgrade refused with {response.status_code}")
        self.response = response


class HandshakeFailed(Exception):
    """The answer was a 101 that breaks the rules (key, subprotocol), or not HTTP."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Target:
    """Where a ``ws[s]://`` URI points."""

    secure: bool
    host: str  # to connect to (an IPv6 address without brackets)
    port: int
    host_header: str
    resource: str  # path and query


def _parse_uri(uri: str) -> _Target:
    """Split a ``ws[s]://host[:port]/path?query`` URI; ValueError if it is not one.

    The URI must be ASCII already (a punycode host, a percent-encoded path), as the
    agent's are (:func:`edge_agent.connect.connect_url`).
    """
    if not uri.isascii():
        raise ValueError(f"the URI {uri!r} is not ASCII (encode the host and path first)")
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme not in ("ws", "wss"):
        raise ValueError(f"{uri!r} is not a ws:// or wss:// URI")
    if not parsed.hostname:
        raise ValueError(f"{uri!r} has no host")
    if parsed.username is not None or parsed.password is not None:
        raise ValueError(f"{uri!r} carries credentials (send them as a header)")
    if parsed.fragment:
        raise ValueError(f"{uri!r} has a fragment")
    secure = parsed.scheme == "wss"
    port = parsed.port or (443 if secure else 80)  # parsed.port: ValueError if invalid
    host = parsed.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == (443 if secure else 80) else f"{shown}:{port}"
    resource = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    return _Target(secure, host, port, host_header, resource)


def _request(
    target: _Target, key: str, subprotocols: Sequence[str], headers: Sequence[tuple[str, str]]
) -> bytes:
    """The upgrade request's head (RFC 6455 section 4.1); ValueError for a bad header."""
    fields = [
        ("Host", target.host_header),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    if subprotocols:
        fields.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    fields.extend(headers)
    lines = [f"GET {target.resource} HTTP/1.1"]
    for name, value in fields:
        if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            raise ValueError(f"invalid handshake header {name!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _accept_value(key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``key`` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode()


def _tokens(headers: Headers, name: str) -> list[str]:
    """The comma-separated elements of every ``name`` field, stripped, empty ones out."""
    return [p.strip() for value in headers.get_all(name) for p in value.split(",") if p.strip()]


def _check_101(response: Response, key: str, subprotocols: Sequence[str]) -> None:
    """Raise HandshakeFailed unless ``response`` accepts the upgrade as offered."""
    headers = response.headers
    upgrade = _tokens(headers, "Upgrade")
    if len(upgrade) != 1 or upgrade[0].lower() != "websocket":
        raise HandshakeFailed(f"the 101 answer's Upgrade is {headers.get('Upgrade')!r}")
    if not any(token.lower() == "upgrade" for token in _tokens(headers, "Connection")):
        raise HandshakeFailed(f"the 101 answer's Connection is {headers.get('Connection')!r}")
    accept = headers.get_all("Sec-WebSocket-Accept")
    if accept != [_accept_value(key)]:
        raise HandshakeFailed(f"the 101 answer's Sec-WebSocket-Accept is wrong: {accept!r}")
    if "Sec-WebSocket-Extensions" in headers:
        raise HandshakeFailed(
            f"the server accepted an extension that was not offered: "
            f"{headers['Sec-WebSocket-Extensions']!r}"
        )
    chosen = _tokens(headers, "Sec-WebSocket-Protocol")
    if subprotocols and (len(chosen) != 1 or chosen[0] not in subprotocols):
        raise HandshakeFailed(
            f"the server chose the subprotocol {headers.get('Sec-WebSocket-Protocol')!r}, "
            f"not one of {', '.join(subprotocols)}"
        )
    if not subprotocols and chosen:
        raise HandshakeFailed(f"the server chose a subprotocol that was not offered: {chosen!r}")


class _AnswerReader:
    """The server's answer to the upgrade, fed as it arrives (sans I/O).

    httptools parses the head and, for a refusal, its body; never a byte past a 101's
    head: what follows it (the server may write its first messages in the same
    segment) is kept in :attr:`rest` for the link, as it arrived.
    """

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._fields: list[tuple[str, str]] = []
        self._body = bytearray()
        self._reason = ""
        self._tail = b""  # the last bytes of the head so far (its end may straddle reads)
        self._received = 0
        self.head_done = False
        self.response: Response | None = None  # once the answer is complete
        self.rest = b""  # received past a 101's head

    def feed(self, data: bytes) -> Response | None:
        """Parse ``data``; the answer once complete, else None.

        Raises HandshakeFailed for an answer that is not HTTP, or larger than
        :data:`MAX_HANDSHAKE_RESPONSE` (a 101's head, a refusal's head and body).
        """
        if self.response is not None:
            raise RuntimeError("the answer is complete")
        if not self.head_done:
            probe = self._tail + data
            end = probe.find(b"\r\n\r\n")
            if end < 0:
                self._tail = probe[-3:]
                self._count(data)
                self._parse(data)
                return None
            cut = end + 4 - len(self._tail)
            head, data = data[:cut], data[cut:]
            self._count(head)
            self._parse(head)
            if not self.head_done:  # llhttp read a head that ends elsewhere: not ours
                raise HandshakeFailed("the answer's head is malformed")
            if self._parser.get_status_code() == 101:
                if self._parser.get_http_version() != "1.1":
                    raise HandshakeFailed("the 101 answer is not HTTP/1.1")
                self.rest = data
                return self._complete()
        if data:
            self._count(data)
            self._parse(data)
        return self.response

    def eof(self) -> Response:
        """The connection ended: the answer if its body ran to the end, else HandshakeFailed."""
        if self.head_done and not self._framed():
            return self._complete()
        raise HandshakeFailed("connection closed during the upgrade")

    def _parse(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # a head with Upgrade: the parser stops at its end, as asked
        except httptools.HttpParserError as exc:
            if self.head_done and self._parser.get_status_code() == 101:
                return  # llhttp pauses after any 101's head
            if self.response is None:
                raise HandshakeFailed(f"the answer is not HTTP/1.1 as expected ({exc})") from None
            # bytes after a complete refusal: not ours to read

    def _count(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > MAX_HANDSHAKE_RESPONSE:
            raise HandshakeFailed("the handshake answer is too large")

    def _framed(self) -> bool:
        """The body's end is marked (a length, chunks), not the connection's end."""
        fields = Headers(self._fields)
        status = self._parser.get_status_code()
        no_body = status < 200 or status in (204, 304)
        return no_body or "Content-Length" in fields or "Transfer-Encoding" in fields

    def _complete(self) -> Response:
        self.response = Response(
            self._parser.get_status_code(), self._reason, Headers(self._fields), bytes(self._body)
        )
        return self.response

    # -- httptools callbacks ------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        if self.response is None and self._parser.get_status_code() != 101:
            self._complete()


class _Upgrade(asyncio.Protocol):
    """Sends the upgrade request and reads the answer with :class:`_AnswerReader`."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.reader = _AnswerReader()
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.rest = bytearray()  # received past the 101's head, for the link
        self.lost: tuple[Exception | None] | None = None  # connection_lost after done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            self.rest += data  # the link's, once it takes over
            return
        try:
            response = self.reader.feed(data)
        except HandshakeFailed as exc:
            self.done.set_exception(exc)
            return
        if response is not None:
            self.rest += self.reader.rest
            self.done.set_result(response)

    def eof_received(self) -> bool | None:
        if not self.done.done():
            try:
                self.done.set_result(self.reader.eof())
            except HandshakeFailed as exc:
                self.done.set_exception(exc)
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
    ``headers`` are added to the request (``Authorization``...). ``subprotocols`` other
    than the default are for tests of refusals. ``sock``: an already connected socket
    to use (through a proxy; TLS still verifies the URL's host); it belongs to the link
    from then on.

    Raises:
        HandshakeRefused: any other status (its response carries the body).
        HandshakeFailed: a malformed or rule-breaking answer.
        ValueError: a URI that is not ``ws[s]://``, or a header that cannot be sent.
        OSError, ssl.SSLError, TimeoutError: from the connection itself.
    """
    target = _parse_uri(uri)
    key = base64.b64encode(os.urandom(16)).decode()
    request = _request(target, key, subprotocols, headers)
    loop = asyncio.get_running_loop()
    context = ssl_context if target.secure else None
    if target.secure and context is None:
        context = ssl.create_default_context()
    WS_LOGGER.debug("> GET %s HTTP/1.1 (upgrade)", target.resource)
    async with asyncio.timeout(open_timeout):
        if sock is None:
            transport, upgrade = await loop.create_connection(
                lambda: _Upgrade(request), target.host, target.port, ssl=context
            )
        else:
            server_hostname = target.host if context is not None else None
            transport, upgrade = await loop.create_connection(
                lambda: _Upgrade(request),
                sock=sock,
                ssl=context,
                server_hostname=server_hostname,
            )
        try:
            response = await upgrade.done
        except BaseException:
            transport.abort()
            raise
    WS_LOGGER.debug("< HTTP/1.1 %d %s", response.status_code, response.reason_phrase)
    try:
        if response.status_code != 101:
            raise HandshakeRefused(response)
        _check_101(response, key, subprotocols)
    except BaseException:
        transport.abort()
        raise
    link = WsLink(True, ping_interval=ping_interval, ping_timeout=ping_timeout)
    link.adopt(transport, bytes(upgrade.rest))
    if upgrade.lost is not None:
        link.connection_lost(upgrade.lost[0])
    return link, response
