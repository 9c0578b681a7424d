"""One side of a tunnel session, sans I/O.

The surface is small, as in websockets' ``Protocol``:

* :meth:`Connection.receive` takes one received WebSocket message and returns events.
* ``send_*`` / :meth:`Connection.open_stream` / :meth:`Connection.consumed` queue
  frames; nothing is written anywhere.
* :meth:`Connection.data_to_send` returns the queued messages. **After every call that
  may queue frames (including ``receive``), the caller must send what it returns**, each
  item as one binary WebSocket message, in order.

The relay opens streams (odd ids, increasing) with OPEN, which carries the stream's kind
and first bytes; both sides then send raw bytes as DATA and end their half with FIN. What
the bytes mean (an HTTP exchange, a TCP connection) is the I/O layers' business. Limits,
flow control and the state machine are enforced here, so the I/O layers never have to
re-check them: what this object sends, the peer accepts.

Errors: :meth:`Connection.receive` raises only :class:`RemoteProtocolError` (close the
session with its code). The sending methods raise :class:`LocalProtocolError` and leave
the connection unchanged; see :mod:`wire.errors` for the two cases a caller handles per
stream (:class:`StreamClosedError`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final, TypeVar

from wire import frames as f
from wire.codes import (
    IDLE_FRAME_ALLOWANCE,
    IDLE_FRAMES_PER_STREAM,
    INITIAL_SESSION_WINDOW,
    INITIAL_STREAM_WINDOW,
    MAX_PAYLOAD,
    MAX_STREAM_ID,
    ErrorCode,
    Flag,
    FrameType,
    StreamKind,
)
from wire.errors import (
    FrameError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    StreamClosedError,
)
from wire.events import (
    DataReceived,
    Event,
    GoAwayReceived,
    HelloReceived,
    StreamOpened,
    StreamReset,
    WelcomeReceived,
    WindowUpdated,
)
from wire.flow import RecvWindow, SendWindow
from wire.state import Half, Move, advance, head_move

#: Default cap on concurrent streams in a session (the relay answers 429 beyond it).
DEFAULT_MAX_STREAMS = 1024

#: DATA payloads from this size on are queued beside their header (see
#: :meth:`Connection.messages_to_send`); smaller ones are joined, one buffer per message.
SPLIT_AT: Final = 16 * 1024

#: A queued message: its bytes, or a large DATA frame's header and payload.
Message = bytes | tuple[bytes, bytes]

_T = TypeVar("_T")


class Role(enum.Enum):
    RELAY = "relay"
    AGENT = "agent"


class _Stream:
    """An open stream: the state of each half, and its window each way."""

    __slots__ = ("receiving", "recv_window", "send_window", "sending")

    def __init__(self, sending: Half, receiving: Half) -> None:
        self.sending = sending  # our half
        self.receiving = receiving  # the peer's half
        self.send_window = SendWindow(INITIAL_STREAM_WINDOW)
        self.recv_window = RecvWindow(INITIAL_STREAM_WINDOW)


class Connection:
    """Protocol state of one session.

    Args:
        role: which end of the tunnel this object plays.
        max_streams: concurrent streams allowed. The relay checks it in
            :meth:`open_stream` (the value it sends in WELCOME replaces this one); the
            agent learns the relay's value from WELCOME and treats an OPEN beyond it as
            a protocol error.
    """

    def __init__(self, role: Role, max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        self.role = role
        self.max_streams = max_streams
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0  # highest stream id opened so far
        self._send_session = SendWindow(INITIAL_SESSION_WINDOW)
        self._recv_session = RecvWindow(INITIAL_SESSION_WINDOW, divisor=4, grow=False)
        self._out: list[Message] = []
        self._hello_done = False  # relay: HELLO received; agent: HELLO sent
        self._welcome_done = False  # relay: WELCOME sent; agent: WELCOME received
        self._names: tuple[str | None, ...] = ()  # names a repeated HELLO may carry
        self._tunnel = StreamKind.HTTP  # the tunnel kind of the first HELLO
        self._extras = 0  # extra tunnels the first HELLO asked for (wire.shared)
        # WELCOME's answer for each extra (granted or not); None: a single-name session,
        # whose OPEN frames carry no tunnel index.
        self._granted: tuple[bool, ...] | None = None
        self.goaway_sent = False
        self.goaway_received = False
        self._goaway_error_sent = False
        self._goaway_error_received = False
        self._idle_frames = 0  # frames received that made no progress
        # Streams we reset while the peer could still send: the credit it had left, so
        # its DATA that crosses our RESET counts as progress, not as an idle flood.
        self._reset_credit: dict[int, int] = {}
        self._useful = 0  # streams opened or closed, DATA frames with bytes
        # Handlers take a frame's stream id, payload and flags (no Frame object per frame).
        self._dispatch: dict[FrameType, Callable[[int, bytes, int], list[Event]]] = {
            FrameType.HELLO: self._on_hello,
            FrameType.WELCOME: self._on_welcome,
            FrameType.OPEN: self._on_open,
            FrameType.DATA: self._on_data,
            FrameType.RESET: self._on_reset,
            FrameType.WINDOW: self._on_window,
            FrameType.GOAWAY: self._on_goaway,
        }

    # -- queries ---------------------------------------------------------------------

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def established(self) -> bool:
        """HELLO and WELCOME were exchanged: streams may flow."""
        return self._welcome_done

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self._streams

    def can_open(self) -> bool:
        """Relay: whether :meth:`open_stream` would succeed right now."""
        return (
            self.role is Role.RELAY
            and self._welcome_done
            and not (self.goaway_sent or self.goaway_received)
            and len(self._streams) < self.max_streams
            and self._last_stream_id + 2 <= MAX_STREAM_ID
        )

    def sendable(self, stream_id: int) -> int:
        """Bytes of DATA that may be sent on ``stream_id`` now (0 if none or closed).

        At most :data:`MAX_PAYLOAD`: that is also the largest DATA frame. When it is 0
        on an open stream, wait for a :class:`WindowUpdated` event and ask again.
        The relay may call it before :meth:`open_stream` with ``stream_id`` 0 for the
        largest first payload an OPEN may carry now.
        """
        if stream_id == 0:
            head = 1 if self._granted is None else 2  # kind byte (and tunnel index)
            return min(INITIAL_STREAM_WINDOW, self._send_session.available, MAX_PAYLOAD - head)
        stream = self._streams.get(stream_id)
        if stream is None or stream.sending is not Half.BODY:
            return 0
        return min(stream.send_window.available, self._send_session.available, MAX_PAYLOAD)

    @property
    def pending_output(self) -> bool:
        """Frames are queued: :meth:`data_to_send` would return something."""
        return bool(self._out)

    def data_to_send(self) -> list[bytes]:
        """Return and forget the queued messages; send each as one WebSocket message."""
        out, self._out = self._out, []
        return [m[0] + m[1] if isinstance(m, tuple) else m for m in out]

    def messages_to_send(self) -> list[Message]:
        """Like :meth:`data_to_send`, but a DATA frame of at least :data:`SPLIT_AT` bytes
        comes as ``(header, payload)``, not joined: the caller sends the two as one
        WebSocket message (the payload is not copied to prepend 8 bytes)."""
        out, self._out = self._out, []
        return out

    # -- sending: session ------------------------------------------------------------

    def send_hello(self, hello: f.Hello) -> None:
        """Agent: the first frame of a session.

        Once established, the agent may send HELLO again to replace its ``caller_auth``;
        the name must be the one of the first HELLO or the one WELCOME granted, and the
        tunnel kind that of the first HELLO. The
        relay does not answer a repeated HELLO.

        Raises:
            LocalProtocolError: not the agent, a second HELLO before WELCOME, a changed
                name, or a HELLO the relay would reject (code FRAME_ERROR).
        """
        self._need(self.role is Role.AGENT and self._may_hello(hello), "HELLO")
        payload = _checked(f.checked_hello, hello)
        self._hello_seen(hello)
        self._emit(FrameType.HELLO, 0, payload)

    def send_welcome(self, welcome: f.Welcome) -> None:
        """Relay: accept the session after HELLO; sets the agent's stream limit."""
        self._need(
            self.role is Role.RELAY and self._hello_done and not self._welcome_done, "WELCOME"
        )
        payload = _checked(f.checked_welcome, welcome)
        self._need(self._answers_hello(welcome), "WELCOME without one answer per tunnel")
        self._welcome_seen(welcome)
        self._emit(FrameType.WELCOME, 0, payload)

    def send_goaway(self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Announce that this side takes no new streams; open streams may finish.

        A graceful GOAWAY (``NO_ERROR``) is sent at most once, and so is one with an
        error code, which may follow a graceful one: a session that fails while
        draining still tells the peer why. Later calls are no-ops.
        """
        if code is ErrorCode.NO_ERROR and self.goaway_sent:
            return
        if code is not ErrorCode.NO_ERROR:
            if self._goaway_error_sent:
                return
            self._goaway_error_sent = True
        self.goaway_sent = True
        self._emit(FrameType.GOAWAY, 0, f.encode_goaway(self._last_stream_id, code, reason))

    # -- sending: streams ------------------------------------------------------------

    def open_stream(
        self, kind: StreamKind, data: bytes = b"", end_stream: bool = False, tunnel: int = 0
    ) -> int:
        """Relay: start a stream whose first bytes are ``data``. Returns the new stream id.

        ``data`` counts against the flow-control windows like DATA, so it must not
        exceed ``sendable(0)``; the rest goes in DATA frames once the stream has credit.
        ``tunnel``: on a session that carries several tunnels, which one the stream is
        for (0: the session's own name; ``i``: the i-th extra, which WELCOME granted).

        Raises:
            LocalProtocolError: :meth:`can_open` is false, ``data`` is too large, or
                ``tunnel`` is not a granted tunnel. Nothing is queued and no stream id
                is used up.
        """
        if not self.can_open():
            self._need(False, "OPEN")
        if tunnel and not self._tunnel_granted(tunnel):
            raise LocalProtocolError(f"OPEN for tunnel {tunnel}, which WELCOME did not grant")
        size = len(data)
        if size > self.sendable(0):
            raise LocalProtocolError(f"{size} bytes in OPEN exceed the credit or frame size")
        stream_id = self._last_stream_id + 2 if self._last_stream_id else 1
        self._last_stream_id = stream_id
        stream = _Stream(_OPENED[end_stream], Half.BODY)
        self._streams[stream_id] = stream
        self._useful += 1
        if size:  # both windows hold it: sendable(0) is at most a new stream's window
            stream.send_window.available -= size
            self._send_session.available -= size
        index = None if self._granted is None else tunnel
        self._emit(FrameType.OPEN, stream_id, f.encode_open(kind, data, index), end_stream)
        return stream_id

    def send_data(
        self, stream_id: int, data: bytes, end_stream: bool = False, close: bool = False
    ) -> None:
        """Send stream bytes; ``len(data)`` must not exceed :meth:`sendable`.

        An empty ``data`` with ``end_stream`` is the END of this side's half. ``close``
        (agent only, with ``end_stream``) sets the CLOSE flag: the relay closes the public
        connection after this response.

        Raises:
            StreamClosedError: the stream is closed (the peer reset it).
            LocalProtocolError: more than :meth:`sendable`, after FIN, or ``close``
                where it is not allowed.
        """
        if close:
            self._need(self.role is Role.AGENT and end_stream, "CLOSE")
        stream = self._sending_stream(stream_id)
        state = advance(stream.sending, _DATA_MOVES[end_stream])
        size = len(data)
        if size:
            # sendable(), inlined: the stream's half is BODY (advance() passed).
            session = self._send_session
            window = stream.send_window
            if size > window.available or size > session.available or size > MAX_PAYLOAD:
                raise LocalProtocolError(f"{size} bytes of DATA exceed the credit or frame size")
            window.available -= size
            session.available -= size
            self._useful += 1  # the peer's credit for these bytes is progress
        stream.sending = state
        if state is Half.DONE and stream.receiving is Half.DONE:
            del self._streams[stream_id]
            self._useful += 1
        flags = _DATA_FLAGS[end_stream, close]
        if size >= SPLIT_AT:
            self._out.append((f.encode_parts(FrameType.DATA, stream_id, b"", flags), data))
        else:
            self._out.append(f.encode_parts(FrameType.DATA, stream_id, data, flags))

    def send_reset(self, stream_id: int, code: ErrorCode, reason: str = "") -> None:
        """Abort a stream. A no-op if it is not open (the race with the peer is normal).

        Bytes already received on it still need :meth:`consumed` (the session window).
        """
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            self._useful += 1
            if stream.receiving is Half.BODY:
                self._remember_reset(stream_id, stream.recv_window.remaining)
            self._emit(FrameType.RESET, stream_id, f.encode_reason(code, reason))

    def consumed(self, stream_id: int, n: int) -> None:
        """Our consumer drained ``n`` bytes received on ``stream_id``: return credit.

        Call it for every byte of every :class:`DataReceived`, also when the bytes are
        dropped (stream reset, caller gone); otherwise the session window leaks.
        May queue WINDOW frames: send :meth:`data_to_send` afterwards.
        """
        stream = self._streams.get(stream_id)
        window = stream.recv_window if stream and stream.receiving is Half.BODY else None
        if n > self._recv_session.buffered or (window and n > window.buffered):
            raise LocalProtocolError(f"consumed {n} bytes on stream {stream_id}, not held")
        increment = self._recv_session.consume(n)
        if increment:
            self._emit(FrameType.WINDOW, 0, f.encode_window(increment))
        if window and (increment := window.consume(n)):
            self._emit(FrameType.WINDOW, stream_id, f.encode_window(increment))

    # -- receiving -------------------------------------------------------------------

    def receive(self, message: Message) -> list[Event]:
        """Process one WebSocket message from the peer.

        ``message`` may come as ``(first 8 bytes, rest)``: the rest is then the frame's
        payload as it is (a receiver that unmasks bulk frames in two parts saves a copy).
        Returns the events it produced (possibly none). Frames may have been queued
        (WINDOW refunds), so call :meth:`data_to_send` afterwards.

        Raises:
            RemoteProtocolError: the peer broke the protocol. Send GOAWAY with
                ``exc.code`` (:meth:`send_goaway`), flush, and close the WebSocket.
        """
        try:
            if isinstance(message, tuple):
                ftype, sid, payload, flags = f.decode_split_parts(*message)
            else:
                ftype, sid, payload, flags = f.decode_parts(message)
            return self._dispatch[ftype](sid, payload, flags)
        except RemoteProtocolError:
            raise
        except ProtocolError as exc:
            raise RemoteProtocolError(str(exc), exc.code) from None

    def _on_hello(self, sid: int, payload: bytes, flags: int) -> list[Event]:
        self._need(self.role is Role.RELAY, "HELLO")
        hello = f.decode_hello(payload)
        self._need(self._may_hello(hello), "HELLO")
        self._hello_seen(hello)
        return [HelloReceived(hello)]

    def _on_welcome(self, sid: int, payload: bytes, flags: int) -> list[Event]:
        self._need(
            self.role is Role.AGENT and self._hello_done and not self._welcome_done, "WELCOME"
        )
        welcome = f.decode_welcome(payload)
        self._need(self._answers_hello(welcome), "WELCOME without one answer per tunnel")
        self._welcome_seen(welcome)
        return [WelcomeReceived(welcome)]

    def _on_open(self, sid: int, payload: bytes, flags: int) -> list[Event]:
        if self.role is not Role.AGENT or not self._welcome_done:
            self._need(False, "OPEN")
        if sid % 2 == 0 or sid <= self._last_stream_id:
            raise LocalProtocolError(f"OPEN with unusable stream id {sid}")
        if self.goaway_received or len(self._streams) >= self.max_streams:
            raise LocalProtocolError("OPEN beyond the stream limit or after GOAWAY")
        if self._granted is None:
            index, (kind, data) = 0, f.decode_open(payload)
        else:
            kind, index, data = f.decode_shared_open(payload)
        if index and not self._tunnel_granted(index):
            raise LocalProtocolError(f"OPEN for tunnel {index}, which WELCOME did not grant")
        fin = f.FIN_SET[flags]
        stream = _Stream(Half.BODY, Half.DONE if fin else Half.BODY)
        size = len(data)
        self._recv_session.receive(size)
        stream.recv_window.receive(size)
        self._last_stream_id = sid
        self._useful += 1
        self._streams[sid] = stream  # open until the agent's half is done too
        return [StreamOpened(sid, kind, data, fin, index)]

    def _on_data(self, sid: int, data: bytes, flags: int) -> list[Event]:
        # The hot path of every received byte: checks are inlined (no helper calls).
        if not self._welcome_done:
            self._need(False, "DATA")
        close = f.CLOSE_SET[flags]
        if close and self.role is not Role.RELAY:
            # A role violation, not a race: checked before a closed stream's drop.
            raise LocalProtocolError("CLOSE is sent by the agent only")
        size = len(data)
        self._recv_session.receive(size)
        stream = self._streams.get(sid)
        fin = f.FIN_SET[flags]
        if stream is None:
            self._check_opened(sid)
            self._crossing_data(sid, size, fin)
            self.consumed(sid, size)  # dropped: refund the session credit
            return []
        if size:
            self._useful += 1
            stream.recv_window.receive(size)
        elif not fin:
            self._idle()
        stream.receiving = receiving = advance(stream.receiving, _DATA_MOVES[fin])
        if receiving is Half.DONE and stream.sending is Half.DONE:
            del self._streams[sid]
            self._useful += 1
        return [DataReceived(sid, data, fin, close)]

    def _on_reset(self, sid: int, payload: bytes, flags: int) -> list[Event]:
        code, reason = f.decode_reset(payload)
        if self._streams.pop(sid, None) is None:
            self._check_opened(sid)
            self._reset_credit.pop(sid, None)  # the peer stopped sending on it too
            self._idle()
            return []
        self._useful += 1
        return [StreamReset(sid, code, reason)]

    def _on_window(self, sid: int, payload: bytes, flags: int) -> list[Event]:
        increment = f.decode_window(payload)
        self._idle()  # credit is progress only when our DATA used it (see send_data)
        if sid == 0:
            self._send_session.grow(increment)
            return [WindowUpdated(0, increment)]
        stream = self._streams.get(sid)
        if stream is None:
            self._check_opened(sid)
            return []
        stream.send_window.grow(increment)
        return [WindowUpdated(sid, increment)]

    def _on_goaway(self, sid: int, payload: bytes, flags: int) -> list[Event]:
        last, code, reason = f.decode_goaway(payload)
        # One graceful GOAWAY, and one with an error code (which may follow it): any
        # other repetition is a flood (each would be logged by the receiver).
        if code is ErrorCode.NO_ERROR:
            self._need(not self.goaway_received, "a second GOAWAY")
        else:
            self._need(not self._goaway_error_received, "a second GOAWAY")
            self._goaway_error_received = True
        self.goaway_received = True
        return [GoAwayReceived(last, code, reason)]

    # -- helpers ---------------------------------------------------------------------

    def _may_hello(self, hello: f.Hello) -> bool:
        """A first HELLO, or a repeated one after WELCOME that keeps name and tunnel."""
        if not self._hello_done:
            return True
        return (
            self._welcome_done
            and hello.name in self._names
            and hello.tunnel is self._tunnel
            and len(hello.tunnels) == self._extras
        )

    def _hello_seen(self, hello: f.Hello) -> None:
        if not self._hello_done:
            self._hello_done = True
            self._names = (hello.name,)
            self._tunnel = hello.tunnel
            self._extras = len(hello.tunnels)

    def _welcome_seen(self, welcome: f.Welcome) -> None:
        self._welcome_done = True
        self.max_streams = welcome.max_streams
        self._names += (welcome.name,)
        if welcome.tunnels is not None:
            self._granted = tuple(grant.granted for grant in welcome.tunnels)

    def _answers_hello(self, welcome: f.Welcome) -> bool:
        """WELCOME's ``tunnels`` has one entry per HELLO entry, or is absent: a relay
        that does not know the key granted none (the session stays single-name)."""
        if welcome.tunnels is None:
            return True
        return len(welcome.tunnels) == self._extras

    def _tunnel_granted(self, index: int) -> bool:
        if index == 0:
            return True
        granted = self._granted
        return granted is not None and 0 < index <= len(granted) and granted[index - 1]

    def _check_opened(self, stream_id: int) -> None:
        """Accept a frame for a stream that was opened and is closed now (dropped).

        Raises LocalProtocolError for a stream id that was never opened.
        """
        if stream_id % 2 == 0 or stream_id > self._last_stream_id:
            raise LocalProtocolError(f"frame for stream {stream_id}, which was never opened")

    def _sending_stream(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            self._check_opened(stream_id)
            raise StreamClosedError(stream_id)
        return stream

    def _remember_reset(self, stream_id: int, credit: int) -> None:
        """Keep the credit the peer had on a stream we reset (the newest few streams)."""
        self._reset_credit[stream_id] = credit
        if len(self._reset_credit) > _RESET_CREDIT_STREAMS:
            del self._reset_credit[next(iter(self._reset_credit))]

    def _crossing_data(self, stream_id: int, size: int, fin: bool) -> None:
        """DATA for a closed stream: progress while it fits the credit the peer had when
        we reset the stream (an honest peer sent it before it saw our RESET; however
        small its frames, their count is bounded by that credit); idle otherwise."""
        credit = self._reset_credit.get(stream_id)
        if credit is None or size > credit or not (size or fin):
            self._idle()
            return
        if fin or size == credit:
            del self._reset_credit[stream_id]
        else:
            self._reset_credit[stream_id] = credit - size

    def _idle(self) -> None:
        """Count a received frame that made no progress; too many end the session."""
        self._idle_frames += 1
        if self._idle_frames > IDLE_FRAME_ALLOWANCE + IDLE_FRAMES_PER_STREAM * self._useful:
            raise RemoteProtocolError(
                "too many frames that make no progress", ErrorCode.ENHANCE_YOUR_CALM
            )

    def _need(self, condition: bool, what: str) -> None:
        if not condition:
            raise LocalProtocolError(f"{what} not allowed here ({self.role.value})")

    def _emit(self, ftype: FrameType, stream_id: int, payload: bytes, fin: bool = False) -> None:
        self._out.append(f.encode_parts(ftype, stream_id, payload, Flag.FIN if fin else Flag.NONE))


#: How many streams we reset recently keep the credit their peer had (see send_reset):
#: DATA crossing a RESET arrives within a round trip, long before that many more resets.
_RESET_CREDIT_STREAMS: Final = 1024

#: The state of our half after our OPEN, by its FIN (from the state table, once).
_OPENED: Final = (advance(Half.IDLE, head_move(False)), advance(Half.IDLE, head_move(True)))

#: The move a DATA frame makes, by its FIN.
_DATA_MOVES: Final = (Move.DATA, Move.DATA_FIN)

#: DATA flags by (end_stream, close).
_DATA_FLAGS: Final = {
    (False, False): Flag.NONE,
    (True, False): Flag.FIN,
    (True, True): Flag.FIN | Flag.CLOSE,
}


def _checked(encode: Callable[[_T], bytes], value: _T) -> bytes:
    """Run a ``checked_*`` encoder; what it rejects is our error, not the peer's."""
    try:
        return encode(value)
    except FrameError as exc:
        raise LocalProtocolError(str(exc), exc.code) from None
