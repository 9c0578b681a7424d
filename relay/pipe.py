"""A public TCP connection, or a TLS connection the relay does not decrypt, piped to one
tunnel stream of raw bytes.

Theory of operation. A :class:`RawPipe` is both the ``asyncio.Protocol`` of the public
connection and the :class:`tunnel.StreamHandler` of its stream, so each direction is one
call: caller bytes go to ``stream.write`` as they arrive, stream bytes to
``transport.write``. Flow control is the stream's: past the stream's high mark the
runtime calls :meth:`pause_writing` (the relay stops reading the caller); when the
caller's socket is backed up, :meth:`pause_writing`'s protocol twin stops returning the
stream's credit, so the agent stops after one window. Memory per connection is thereby
bounded by a window each way.

Each direction ends on its own (a half-close: the caller's EOF becomes the stream's END,
the agent's END a ``write_eof``); the connection closes when both did. A reset from
either side aborts the connection (the caller sees a reset, never a clean end), and a
caller that goes away resets the stream (CANCEL).

A connection that arrives while its tunnel is offline, draining or already has
``--max-streams`` streams open is refused at once (aborted): raw TCP has no error page,
and a queued connection would hold a socket for nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final, cast

import tunnel
from tunnel.link import set_nodelay
from wire import ErrorCode, LocalProtocolError, StreamKind

if TYPE_CHECKING:
    from relay.state import RelayState

log = logging.getLogger(__name__)

#: Bytes buffered toward the caller above which the stream stops returning credit, and
#: below which it returns it again (as for HTTP callers, :mod:`relay.public`).
WRITE_HIGH: Final = 1024 * 1024
WRITE_LOW: Final = 256 * 1024


class RawPipe(asyncio.Protocol):
    """One public connection of a TCP or TLS tunnel.

    Args:
        state: the relay's shared state (registry, metrics).
        name: the tunnel the connection is for.
        kind: ``StreamKind.TCP`` (opened at once: the server may speak first) or
            ``StreamKind.TLS`` (opened with the caller's first bytes, its ClientHello).
    """

    def __init__(self, state: RelayState, name: str, kind: StreamKind) -> None:
        self.state = state
        self.name = name
        self.kind = kind
        self.transport: asyncio.Transport | None = None
        self.stream: tunnel.Stream | None = None
        self.caller_eof = False
        self.agent_eof = False

    # -- the caller's side --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        if self.kind is StreamKind.TCP:
            self._open(b"")

    def data_received(self, data: bytes) -> None:
        self.state.metrics.bytes_in += len(data)
        if self.stream is None:
            self._open(data)
        else:
            self.stream.write(data)

    def eof_received(self) -> bool | None:
        self.caller_eof = True
        if self.stream is None or self.stream.closed:
            return None
        self.stream.end()
        return None if self.agent_eof else True  # keep the other half open

    def connection_lost(self, exc: Exception | None) -> None:
        stream = self.stream
        if self.caller_eof and exc is None:
            return  # both halves ended cleanly; the END may still be on its way
        if stream is not None and not stream.closed:
            stream.reset(ErrorCode.CANCEL, "caller went away")
            self.state.metrics.reset("relay", ErrorCode.CANCEL)

    def pause_writing(self) -> None:
        if self.stream is not None:
            self.stream.pause_reading()

    def resume_writing(self) -> None:
        if self.stream is not None:
            self.stream.resume_reading()

    # -- the stream's side (tunnel.StreamHandler) ----------------------------------------

    def data(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.state.metrics.bytes_out += len(data)

    def end(self, close: bool) -> None:
        self.agent_eof = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.caller_eof or not transport.can_write_eof():
            transport.close()
        else:
            transport.write_eof()

    def aborted(self, code: ErrorCode, reason: str) -> None:
        if code is not ErrorCode.CANCEL:
            self.state.metrics.reset("agent", code)
        if self.transport is not None:
            self.transport.abort()

    # ``tunnel.StreamHandler.pause_writing``/``resume_writing`` (the stream is over its
    # high mark) share their names with ``asyncio.Protocol``'s (the caller's socket is);
    # the stream's are routed here by :class:`_StreamSide`.

    def stream_full(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def stream_drained(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- internals ------------------------------------------------------------------------

    def _open(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        session = self.state.registry.lookup(self.name)
        if session is None or not session.accepting or session.kind is not self.kind:
            transport.abort()
            return
        conn = session.session.conn
        if not conn.can_open():
            log.info(
                "connection_refused",
                extra={"agent": self.name, "streams": conn.open_streams, "detail": "stream limit"},
            )
            self.state.metrics.request_done(429, "too_many_streams", self.name)
            transport.abort()
            return
        try:
            self.stream = session.session.open(self.kind, _StreamSide(self), data)
        except LocalProtocolError:
            transport.abort()


class _StreamSide:
    """The :class:`tunnel.StreamHandler` face of a :class:`RawPipe` (the two protocols
    both have ``pause_writing``, meaning opposite directions)."""

    __slots__ = ("pipe",)

    def __init__(self, pipe: RawPipe) -> None:
        self.pipe = pipe

    def data(self, data: bytes) -> None:
        self.pipe.data(data)

    def end(self, close: bool) -> None:
        self.pipe.end(close)

    def aborted(self, code: ErrorCode, reason: str) -> None:
        self.pipe.aborted(code, reason)

    def pause_writing(self) -> None:
        self.pipe.stream_full()

    def resume_writing(self) -> None:
        self.pipe.stream_drained()
