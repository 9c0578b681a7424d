"""The asyncio runtime of a tunnel session, over the sans-I/O ``wire`` protocol.

:class:`Session` drives one ``wire.Connection`` (reader dispatch, the single writer,
priority, credit); :class:`Stream` is one byte pipe in it; :class:`WsLink` is the
WebSocket under it; :func:`connect_link` and :func:`accept` open one.
"""

from tunnel.client import HandshakeFailed, HandshakeRefused, connect_link
from tunnel.link import WsLink
from tunnel.server import accept, offered_subprotocols, read_upgrade
from tunnel.session import (
    WS_GOING_AWAY,
    WS_NORMAL,
    WS_POLICY,
    WS_PROTOCOL_ERROR,
    Link,
    Session,
    SessionHooks,
)
from tunnel.stream import NULL_HANDLER, Stream, StreamHandler

__all__ = [
    "NULL_HANDLER",
    "WS_GOING_AWAY",
    "WS_NORMAL",
    "WS_POLICY",
    "WS_PROTOCOL_ERROR",
    "HandshakeFailed",
    "HandshakeRefused",
    "Link",
    "Session",
    "SessionHooks",
    "Stream",
    "StreamHandler",
    "WsLink",
    "accept",
    "connect_link",
    "offered_subprotocols",
    "read_upgrade",
]
