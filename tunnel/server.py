"""Accepting a tunnel WebSocket on a connection whose request head was already read.

The relay's public side (and the test relay) read the upgrade request with their own
HTTP/1.1 reader; the checks and the 101 answer are websockets' ``ServerProtocol``, which
then moves into a :class:`tunnel.link.WsLink` on the same transport.
"""

from __future__ import annotations

import asyncio

from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

import wire
from tunnel.link import WS_LOGGER, WsLink


def offered_subprotocols(request: Request) -> list[str]:
    """The subprotocols the client offered, in order."""
    offered: list[str] = []
    for value in request.headers.get_all("Sec-WebSocket-Protocol"):
        offered.extend(p.strip() for p in value.split(",") if p.strip())
    return offered


def read_upgrade(raw_head: bytes) -> tuple[ServerProtocol, Request | None]:
    """Parse an upgrade request head with websockets. ``None``: not a valid request."""
    ws = ServerProtocol(
        subprotocols=[Subprotocol(wire.SUBPROTOCOL)],
        extensions=None,  # no permessage-deflate
        max_size=wire.MAX_FRAME_SIZE,
        logger=WS_LOGGER,
    )
    ws.receive_data(raw_head)
    events = ws.events_received()
    request = events[0] if events and isinstance(events[0], Request) else None
    return ws, request


def accept(
    ws: ServerProtocol,
    request: Request,
    transport: asyncio.BaseTransport,
    rest: bytes = b"",
    *,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
) -> WsLink | None:
    """Answer the upgrade. Returns the open link, or None when websockets refused the
    handshake itself (its 4xx answer was written and the transport will close)."""
    response = ws.accept(request)
    ws.send_response(response)
    data = b"".join(ws.data_to_send())
    transport.write(data)  # type: ignore[attr-defined]
    if response.status_code != 101:
        transport.close()
        return None
    link = WsLink(False, ping_interval=ping_interval, ping_timeout=ping_timeout)
    link.adopt(transport, rest)
    return link
