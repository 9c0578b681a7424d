"""The asyncio runtime of a tunnel session, over the sans-I/O ``wire`` protocol.

:class:`Session` drives one ``wire.Connection`` (reader dispatch, the single writer,
priority, credit); :class:`Stream` is one byte pipe in it; :class:`WsLink` is the
WebSocket under it; :func:`connect_link` opens one as a client, and
:mod:`tunnel.server` (``read_upgrade``, ``accept``) as a server. That module is not
imported here: it is the relay's, and it imports websockets, which the agent does not
(its idle RSS, see :mod:`tunnel.client`).
"""

from tunnel.client import HandshakeFailed, HandshakeRefused, connect_link
from tunnel.link import WsLink
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
    "connect_link",
]
