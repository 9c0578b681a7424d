"""One agent's tunnel session on the relay: a ``wire.Connection`` wrapped in two tasks.

* The **writer** sends ``conn.data_to_send()`` in order, one WebSocket message per frame.
  Everything that changes the connection calls :meth:`AgentSession.flush`, which moves
  the queued frames to the writer's outbox synchronously, so frame order is the order of
  the calls that produced them.
* The **reader** takes one WebSocket message at a time and only dispatches the events to
  the per-stream state (:class:`relay.stream.ProxyStream`). It never awaits a caller:
  uvicorn's websockets-sansio implementation stops reading the socket until the app calls
  ``receive()`` again, so a reader that waited on one slow caller would stall every stream
  of the agent.

A peer that breaks the protocol gets GOAWAY with the error code and its WebSocket is
closed; nothing else in the process is affected.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
from typing import Final

import wire
from relay.asgi import Message, Receive, Send
from relay.errors import (
    AgentUnavailable,
    BadRequest,
    HeadersTooLarge,
    TooManyStreams,
)
from relay.metrics import Metrics
from relay.stream import ProxyStream
from wire import ErrorCode, FrameType

log = logging.getLogger(__name__)

#: WINDOW frames an agent may send beyond what the relay's request bodies justify. An
#: honest peer grants credit once per half window drained (at least 128 KiB); a peer
#: that sends more than one WINDOW per :data:`WINDOW_FRAME_BYTES` of request body sent
#: to it (plus this allowance) is flooding, and the session is closed (PROTOCOL_ERROR).
WINDOW_FRAME_ALLOWANCE: Final = 1024
WINDOW_FRAME_BYTES: Final = 8 * 1024

#: HELLO frames an agent may re-send in one session. Each replaces its caller auth and is
#: logged; an honest agent re-sends one only when its caller credentials change (rare),
#: so a peer that sends more is flooding the relay's log, and the session is closed
#: (PROTOCOL_ERROR), as for WINDOW frames.
HELLO_FRAME_ALLOWANCE: Final = 64

#: Bytes queued for the agent's WebSocket above which request bodies wait (the agent
#: reads its socket slower than callers upload, whatever credit it granted), and below
#: which they resume. Bounds the relay's memory per session against an agent that grants
#: huge windows and then stops reading.
OUTBOX_HIGH: Final = 1024 * 1024
OUTBOX_LOW: Final = 256 * 1024

#: WebSocket close codes the relay uses after its GOAWAY.
WS_NORMAL: Final = 1000
WS_GOING_AWAY: Final = 1001
WS_PROTOCOL_ERROR: Final = 1002
WS_POLICY: Final = 1008
WS_INTERNAL: Final = 1011

_WINDOW_BYTE: Final = bytes([FrameType.WINDOW])
_HELLO_BYTE: Final = bytes([FrameType.HELLO])


class State(enum.Enum):
    ACTIVE = "active"  # takes new streams
    DRAINING = "draining"  # GOAWAY sent: in-flight streams finish, no new ones
    CLOSED = "closed"


class AgentSession:
    """The relay's end of one agent WebSocket.

    Args:
        conn: the protocol state (relay role).
        send: the ASGI ``send`` of the WebSocket connection.
        metrics: process counters.
        client: the agent's address, for logs.
    """

    def __init__(self, conn: wire.Connection, send: Send, metrics: Metrics, client: str) -> None:
        self.conn = conn
        self.name = ""  # set by :meth:`welcome`
        self.client = client
        self.token_sha256: str | None = None  # the token that authorized it (None: open mode)
        self.caller_auth: tuple[wire.CallerCredential, ...] = ()
        self.state = State.ACTIVE
        self.streams: dict[int, ProxyStream] = {}
        self.closed = asyncio.Event()
        self._send = send
        self._metrics = metrics
        self._outbox: collections.deque[bytes] = collections.deque()
        self._outbox_bytes = 0
        self._wake = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._close_with: tuple[int, str] | None = None  # WebSocket close code, reason
        self._peer_gone = False  # websocket.disconnect was received: never receive again
        self._credit_waiters: set[ProxyStream] = set()
        self._window_frames = 0
        self._hello_frames = 0  # HELLOs after WELCOME
        self._data_sent = 0
        self._drain_timer: asyncio.TimerHandle | None = None

    # -- handshake ---------------------------------------------------------------------

    async def handshake(self, receive: Receive, within: float) -> wire.Hello | None:
        """Wait for the agent's HELLO. None if it did not come (the session is closing)."""
        try:
            async with asyncio.timeout(within):
                message = await receive()
        except TimeoutError:
            self.fail(ErrorCode.PROTOCOL_ERROR, "no HELLO in time")
            return None
        events = self._receive_message(message)
        if events is None:
            return None
        if len(events) != 1 or not isinstance(events[0], wire.HelloReceived):
            self.fail(ErrorCode.PROTOCOL_ERROR, "the first frame must be HELLO")
            return None
        return events[0].hello

    def welcome(self, name: str, welcome: wire.Welcome, hello: wire.Hello) -> None:
        self.name = name
        self.caller_auth = hello.caller_auth
        self.conn.send_welcome(welcome)
        self.flush()

    # -- running -------------------------------------------------------------------------

    async def run(self, receive: Receive) -> int | None:
        """Read until the WebSocket ends. Returns the close code the relay saw."""
        try:
            if self._peer_gone:
                return None  # uvicorn delivers the disconnect once; a second receive() hangs
            return await self._read(receive)
        finally:
            self._closed()

    def start_writer(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox:
                    message = self._outbox.popleft()
                    await self._send({"type": "websocket.send", "bytes": message})
                    self._outbox_bytes -= len(message)
                    if self._outbox_bytes <= OUTBOX_LOW:
                        self._writable.set()
                if self._close_with is not None:
                    code, reason = self._close_with
                    await self._send({"type": "websocket.close", "code": code, "reason": reason})
                    return
        except (OSError, RuntimeError):
            # The WebSocket is gone: uvicorn raises ClientDisconnected (an OSError), or
            # RuntimeError once it closed the socket itself (keepalive timeout).
            return

    async def _read(self, receive: Receive) -> int | None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                code: int | None = message.get("code")
                return code
            if self._close_with is None:
                self._receive_message(message)

    def _receive_message(self, message: Message) -> list[wire.Event] | None:
        """Feed one message to the protocol and dispatch its events. None on failure."""
        if message["type"] == "websocket.disconnect":
            self._peer_gone = True
            self._close_with = self._close_with or (WS_NORMAL, "")
            self._wake.set()
            return None
        data = message.get("bytes")
        if data is None:
            self.fail(ErrorCode.PROTOCOL_ERROR, "text messages are not part of the protocol")
            return None
        if data[:1] == _WINDOW_BYTE and self._window_flood():
            self.fail(ErrorCode.PROTOCOL_ERROR, "too many WINDOW frames")
            return None
        if data[:1] == _HELLO_BYTE and self.name and self._hello_flood():
            self.fail(ErrorCode.PROTOCOL_ERROR, "too many HELLO frames")
            return None
        try:
            events = self.conn.receive(data)
        except wire.ProtocolError as exc:
            self.fail(exc.code, str(exc))
            return None
        for event in events:
            self._dispatch(event)
        self.flush()
        return events

    def _hello_flood(self) -> bool:
        self._hello_frames += 1
        return self._hello_frames > HELLO_FRAME_ALLOWANCE

    def _window_flood(self) -> bool:
        self._window_frames += 1
        allowed = WINDOW_FRAME_ALLOWANCE + self._data_sent // WINDOW_FRAME_BYTES
        return self._window_frames > allowed

    # -- dispatch (synchronous: never awaits) ------------------------------------------

    def _dispatch(self, event: wire.Event) -> None:
        if isinstance(event, wire.DataReceived):
            self._on_data(event)
        elif isinstance(event, wire.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.on_response(event.head, event.end_stream)
        elif isinstance(event, wire.WindowUpdated):
            self._on_window(event.stream_id)
        elif isinstance(event, wire.StreamReset):
            self._on_reset(event.stream_id, event.code, event.reason)
        elif isinstance(event, wire.GoAwayReceived):
            self._on_goaway(event)
        elif isinstance(event, wire.HelloReceived) and self.name:
            # A HELLO re-sent after WELCOME (same name, checked by wire) replaces caller_auth.
            self.caller_auth = event.hello.caller_auth
            log.info("caller_auth_updated", extra={"agent": self.name})

    def _on_data(self, event: wire.DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None or stream.dead:
            # The forwarder is gone: drop the bytes but return their credit.
            if event.data:
                self.conn.consumed(event.stream_id, len(event.data))
            return
        stream.on_data(event.data, event.end_stream)

    def _on_window(self, stream_id: int) -> None:
        if stream_id == 0:
            for stream in self._credit_waiters:
                stream.credit.set()
        else:
            waiter = self.streams.get(stream_id)
            if waiter is not None:
                waiter.credit.set()

    def _on_reset(self, stream_id: int, code: ErrorCode, reason: str) -> None:
        self._metrics.reset("agent", code)
        log.info(
            "stream_reset",
            extra={"agent": self.name, "stream": stream_id, "code": code.name, "by": "agent"},
        )
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._refund(stream_id, stream.on_reset(code, reason))

    def _on_goaway(self, event: wire.GoAwayReceived) -> None:
        log.info(
            "agent_goaway",
            extra={
                "agent": self.name,
                "code": event.code.name,
                "last_stream": event.last_stream_id,
            },
        )
        # Streams the agent never saw were not processed: safe for the caller to retry.
        for sid, stream in list(self.streams.items()):
            if sid > event.last_stream_id and stream.head is None:
                self.conn.send_reset(sid, ErrorCode.REFUSED_STREAM)
                self._metrics.reset("relay", ErrorCode.REFUSED_STREAM)
                self._refund(sid, stream.on_reset(ErrorCode.REFUSED_STREAM, "agent draining"))

    # -- streams (used by the forwarder) ---------------------------------------------------

    def open_stream(self, head: wire.RequestHead, end_stream: bool) -> ProxyStream:
        """Start a stream for a public request.

        Raises:
            AgentUnavailable: the session is draining (GOAWAY either way).
            TooManyStreams: the concurrent stream limit is reached.
            HeadersTooLarge / BadRequest: the head breaks a wire limit or rule that the
                public side's own checks let through (no stream id is used up).
        """
        if self.state is not State.ACTIVE or self.conn.goaway_received:
            raise AgentUnavailable()
        if not self.conn.can_open():
            if self.conn.open_streams >= self.conn.max_streams:
                raise TooManyStreams()
            raise AgentUnavailable("the session ran out of stream ids; the agent must reconnect")
        try:
            sid = self.conn.open_stream(head, end_stream)
        except wire.LocalProtocolError as exc:
            if exc.code is ErrorCode.LIMIT_EXCEEDED:
                raise HeadersTooLarge() from exc
            raise BadRequest("the request head cannot be forwarded") from exc
        stream = ProxyStream(sid)
        self.streams[sid] = stream
        self.flush()
        return stream

    def sendable(self, stream: ProxyStream) -> int:
        return 0 if stream.dead else self.conn.sendable(stream.sid)

    async def wait_writable(self) -> None:
        """Wait while the WebSocket's outbox is over :data:`OUTBOX_HIGH` bytes."""
        await self._writable.wait()

    async def wait_credit(self, stream: ProxyStream) -> None:
        """Wait until the agent may have granted credit (or the stream died)."""
        if stream.dead:
            return
        stream.credit.clear()
        self._credit_waiters.add(stream)
        try:
            await stream.credit.wait()
        finally:
            self._credit_waiters.discard(stream)

    def send_data(self, stream: ProxyStream, data: bytes, end_stream: bool) -> None:
        """Send request body bytes; ``len(data)`` must not exceed :meth:`sendable`."""
        self.conn.send_data(stream.sid, data, end_stream)
        self._data_sent += len(data)
        self.flush()

    def consumed(self, stream: ProxyStream, n: int) -> None:
        """``n`` bytes taken from ``stream`` reached the caller or were abandoned."""
        if n:
            self.conn.consumed(stream.sid, n)
            self.flush()

    def finish(self, stream: ProxyStream, code: ErrorCode = ErrorCode.CANCEL) -> None:
        """The forwarder is done with ``stream``: reset it if still open, forget it."""
        if self.conn.is_open(stream.sid):
            self.conn.send_reset(stream.sid, code)
            self._metrics.reset("relay", code)
            log.info(
                "stream_reset",
                extra={"agent": self.name, "stream": stream.sid, "code": code.name, "by": "relay"},
            )
        self._refund(stream.sid, stream.drop())
        self.streams.pop(stream.sid, None)
        self.flush()
        if self.state is State.DRAINING and not self.streams:
            self.close(ErrorCode.NO_ERROR, "drained", WS_NORMAL)

    def _refund(self, stream_id: int, n: int) -> None:
        if n:
            self.conn.consumed(stream_id, n)

    # -- closing ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Move queued frames to the writer. Call after every change to ``conn``."""
        out = self.conn.data_to_send()
        if out:
            self._outbox.extend(out)
            self._outbox_bytes += sum(len(m) for m in out)
            if self._outbox_bytes > OUTBOX_HIGH:
                self._writable.clear()
            self._wake.set()

    def retire(self, code: ErrorCode, reason: str, deadline: float) -> None:
        """GOAWAY: take no new streams, let in-flight ones finish, close when they did
        (or after ``deadline`` seconds, failing what is left)."""
        if self.state is not State.ACTIVE:
            return
        self.state = State.DRAINING
        self.conn.send_goaway(code, reason)
        self.flush()
        if not self.streams:
            self.close(code, reason, WS_NORMAL)
            return
        loop = asyncio.get_running_loop()
        self._drain_timer = loop.call_later(deadline, self.close, code, "drain deadline")

    def close(self, code: ErrorCode, reason: str, ws_code: int = WS_NORMAL) -> None:
        """GOAWAY (if not sent yet) and close the WebSocket now; open streams fail."""
        if self._close_with is not None:
            return
        self.state = State.CLOSED
        self.conn.send_goaway(code, reason)
        self.flush()
        self._close_with = (ws_code, reason[:120])
        self._wake.set()
        self._fail_streams(code, reason)

    def fail(self, code: ErrorCode, reason: str) -> None:
        """The agent broke the protocol: log it, GOAWAY with ``code``, close."""
        self._metrics.protocol_errors += 1
        log.warning(
            "protocol_error", extra={"agent": self.name, "code": code.name, "detail": reason}
        )
        self.close(code, reason, WS_PROTOCOL_ERROR)

    def _fail_streams(self, code: ErrorCode, reason: str) -> None:
        for stream in list(self.streams.values()):
            if self.conn.is_open(stream.sid):
                self.conn.send_reset(stream.sid, ErrorCode.CANCEL)
            self._refund(stream.sid, stream.on_reset(code, reason))
        self.flush()

    def _closed(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        self._writable.set()  # nothing will drain now; blocked bodies see a dead stream
        self._close_with = self._close_with or (WS_NORMAL, "")
        self.state = State.CLOSED
        self._fail_streams(ErrorCode.INTERNAL_ERROR, "agent disconnected")
        self._wake.set()
        self.closed.set()
