"""The WebSocket under a tunnel session: an ``asyncio.Protocol`` over websockets' sans-I/O
``Protocol`` (the same library on both ends; its framing, its close handshake).

Settings written on purpose (the library's defaults are wrong for a tunnel):

* ``max_size`` = :data:`wire.MAX_FRAME_SIZE`: one frame is one message, never larger
  (websockets' default is 1 MiB);
* no extensions offered or accepted: permessage-deflate costs 10-20x in throughput on
  bodies that are mostly compressed already;
* keepalive: a ping every ``ping_interval`` seconds; no pong (nor any other byte)
  within ``ping_timeout`` closes the link (a dead NAT mapping is found this way).

Writes: each :meth:`WsLink.send` is one ``transport.write`` of the joined frames (on
an SSL transport ``writelines`` cost ten times more CPU than one joined buffer). The
transport's write buffer limits are :data:`WRITE_HIGH`/:data:`WRITE_LOW`; the session
frames no more than the room under the high mark (:meth:`WsLink.budget`).

Reads: at most :data:`MAX_MESSAGES_PER_TURN` messages are processed per loop turn;
the rest wait (the socket is paused) until the next turn, so one peer that floods small
frames cannot monopolise the event loop that every other tunnel shares.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from typing import TYPE_CHECKING, Final, cast

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import State as WsState

import wire

if TYPE_CHECKING:
    from tunnel.session import Session

log = logging.getLogger(__name__)


class _RedactAuthorization(logging.Filter):
    """websockets logs handshake headers at DEBUG; never let a token through."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() == "authorization":
            record.args = (args[0], "[redacted]")
        return True


#: The logger given to websockets' protocol objects (handshakes, closes) on both ends.
WS_LOGGER: Final = logging.getLogger("tunnel.websocket")
WS_LOGGER.addFilter(_RedactAuthorization())

#: Bytes buffered in the transport above which the session frames nothing more, and
#: below which it resumes. Small, so a request head queued behind a download waits for
#: at most this much socket time.
WRITE_HIGH: Final = 512 * 1024
WRITE_LOW: Final = 128 * 1024

#: WebSocket messages processed per loop turn before yielding to other connections.
MAX_MESSAGES_PER_TURN: Final = 256

#: Seconds the closing handshake may take before the connection is dropped.
CLOSE_TIMEOUT: Final = 2.0


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class WsLink(asyncio.Protocol):
    """An open WebSocket carrying one tunnel session.

    Args:
        ws: websockets' protocol object, in state OPEN (the handshake is done).
        ping_interval: seconds between keepalive pings (None: no pings).
        ping_timeout: seconds without any received byte after a ping before closing.
    """

    def __init__(
        self,
        ws: WsProtocol,
        *,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
    ) -> None:
        self.ws = ws
        self.session: Session | None = None
        self.transport: asyncio.Transport | None = None
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.closed = asyncio.get_running_loop().create_future()
        self._loop = asyncio.get_running_loop()
        self._pending: collections.deque[Frame] = collections.deque()
        self._paused_reading = False
        self._ping_handle: asyncio.TimerHandle | None = None
        self._pong_deadline: asyncio.TimerHandle | None = None
        self._close_handle: asyncio.TimerHandle | None = None
        self._received = 0  # bytes received, for the keepalive

    # -- set-up ---------------------------------------------------------------------------

    def attach(self, session: Session) -> None:
        """Hand every message from now on (and those that arrived before) to ``session``."""
        self.session = session
        session.attach(self)
        if self._pending:
            self._process()

    def adopt(
        self, transport: asyncio.BaseTransport, rest: bytes = b"", frames: list[Frame] | None = None
    ) -> None:
        """Take over ``transport`` after a handshake read by someone else: ``rest`` is
        what that reader received past the handshake, ``frames`` what ``ws`` already
        parsed past it."""
        transport.set_protocol(self)
        self.connection_made(transport)
        if frames:
            self._pending.extend(frames)
            self._process()
        if rest:
            self.data_received(rest)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self._arm_ping()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        self.ws.receive_data(data)
        self._pending.extend(cast(list[Frame], self.ws.events_received()))
        self._process()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._pending.extend(cast(list[Frame], self.ws.events_received()))
        self._process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in (self._ping_handle, self._pong_deadline, self._close_handle):
            if handle is not None:
                handle.cancel()
        if self.session is not None:
            self.session.lost()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        pass  # budget() reads the buffer size; resume_writing wakes the session

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.writable()

    # -- the session's side ---------------------------------------------------------------

    def send(self, messages: list[bytes]) -> None:
        ws = self.ws
        if ws.state is not WsState.OPEN or self.transport is None:
            return
        for message in messages:
            ws.send_binary(message)
        self._write()

    def budget(self) -> int:
        if self.transport is None or self.transport.is_closing():
            return 0
        return WRITE_HIGH - self.transport.get_write_buffer_size()

    def close(self, code: int, reason: str) -> None:
        if self.ws.state is WsState.OPEN:
            self.ws.send_close(code, reason)
            self._write()
        if self._close_handle is None and self.transport is not None:
            self._close_handle = self._loop.call_later(CLOSE_TIMEOUT, self.abort)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- internals ----------------------------------------------------------------------------

    def _process(self) -> None:
        pending = self._pending
        session = self.session
        if session is None:
            return  # kept until attach()
        count = 0
        while pending and count < MAX_MESSAGES_PER_TURN:
            frame = pending.popleft()
            count += 1
            if frame.opcode is Opcode.BINARY:
                session.receive(bytes(frame.data))
            elif frame.opcode is Opcode.TEXT:
                session.fail(wire.ErrorCode.PROTOCOL_ERROR, "text message on the tunnel")
        if pending and not self._paused_reading and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()
            self._loop.call_soon(self._resume)
        self._write()  # pongs and the closing handshake
        if self.ws.state is WsState.CLOSED and self.transport is not None:
            self.transport.close()

    def _resume(self) -> None:
        self._paused_reading = False
        if self._pending:
            self._process()
        if not self._paused_reading and self.transport is not None:
            self.transport.resume_reading()

    def _write(self) -> None:
        out = self.ws.data_to_send()
        transport = self.transport
        if not out or transport is None or transport.is_closing():
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        if data:
            transport.write(data)
        if not out[-1] and transport.can_write_eof():  # b"": websockets' end of stream
            transport.write_eof()

    def _arm_ping(self) -> None:
        if self.ping_interval:
            self._ping_handle = self._loop.call_later(self.ping_interval, self._ping)

    def _ping(self) -> None:
        if self.ws.state is not WsState.OPEN:
            return
        self.ws.send_ping(b"")
        self._write()
        if self.ping_timeout:
            seen = self._received
            self._pong_deadline = self._loop.call_later(self.ping_timeout, self._check, seen)
        self._arm_ping()

    def _check(self, seen: int) -> None:
        if self._received == seen:  # not a byte since the ping, pong included
            log.info("tunnel_keepalive_timeout")
            self.abort()
