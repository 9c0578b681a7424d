"""One side of a tunnel session, sans I/O.

The surface is small, as in websockets' ``Protocol``:

* :meth:`Connection.receive` takes one received WebSocket message and returns events.
* ``send_*`` / :meth:`Connection.open_stream` / :meth:`Connection.consumed` queue
  frames; nothing is written anywhere.
* :meth:`Connection.data_to_send` returns the queued messages. **After every call that
  may queue frames (including ``receive``), the caller must send what it returns**, each
  item as one binary WebSocket message, in order.

The relay opens streams (odd ids, increasing) and sends the request half; the agent
answers with the response half. Limits and the state machine are enforced here, so the
I/O layers never have to re-check them.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable

from wire import frames as f
from wire.codes import (
    INITIAL_SESSION_WINDOW,
    INITIAL_STREAM_WINDOW,
    MAX_PAYLOAD,
    MAX_STREAM_ID,
    ErrorCode,
    Flag,
    FrameType,
)
from wire.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from wire.events import (
    DataReceived,
    Event,
    GoAwayReceived,
    HelloReceived,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    WelcomeReceived,
    WindowUpdated,
)
from wire.flow import RecvWindow, SendWindow
from wire.state import Half, Move, advance, data_move, head_move

#: Default cap on concurrent streams in a session (the relay answers 429 beyond it).
DEFAULT_MAX_STREAMS = 1024


class Role(enum.Enum):
    RELAY = "relay"
    AGENT = "agent"


@dataclasses.dataclass(slots=True)
class _Stream:
    sending: Half  # our half
    receiving: Half  # the peer's half
    send_window: SendWindow
    recv_window: RecvWindow

    @property
    def closed(self) -> bool:
        return self.sending is Half.DONE and self.receiving is Half.DONE


class Connection:
    """Protocol state of one session.

    Args:
        role: which end of the tunnel this object plays.
        max_streams: concurrent streams allowed. The relay checks it in
            :meth:`open_stream`; the agent learns the relay's value from WELCOME and
            treats an OPEN beyond it as a protocol error.
    """

    def __init__(self, role: Role, max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        self.role = role
        self.max_streams = max_streams
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0  # highest stream id opened so far
        self._send_session = SendWindow(INITIAL_SESSION_WINDOW)
        self._recv_session = RecvWindow(INITIAL_SESSION_WINDOW, divisor=4, grow=False)
        self._out: list[bytes] = []
        self._hello_done = False  # relay: HELLO received; agent: HELLO sent
        self._hello_name: str | None = None  # a re-sent HELLO must keep this name
        self._welcome_done = False
        self.goaway_sent = False
        self.goaway_received = False
        self._dispatch: dict[FrameType, Callable[[f.Frame], list[Event]]] = {
            FrameType.HELLO: self._on_hello,
            FrameType.WELCOME: self._on_welcome,
            FrameType.OPEN: self._on_open,
            FrameType.RESPONSE: self._on_response,
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
            self._welcome_done
            and not (self.goaway_sent or self.goaway_received)
            and len(self._streams) < self.max_streams
            and self._last_stream_id + 2 <= MAX_STREAM_ID
        )

    def sendable(self, stream_id: int) -> int:
        """Bytes of DATA that may be sent on ``stream_id`` now (0 if none or closed).

        At most :data:`MAX_PAYLOAD`: that is also the largest DATA frame.
        """
        stream = self._streams.get(stream_id)
        if stream is None or stream.sending is not Half.BODY:
            return 0
        return min(stream.send_window.available, self._send_session.available, MAX_PAYLOAD)

    def data_to_send(self) -> list[bytes]:
        """Return and forget the queued messages; send each as one WebSocket message."""
        out, self._out = self._out, []
        return out

    # -- sending ---------------------------------------------------------------------

    def send_hello(self, hello: f.Hello) -> None:
        """Agent: the first frame of a session.

        After WELCOME the agent may send HELLO again, with the same name, to replace its
        caller_auth list; the relay gets another :class:`HelloReceived`.
        """
        self._need(self.role is Role.AGENT and self._hello_allowed(hello), "HELLO")
        self._hello_done = True
        self._hello_name = hello.name
        self._emit(FrameType.HELLO, 0, f.encode_hello(hello))

    def send_welcome(self, welcome: f.Welcome) -> None:
        """Relay: accept the session after HELLO; sets the agent's stream limit."""
        self._need(
            self.role is Role.RELAY and self._hello_done and not self._welcome_done, "WELCOME"
        )
        self._welcome_done = True
        self.max_streams = welcome.max_streams
        self._emit(FrameType.WELCOME, 0, f.encode_welcome(welcome))

    def open_stream(self, head: f.RequestHead, end_stream: bool = False) -> int:
        """Relay: start a stream with a request head. Returns the new stream id.

        Raises LocalProtocolError if :meth:`can_open` is false.
        """
        self._need(self.role is Role.RELAY and self.can_open(), "OPEN")
        stream_id = self._last_stream_id + 2 if self._last_stream_id else 1
        self._last_stream_id = stream_id
        self._streams[stream_id] = self._new_stream()
        self._advance_send(stream_id, head_move(end_stream))
        self._emit(FrameType.OPEN, stream_id, f.encode_request_head(head), end_stream)
        return stream_id

    def send_response(self, stream_id: int, head: f.ResponseHead, end_stream: bool = False) -> None:
        """Agent: the response head for ``stream_id``."""
        self._need(self.role is Role.AGENT, "RESPONSE")
        self._advance_send(stream_id, head_move(end_stream))
        self._emit(FrameType.RESPONSE, stream_id, f.encode_response_head(head), end_stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Send body bytes; ``len(data)`` must not exceed :meth:`sendable`.

        An empty ``data`` with ``end_stream`` is the END of this side's half.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"DATA on closed stream {stream_id}")
        if len(data) > MAX_PAYLOAD:
            raise LocalProtocolError(f"DATA over {MAX_PAYLOAD} bytes")
        if data:
            stream.send_window.spend(len(data))
            self._send_session.spend(len(data))
        self._advance_send(stream_id, data_move(end_stream))
        self._emit(FrameType.DATA, stream_id, data, end_stream)

    def send_reset(self, stream_id: int, code: ErrorCode, reason: str = "") -> None:
        """Abort a stream. A no-op if it is already closed (the race is normal)."""
        if self._streams.pop(stream_id, None) is not None:
            self._emit(FrameType.RESET, stream_id, f.encode_reason(code, reason))

    def send_goaway(self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Announce that this side takes no new streams (sent at most once)."""
        if not self.goaway_sent:
            self.goaway_sent = True
            last = self._last_stream_id
            self._emit(FrameType.GOAWAY, 0, f.encode_goaway(last, code, reason))

    def consumed(self, stream_id: int, n: int) -> None:
        """Our consumer drained ``n`` bytes received on ``stream_id``: return credit.

        Call it for every byte of every :class:`DataReceived`, also when the bytes are
        dropped (stream reset, caller gone); otherwise the session window leaks.
        """
        increment = self._recv_session.consume(n)
        if increment:
            self._emit(FrameType.WINDOW, 0, f.encode_window(increment))
        stream = self._streams.get(stream_id)
        if stream is not None and stream.receiving is Half.BODY:
            increment = stream.recv_window.consume(n)
            if increment:
                self._emit(FrameType.WINDOW, stream_id, f.encode_window(increment))

    # -- receiving -------------------------------------------------------------------

    def receive(self, message: bytes) -> list[Event]:
        """Process one WebSocket message from the peer.

        Returns the events it produced (possibly none). Frames may have been queued
        (WINDOW refunds), so call :meth:`data_to_send` afterwards.

        Raises:
            RemoteProtocolError: the peer broke the protocol. Send GOAWAY with
                ``exc.code`` (:meth:`send_goaway`), flush, and close the WebSocket.
        """
        try:
            frame = f.decode_frame(message)
            return self._dispatch[frame.type](frame)
        except RemoteProtocolError:
            raise
        except ProtocolError as exc:
            raise RemoteProtocolError(str(exc), exc.code) from None

    def _on_hello(self, frame: f.Frame) -> list[Event]:
        hello = f.decode_hello(frame.payload)
        self._need(self.role is Role.RELAY and self._hello_allowed(hello), "HELLO")
        self._hello_done = True
        self._hello_name = hello.name
        return [HelloReceived(hello)]

    def _hello_allowed(self, hello: f.Hello) -> bool:
        """First HELLO, or a later one (after WELCOME) that keeps the session's name."""
        if not self._hello_done:
            return True
        return self._welcome_done and hello.name == self._hello_name

    def _on_welcome(self, frame: f.Frame) -> list[Event]:
        self._need(
            self.role is Role.AGENT and self._hello_done and not self._welcome_done, "WELCOME"
        )
        welcome = f.decode_welcome(frame.payload)
        self._welcome_done = True
        self.max_streams = welcome.max_streams
        return [WelcomeReceived(welcome)]

    def _on_open(self, frame: f.Frame) -> list[Event]:
        sid = frame.stream_id
        self._need(self.role is Role.AGENT and self._welcome_done, "OPEN")
        if sid % 2 == 0 or sid <= self._last_stream_id:
            raise LocalProtocolError(f"OPEN with unusable stream id {sid}")
        if self.goaway_received or len(self._streams) >= self.max_streams:
            raise LocalProtocolError("OPEN beyond the stream limit or after GOAWAY")
        head = f.decode_request_head(frame.payload)
        self._last_stream_id = sid
        self._streams[sid] = self._new_stream()
        self._advance_recv(sid, head_move(frame.fin))
        return [RequestReceived(sid, head, frame.fin)]

    def _on_response(self, frame: f.Frame) -> list[Event]:
        self._need(self.role is Role.RELAY, "RESPONSE")
        if self._known_closed(frame.stream_id):
            return []
        head = f.decode_response_head(frame.payload)
        self._advance_recv(frame.stream_id, head_move(frame.fin))
        return [ResponseReceived(frame.stream_id, head, frame.fin)]

    def _on_data(self, frame: f.Frame) -> list[Event]:
        sid, size = frame.stream_id, len(frame.payload)
        self._need(self._welcome_done, "DATA")
        self._recv_session.receive(size)
        if self._known_closed(sid):
            self.consumed(sid, size)  # dropped: refund the session credit
            return []
        stream = self._streams[sid]
        if stream.receiving is Half.BODY:
            stream.recv_window.receive(size)
        self._advance_recv(sid, data_move(frame.fin))
        return [DataReceived(sid, frame.payload, frame.fin)]

    def _on_reset(self, frame: f.Frame) -> list[Event]:
        code, reason = f.decode_reset(frame.payload)
        if self._known_closed(frame.stream_id):
            return []
        del self._streams[frame.stream_id]
        return [StreamReset(frame.stream_id, code, reason)]

    def _on_window(self, frame: f.Frame) -> list[Event]:
        increment = f.decode_window(frame.payload)
        sid = frame.stream_id
        if sid == 0:
            self._send_session.grow(increment)
        elif self._known_closed(sid):
            return []
        else:
            self._streams[sid].send_window.grow(increment)
        return [WindowUpdated(sid, increment)]

    def _on_goaway(self, frame: f.Frame) -> list[Event]:
        last, code, reason = f.decode_goaway(frame.payload)
        self.goaway_received = True
        return [GoAwayReceived(last, code, reason)]

    # -- helpers ---------------------------------------------------------------------

    def _known_closed(self, stream_id: int) -> bool:
        """True for a stream that existed and is closed now (its frames are dropped).

        Raises LocalProtocolError for a stream id that was never opened.
        """
        if stream_id in self._streams:
            return False
        if stream_id % 2 == 1 and stream_id <= self._last_stream_id:
            return True
        raise LocalProtocolError(f"frame for stream {stream_id}, which was never opened")

    def _new_stream(self) -> _Stream:
        return _Stream(
            Half.IDLE,
            Half.IDLE,
            SendWindow(INITIAL_STREAM_WINDOW),
            RecvWindow(INITIAL_STREAM_WINDOW),
        )

    def _advance_send(self, stream_id: int, move: Move) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        stream.sending = advance(stream.sending, move)
        if stream.closed:
            del self._streams[stream_id]

    def _advance_recv(self, stream_id: int, move: Move) -> None:
        stream = self._streams[stream_id]
        stream.receiving = advance(stream.receiving, move)
        if stream.closed:
            del self._streams[stream_id]

    def _need(self, condition: bool, what: str) -> None:
        if not condition:
            raise LocalProtocolError(f"{what} not allowed here ({self.role.value})")

    def _emit(self, ftype: FrameType, stream_id: int, payload: bytes, fin: bool = False) -> None:
        self._out.append(f.encode_parts(ftype, stream_id, payload, Flag.FIN if fin else Flag.NONE))
