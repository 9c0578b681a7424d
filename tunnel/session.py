"""The tunnel session: THE asyncio driver of one ``wire.Connection``.

The relay, the agent, the test fakes and the benchmark's simulated agents all run their
tunnel through this class; they differ only in their :class:`SessionHooks`.

Theory of operation
-------------------
* **Reader.** The link (:mod:`tunnel.link`) hands every received WebSocket message to
  :meth:`Session.receive`, which runs ``wire`` and dispatches the events to the streams'
  handlers synchronously: nothing on the read path awaits, so one slow consumer never
  stalls the other streams (it pauses its own reading, which keeps its credit).
* **Writer.** Nothing is written when it happens. Every change (bytes queued on a
  stream, credit returned, a RESET) marks the session dirty and schedules one
  :meth:`_flush` at the end of the loop turn, which frames what may go now and hands
  the link all of it as one write. The writer pulls from the streams, so frame layout is
  decided in one place: a FIN rides on the last DATA frame, many small writes of one
  stream become one frame.
* **Priority.** Each flush serves the streams that have sent the fewest bytes first
  (request heads, small responses, SSE events) and gives each stream one frame per
  round, so a bulk stream waits behind them for at most one frame. The link's write
  budget (its buffered bytes under a high-water mark) bounds how much is framed ahead
  of the socket, overshot by at most one frame: a bulk write (32 KiB or more) is framed
  whole rather than cut at the budget. Bytes not framed yet stay in their streams,
  whose producers are paused.
* **Credit** is returned by :class:`tunnel.stream.Stream` when its handler takes the
  bytes (see there), never by hand elsewhere.
* **Resumption** (:mod:`wire.resume`, driven by :mod:`tunnel.resume`): with a
  :attr:`Session.resend` log, a link that dies without a close frame asks the owner
  (``on_link_lost``) whether to keep the session; a kept session has no link, its
  streams wait (bytes stay queued in them), and :meth:`Session.reattach` carries on
  over a new link, re-sending what the peer did not process.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from typing import Final, Protocol

import wire
from tunnel.stream import NULL_HANDLER, WHOLE_WRITE, Stream, StreamHandler
from wire import (
    DataReceived,
    ErrorCode,
    GoAwayReceived,
    HelloReceived,
    StreamKind,
    StreamOpened,
    StreamReset,
    WelcomeReceived,
    WindowUpdated,
)
from wire.resume import ResendLog

log = logging.getLogger(__name__)

#: WebSocket close codes used after a GOAWAY.
WS_NORMAL: Final = 1000
WS_GOING_AWAY: Final = 1001
WS_PROTOCOL_ERROR: Final = 1002
WS_POLICY: Final = 1008


class Link(Protocol):
    """What the session needs from the WebSocket under it (:class:`tunnel.link.WsLink`)."""

    def send(self, messages: list[wire.Message]) -> bool:
        """Write every message, in order, as one binary WebSocket message each (a
        ``(header, payload)`` pair is one message). False when the link is closing and
        dropped them (none of their bytes left this process)."""

    def budget(self) -> int:
        """Bytes that may be framed now before the socket is considered backed up."""

    def close(self, code: int, reason: str) -> None:
        """Start the WebSocket closing handshake (after what was sent)."""


class SessionHooks:
    """What the owner of a session reacts to. Subclass and override; all synchronous."""

    def on_hello(self, session: Session, hello: wire.Hello) -> None:
        """Relay: a HELLO arrived (the first, or one re-sent after WELCOME)."""

    def on_welcome(self, session: Session, welcome: wire.Welcome) -> None:
        """Agent: the relay accepted the session."""

    def on_opened(self, session: Session, stream: Stream) -> None:
        """Agent: the relay opened ``stream``. Set ``stream.handler`` here: the stream's
        first bytes are delivered to it right after this returns."""

    def on_goaway(self, session: Session, event: GoAwayReceived) -> None:
        """The peer takes no new streams."""

    def on_protocol_error(self, session: Session, code: ErrorCode, reason: str) -> None:
        """The peer broke the protocol; the session is being closed with ``code``."""
        log.warning("protocol_error", extra={"code": code.name, "detail": reason})

    def on_stream_closed(self, session: Session, stream: Stream) -> None:
        """``stream`` is closed (both halves done, or reset)."""

    def on_session_closed(self, session: Session) -> None:
        """The session ended (closed by us or the link is gone); streams were aborted."""

    def on_link_lost(self, session: Session) -> bool:
        """The link died under a session that has a :attr:`Session.resend` log. True
        keeps the session (no link until :meth:`Session.reattach`); False ends it."""
        return False


class Session:
    """One tunnel session over one link.

    Args:
        conn: the protocol state (its role decides relay or agent).
        hooks: the owner's reactions.
    """

    def __init__(self, conn: wire.Connection, hooks: SessionHooks) -> None:
        self.conn = conn
        self.hooks = hooks
        self.link: Link | None = None
        self.streams: dict[int, Stream] = {}
        self.is_closed = False
        self._ready: list[Stream] = []
        self._blocked: set[Stream] = set()  # pending bytes, no credit
        self._scheduled = False
        self._opened = 0  # the last stream id this side opened
        self._sent_opened = 0  # the last one whose OPEN a live link took
        self._loop = asyncio.get_running_loop()
        #: Messages sent that the peer may not have processed (None: not resumable).
        self.resend: ResendLog | None = None
        self.received = 0  # messages processed (what a resumption reports to the peer)

    def attach(self, link: Link) -> None:
        self.link = link

    # -- the owner's side -----------------------------------------------------------------

    def open(
        self,
        kind: StreamKind,
        handler: StreamHandler,
        data: bytes = b"",
        end: bool = False,
        tunnel: int = 0,
    ) -> Stream:
        """Relay: open a stream whose first bytes are ``data`` (FIN after them if ``end``),
        for ``tunnel`` of a session that carries several (0: the session's own name).

        Raises ``wire.LocalProtocolError`` when :meth:`wire.Connection.can_open` is false.
        """
        room = self.conn.sendable(0)
        whole = len(data) <= room  # the OPEN carries all of ``data``
        sid = self.conn.open_stream(kind, data[:room], end and whole, tunnel)
        self._opened = sid
        stream = self.streams[sid] = Stream(self, sid, kind, tunnel)
        stream.handler = handler
        if not whole:
            stream.write(data[room:])
            if end:
                stream.end()
        elif end:  # the FIN went with the OPEN: nothing is left for the writer
            stream.local_done = stream.ending = True
        if not self._scheduled:
            self._schedule()
        return stream

    def reached_link(self, sid: int) -> bool:
        """Whether the OPEN of stream ``sid`` (opened by this side) was handed to a link
        that was still open: if not, not one byte of that stream left this process (a
        relay may open it again elsewhere); if so, the peer may have read it."""
        return sid <= self._sent_opened

    def send_hello(self, hello: wire.Hello) -> None:
        self.conn.send_hello(hello)
        self._schedule()

    def send_welcome(self, welcome: wire.Welcome) -> None:
        self.conn.send_welcome(welcome)
        self._schedule()

    def goaway(self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Announce that this side takes no new streams; open ones may finish."""
        if not self.is_closed:
            self.conn.send_goaway(code, reason)
            self._schedule()

    def close(self, code: ErrorCode, reason: str, ws_code: int = WS_NORMAL) -> None:
        """GOAWAY with ``code``, write what is queued, close the link; streams abort."""
        if self.is_closed:
            return
        self.conn.send_goaway(code, reason)
        self._flush()
        self._abort_all(code, reason)
        if self.link is not None:
            self.link.close(ws_code, reason[:120])

    def fail(self, code: ErrorCode, reason: str) -> None:
        """The peer broke the protocol: GOAWAY with ``code`` and close."""
        if not self.is_closed:
            self.hooks.on_protocol_error(self, code, reason)
        self.close(code, reason, WS_PROTOCOL_ERROR)

    def kick(self) -> None:
        """Send frames queued on :attr:`conn` directly (tests that drive ``wire`` by hand)."""
        self._schedule()

    # -- the streams' side ----------------------------------------------------------------

    def ready(self, stream: Stream) -> None:
        if not stream.queued and stream not in self._blocked:
            stream.queued = True
            self._ready.append(stream)
        if not self._scheduled:
            self._schedule()

    def consumed(self, stream: Stream, n: int) -> None:
        self.conn.consumed(stream.sid, n)
        if self.conn.pending_output:
            self._schedule()

    def reset_stream(self, stream: Stream, code: ErrorCode, reason: str) -> None:
        self.conn.send_reset(stream.sid, code, reason)
        self._finish(stream)
        self._schedule()

    # -- the link's side ------------------------------------------------------------------

    def receive(self, message: wire.Message) -> None:
        """One WebSocket message from the peer (a bulk one as its header and the rest)."""
        if self.is_closed:
            return
        self.received += 1
        try:
            events = self.conn.receive(message)
        except wire.RemoteProtocolError as exc:
            self.fail(exc.code, str(exc))
            return
        for event in events:
            if type(event) is DataReceived:
                self._on_data(event.stream_id, event.data, event.end_stream, event.close)
            else:
                self._on_event(event)
        if self.conn.pending_output:
            self._schedule()

    def writable(self) -> None:
        """The link's buffer drained below its low-water mark."""
        if self._ready:
            self._schedule()

    def lost(self) -> None:
        """The link is gone (closed, reset, or timed out)."""
        if self.is_closed:
            return
        if self.resend is not None and self.hooks.on_link_lost(self):
            self.link = None  # kept: the streams wait for reattach()
            return
        self._abort_all(ErrorCode.INTERNAL_ERROR, "tunnel connection lost")

    # -- resumption -----------------------------------------------------------------------

    def handover(self) -> Link | None:
        """Give up the link to another session (one being resumed): what is queued is
        written first; this session is closed without touching streams or hooks."""
        self._flush()
        link, self.link = self.link, None
        self.is_closed = True
        return link

    def reattach(self, link: Link, peer_received: int) -> list[wire.Message]:
        """Carry on over ``link`` after the peer said it processed ``peer_received`` of
        our messages: re-send the rest (returned), then what queued up meanwhile.

        Raises ``wire.resume.ResumeError`` (nothing changed) when that cannot be done.
        """
        if self.resend is None:
            raise ValueError("this session keeps no resend log")
        replay = self.resend.replay(peer_received)
        self.link = link
        if replay:
            link.send(replay)
        for stream in self.streams.values():
            if stream.pending and stream not in self._blocked:
                self.ready(stream)
        self._schedule()
        return replay

    # -- dispatch ---------------------------------------------------------------------------

    def _on_data(self, sid: int, data: bytes, fin: bool, close: bool) -> None:
        stream = self.streams.get(sid)
        if stream is None:  # unknown here but open in wire: cannot happen; keep credit
            if data:
                self.conn.consumed(sid, len(data))
            return
        if data:
            credit = stream.deliver(data)
            if credit:
                self.conn.consumed(sid, credit)
        if fin and not stream.closed:
            stream.remote_done = True
            stream.handler.end(close)
            if stream.local_done and not stream.closed:
                self._finish(stream)

    def _on_event(self, event: wire.Event) -> None:
        if isinstance(event, StreamOpened):
            sid = event.stream_id
            stream = self.streams[sid] = Stream(self, sid, event.kind, event.tunnel)
            self.hooks.on_opened(self, stream)
            self._on_data(event.stream_id, event.data, event.end_stream, False)
        elif isinstance(event, WindowUpdated):
            if event.stream_id == 0 and self.resend is not None:
                self.resend.ack(event.increment)
            self._on_window(event.stream_id)
        elif isinstance(event, StreamReset):
            reset = self.streams.get(event.stream_id)
            if reset is not None:
                handler = reset.handler
                self._finish(reset)
                handler.aborted(event.code, event.reason)
        elif isinstance(event, GoAwayReceived):
            self.hooks.on_goaway(self, event)
        elif isinstance(event, HelloReceived):
            self.hooks.on_hello(self, event.hello)
        elif isinstance(event, WelcomeReceived):
            self.hooks.on_welcome(self, event.welcome)

    def _on_window(self, sid: int) -> None:
        if sid == 0:
            blocked, self._blocked = self._blocked, set()
            for stream in blocked:
                self.ready(stream)
            return
        waiting = self.streams.get(sid)
        if waiting is not None and waiting in self._blocked:
            self._blocked.discard(waiting)
            self.ready(waiting)

    def _finish(self, stream: Stream) -> None:
        """Forget a stream that is closed (both halves done, or reset).

        The stream lets go of its handler (which usually holds the stream): the pair
        is then freed by reference counting, not left to the cyclic collector, which
        under load spent about 10 us per request on such pairs."""
        stream.closed = True
        stream.handler = NULL_HANDLER
        if stream.out:  # (each of these checks saves a call on every stream's end)
            stream.out.clear()
            stream.buffered = 0
        self.streams.pop(stream.sid, None)
        if self._blocked:
            self._blocked.discard(stream)
        if stream.held:
            self.conn.consumed(stream.sid, stream.release_held())
        self.hooks.on_stream_closed(self, stream)

    def _abort_all(self, code: ErrorCode, reason: str) -> None:
        self.is_closed = True
        for stream in list(self.streams.values()):
            handler = stream.handler
            self._finish(stream)
            handler.aborted(code, reason)
        self._ready.clear()
        self.hooks.on_session_closed(self)

    # -- the writer -------------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled and not self.is_closed:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        link = self.link
        if link is None:
            return
        if self._ready:
            self._pump(link.budget())
        out = self.conn.messages_to_send()
        if out:
            if link.send(out):
                self._sent_opened = self._opened
            if self.resend is not None:  # written or not: re-sent after a resumption
                self.resend.record(out)
        if self._ready and link.budget() > 0:
            self._schedule()  # more to send: next turn, after the loop's other work

    def _pump(self, budget: int) -> None:
        ready = self._ready
        if len(ready) > 1:
            ready.sort(key=_SENT)
        conn = self.conn
        while ready and budget > 0:
            later: list[Stream] = []
            for stream in ready:
                # stream.pending, inlined (twice per stream and flush)
                if stream.closed or not (stream.out or (stream.ending and not stream.local_done)):
                    stream.queued = False
                    continue
                if budget <= 0:
                    later.append(stream)
                    continue
                sendable = conn.sendable(stream.sid)
                if stream.out and not sendable:
                    stream.queued = False
                    self._blocked.add(stream)
                    continue
                # _room() matters only to a stream holding more than the budget.
                room = budget if stream.buffered <= budget else _room(stream, budget)
                data, fin, close = stream.take(min(sendable, room))
                budget -= len(data) + 16
                if fin and stream.reset_after is not None:
                    if data:
                        conn.send_data(stream.sid, data)
                    self.reset_stream(stream, *stream.reset_after)
                    stream.queued = False
                    continue
                conn.send_data(stream.sid, data, fin, close)
                if fin:
                    stream.local_done = True
                    if stream.remote_done:
                        self._finish(stream)
                if not stream.closed and (stream.out or (stream.ending and not stream.local_done)):
                    later.append(stream)
                else:
                    stream.queued = False
            # The list being walked is the ready list: a stream made ready during a pass
            # (a handler's resume_writing writing to another stream) is appended to it
            # and walked in the same pass, never left in a list that is dropped.
            self._ready = ready = later


_SENT: Final = operator.attrgetter("sent")  # a sort key in C


def _room(stream: Stream, budget: int) -> int:
    """What ``stream`` may frame with ``budget`` left: a bulk write (one read of a raw
    TCP stream or a body, up to MAX_PAYLOAD) goes whole even past the budget, by at
    most one frame, rather than cut in two (two frames, two writes on the far side, and
    a copy of both halves)."""
    first = len(stream.out[0]) if stream.out else 0
    return first if first >= WHOLE_WRITE and first > budget else budget
