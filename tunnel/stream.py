"""One stream of a tunnel session: a byte pipe with flow control, both directions.

A :class:`Stream` is what the relay's public side and the agent's forwarding talk to.
It never touches the socket: it tells its :class:`tunnel.session.Session` what changed,
and the session's writer frames its bytes when the loop turn ends.

Sending (this side -> peer): :meth:`Stream.write` queues bytes and never blocks;
:meth:`Stream.end` half-closes after them; :meth:`Stream.reset` aborts. The queue is
bounded by the producer: past :data:`WRITE_HIGH` queued bytes the stream calls its
handler's ``pause_writing()`` (stop reading your source), below :data:`WRITE_LOW`
``resume_writing()``.

Receiving (peer -> this side): the session calls the handler's ``data()`` / ``end()`` /
``aborted()`` synchronously, from the reader, in order. Credit for received bytes goes
back **once, by construction**: when ``data()`` returns, unless the handler called
:meth:`Stream.pause_reading` (its own sink is backed up), in which case it goes back at
:meth:`Stream.resume_reading`, or when the stream closes. A handler therefore never
counts bytes, and a slow sink stops the peer after one window.

One closed state: :attr:`Stream.closed` is true once both halves are done or the
stream was reset (by either side or by the session's end); after that every call is a
no-op and nothing more reaches the handler but, for an abort, one ``aborted()``.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final, Protocol

from wire import ErrorCode, StreamKind

if TYPE_CHECKING:
    from tunnel.session import Session

#: Queued outgoing bytes above which the producer is asked to pause, and below which it
#: is asked to resume. One initial stream window: a producer that keeps the queue this
#: full keeps the stream's credit busy without holding more than a window in memory.
WRITE_HIGH: Final = 256 * 1024
WRITE_LOW: Final = 64 * 1024

#: A queued write at least this large goes out as a frame of its own when it fits,
#: instead of being joined with the writes after it: joining copies every byte once
#: more, which on a bulk stream (raw TCP, large bodies: reads of 64-256 KiB) cost more
#: than the extra frame header.
WHOLE_WRITE: Final = 32 * 1024


class StreamHandler(Protocol):
    """What a stream's consumer implements. Called synchronously; never awaits."""

    def data(self, data: bytes) -> None: ...

    def end(self, close: bool) -> None:
        """The peer's half is complete. ``close``: the CLOSE flag (agent -> relay)."""

    def aborted(self, code: ErrorCode, reason: str) -> None:
        """The stream was reset by the peer, or the session ended. Called once."""

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class NullHandler:
    """Drops what arrives (its credit still goes back). A stream's handler until set."""

    def data(self, data: bytes) -> None:
        pass

    def end(self, close: bool) -> None:
        pass

    def aborted(self, code: ErrorCode, reason: str) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


NULL_HANDLER: Final = NullHandler()


class Stream:
    """One stream. Created by :class:`tunnel.session.Session`, never directly."""

    __slots__ = (
        "_close_flag",
        "_read_paused",
        "_write_paused",
        "buffered",
        "closed",
        "ending",
        "handler",
        "held",
        "kind",
        "local_done",
        "out",
        "queued",
        "remote_done",
        "reset_after",
        "sent",
        "session",
        "sid",
        "tunnel",
    )

    def __init__(self, session: Session, sid: int, kind: StreamKind, tunnel: int = 0) -> None:
        self.session = session
        self.sid = sid
        self.kind = kind
        self.tunnel = tunnel  # which tunnel of a shared session (0: the session's own name)
        self.handler: StreamHandler = NULL_HANDLER
        self.out: deque[bytes] = deque()  # queued outgoing bytes, in order
        self.buffered = 0  # bytes in ``out``
        self.sent = 0  # bytes framed so far (the writer serves small streams first)
        self.queued = False  # in the session's ready list
        self.closed = False
        self.local_done = False  # our FIN was framed
        self.remote_done = False  # the peer's FIN arrived
        self.ending = False  # end() called: FIN after ``out`` (it may wait for credit)
        self.reset_after: tuple[ErrorCode, str] | None = None  # RESET instead of that FIN
        self._close_flag = False
        self._read_paused = False
        self.held = 0  # bytes delivered while reading was paused: credit owed
        self._write_paused = False

    # -- sending ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the peer. Dropped after :meth:`end`, or once closed."""
        if self.closed or self.ending or not data:
            return
        self.out.append(data)
        self.buffered += len(data)
        if not self.queued:  # queued: the writer comes (or waits for room) anyway
            self.session.ready(self)
        if self.buffered > WRITE_HIGH and not self._write_paused:
            self._write_paused = True
            self.handler.pause_writing()

    def end(self, close: bool = False) -> None:
        """Half-close after the queued bytes. ``close``: the CLOSE flag (agent only)."""
        if self.closed or self.ending:
            return
        self.ending = True
        self._close_flag = close
        if not self.queued:
            self.session.ready(self)

    def reset(
        self, code: ErrorCode = ErrorCode.CANCEL, reason: str = "", after_queued: bool = False
    ) -> None:
        """Abort both halves; the handler is not called. Queued bytes are dropped, unless
        ``after_queued``: then they go first and the RESET replaces the FIN (a response
        that failed half-way reaches the peer as far as it got, then the error)."""
        if self.closed:
            return
        if after_queued and self.out:
            self.reset_after = (code, reason)
            self.ending = True
            self.session.ready(self)
            return
        self.session.reset_stream(self, code, reason)

    # -- receiving ------------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Keep the credit of bytes delivered from now on until :meth:`resume_reading`."""
        self._read_paused = True

    def resume_reading(self) -> None:
        self._read_paused = False
        held, self.held = self.held, 0
        if held and not self.closed:
            self.session.consumed(self, held)

    # -- the session's side -----------------------------------------------------------------

    def take(self, limit: int) -> tuple[bytes, bool, bool]:
        """Up to ``limit`` queued bytes as one payload, whether it ends our half (FIN),
        and the CLOSE flag. Called by the session's writer only."""
        out = self.out
        first = len(out[0]) if out else 0
        if first <= limit and (len(out) == 1 or first >= WHOLE_WRITE):
            data = out.popleft()  # a bulk write is a frame of its own: no join, no copy
            size = first
        else:
            parts: list[bytes] = []
            size = 0
            while out and size < limit:
                piece = out.popleft()
                room = limit - size
                if len(piece) > room:
                    out.appendleft(piece[room:])
                    piece = piece[:room]
                parts.append(piece)
                size += len(piece)
            data = b"".join(parts)
        self.buffered -= size
        self.sent += size
        if self._write_paused and self.buffered < WRITE_LOW:
            self._write_paused = False
            self.handler.resume_writing()
        fin = self.ending and not out
        return data, fin, fin and self._close_flag

    @property
    def pending(self) -> bool:
        """Bytes or a FIN wait to be framed."""
        return bool(self.out) or (self.ending and not self.local_done)

    def deliver(self, data: bytes) -> int:
        """Give received bytes to the handler. Returns the credit to return now."""
        self.handler.data(data)
        if self._read_paused and not self.closed:
            self.held += len(data)
            return 0
        return len(data)

    def release_held(self) -> int:
        """The stream is closing: credit still held, to return for the session window."""
        held, self.held = self.held, 0
        return held

    def __repr__(self) -> str:
        return f"<Stream {self.sid} {self.kind.name} closed={self.closed}>"
