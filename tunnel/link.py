"""The WebSocket under a tunnel session: an ``asyncio.Protocol`` that frames messages
with :mod:`tunnel.wsframe` once the handshake (the client's own, :mod:`tunnel.client`;
the server's with websockets' protocol object, :mod:`tunnel.server`) is done.

Settings written on purpose (the library defaults are wrong for a tunnel):

* largest message = :data:`wire.MAX_FRAME_SIZE`: one frame is one message, never larger
  (websockets' default is 1 MiB);
* no extensions offered or accepted: permessage-deflate costs 10-20x in throughput on
  bodies that are mostly compressed already;
* keepalive: a ping every ``ping_interval`` seconds; no byte at all (pong included)
  within ``ping_timeout`` after it resets the link (a dead NAT mapping is found so; a
  reset, not a FIN, so that the peer sees a failure it may resume from).

Writes: each :meth:`WsLink.send` is one ``transport.write`` of the joined frames (on
an SSL transport ``writelines`` cost ten times more CPU than one joined buffer), or on
plain TCP, with bulk frames in it, one ``writelines`` of their parts: the payload of a
large DATA frame is never copied to join it to its header (``wire``'s
``messages_to_send``), and a client masks header and payload apart. The
transport's write buffer limits are :data:`WRITE_HIGH`/:data:`WRITE_LOW`; the session
frames no more than the room under the high mark (:meth:`WsLink.budget`), but for one
bulk frame, which it never cuts in two.

Reads: at most :data:`MAX_MESSAGES_PER_TURN` messages are parsed and processed per loop
turn; the rest wait (the socket is paused, the bytes stay in the parser) until the next
turn, so one peer that floods small frames cannot monopolise the event loop that every
other tunnel shares. After a close with an error code nothing the peer sends is parsed.

Closing: the RFC 6455 handshake (a close frame each way, the server closes TCP first),
cut short after :data:`CLOSE_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import struct
import time
from typing import TYPE_CHECKING, Final, cast

import wire
from tunnel import heap, wsframe
from wire.rules import AGENT_KEY_HEADER

if TYPE_CHECKING:
    from tunnel.session import Session

log = logging.getLogger(__name__)


#: Handshake headers whose values are secrets: the token, and the agent key.
_SECRET_HEADERS: Final = frozenset({"authorization", AGENT_KEY_HEADER.lower()})


class _RedactAuthorization(logging.Filter):
    """websockets logs the handshake headers it reads at DEBUG (the relay's side); never
    let a token (or key) through."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() in _SECRET_HEADERS:
            record.args = (args[0], "[redacted]")
        return True


#: The handshake's logger: websockets' protocol object on the server side logs to it,
#: and :mod:`tunnel.client` its request and status lines (never a header).
WS_LOGGER: Final = logging.getLogger("tunnel.websocket")
WS_LOGGER.addFilter(_RedactAuthorization())

#: Bytes buffered in the transport above which the session frames nothing more, and
#: below which it resumes. Small, so a request head queued behind a download waits for
#: at most this much socket time.
WRITE_HIGH: Final = 256 * 1024
WRITE_LOW: Final = 64 * 1024

#: WebSocket messages processed per loop turn before yielding to other connections. A
#: small frame costs about 8 us, so a flood holds the loop for at most about half a
#: millisecond a turn (256 held it for 2 ms, and another tunnel's request crosses the
#: loop several times). A bulk transfer never gets near it (64 frames are 16 MiB).
MAX_MESSAGES_PER_TURN: Final = 64

#: Frames written as one joined buffer below this total size, else as a list (no copy
#: of bulk payloads). On TLS always joined: the SSL transport's ``writelines`` cost ten
#: times more CPU than one buffer.
JOIN_BELOW: Final = 64 * 1024

#: Close codes that end a link cleanly (normal closure, going away); any other fails it.
_CLEAN_CLOSE: Final = frozenset({1000, 1001})

#: Seconds the closing handshake may take before the connection is dropped.
CLOSE_TIMEOUT: Final = 2.0

#: SO_LINGER on, timeout 0: closing the socket sends RST.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class WsLink(asyncio.Protocol):
    """An open WebSocket carrying one tunnel session.

    Args:
        client: this side opened the WebSocket (it masks what it sends).
        ping_interval: seconds between keepalive pings (None: no pings).
        ping_timeout: seconds without any received byte after a ping before closing.
    """

    def __init__(
        self,
        client: bool,
        *,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
    ) -> None:
        self.client = client
        self.session: Session | None = None
        self.transport: asyncio.Transport | None = None
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_code: int | None = None  # the code of the peer's close frame
        #: The peer's TCP connection ended with a FIN: its process closed it (or died and
        #: its kernel did), which a network failure (a reset, silence) never does.
        self.eof = False
        self.closed = asyncio.get_running_loop().create_future()
        self._loop = asyncio.get_running_loop()
        self._masks = wsframe.Masks() if client else None
        # Bulk frames come out as (8-byte header, payload): wire takes the payload as is.
        self._parser = wsframe.Parser(
            wire.MAX_FRAME_SIZE, masked=not client, split=wire.HEADER_SIZE
        )
        self._pending: collections.deque[tuple[int, wsframe.Payload]] = collections.deque()
        self._paused_reading = False
        self._tls = False
        self._close_sent = False
        self._failed = False  # the peer broke RFC 6455: its bytes are dropped
        self._ping_handle: asyncio.TimerHandle | None = None
        self._pong_deadline: asyncio.TimerHandle | None = None
        self._close_handle: asyncio.TimerHandle | None = None
        self._received = 0  # bytes received, for the keepalive
        self.rtt: float | None = None  # seconds from our last answered ping to its pong
        self._ping_sent: float | None = None

    # -- set-up ---------------------------------------------------------------------------

    def attach(self, session: Session) -> None:
        """Hand every message from now on (and those that arrived before) to ``session``."""
        self.session = session
        session.attach(self)
        if self._pending:
            self._process()
        if self.closed.done():  # the connection ended before the session was attached
            session.lost()

    def rebind(self, session: Session) -> None:
        """Carry ``session`` from now on (a resumed one): messages not processed yet
        go to it. The session's :meth:`~tunnel.session.Session.reattach` follows."""
        self.session = session
        if self._pending:
            self._loop.call_soon(self._process)

    @property
    def broken(self) -> bool:
        """The connection failed rather than ended: no close frame and no FIN came (a
        reset, or the keepalive gave up). Only then may the session be resumed."""
        return self.close_code is None and not self.eof

    def detach(self) -> None:
        """Carry no session any more (a newer link resumed it): nothing more is
        processed, and the end of this link tells no one."""
        self.session = None
        self._pending.clear()

    def adopt(
        self,
        transport: asyncio.BaseTransport,
        rest: bytes = b"",
        messages: list[tuple[int, bytes]] | None = None,
    ) -> None:
        """Take over ``transport`` after a handshake read by someone else: ``rest`` is
        what that reader received past the handshake, ``messages`` what it already
        parsed past it."""
        transport.set_protocol(self)
        self.connection_made(transport)
        if messages:
            self._pending.extend(messages)
            self._process()
        if rest:
            self.data_received(rest)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self._tls = transport.get_extra_info("sslcontext") is not None
        self._arm_ping()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        if self._failed:
            return  # the connection failed: nothing after it is parsed
        self._parse(data)
        self._process()

    def _parse(self, data: bytes) -> None:
        """Parse what fits in this turn's message budget (the rest stays in the parser)."""
        try:
            room = max(MAX_MESSAGES_PER_TURN - len(self._pending), 1)
            self._pending.extend(self._parser.feed(data, room))
        except wsframe.WsError as exc:
            log.info("tunnel_websocket_error", extra={"code": exc.code, "detail": exc.reason})
            self.close(exc.code, exc.reason)

    def eof_received(self) -> bool | None:
        self.eof = True
        return None  # close the transport: connection_lost follows

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

    def send(self, messages: list[wire.Message]) -> bool:
        transport = self.transport
        if self._close_sent or transport is None or transport.is_closing():
            return False
        masks = self._masks
        op = wsframe.OP_BINARY
        if len(messages) == 1 and not isinstance(first := messages[0], tuple):
            transport.write(wsframe.encode(op, first, masks))
            return True
        parts: list[bytes] = []
        size = 0
        for message in messages:
            if isinstance(message, tuple):  # a bulk DATA frame: header and payload apart
                heap.bulk()
                head, payload = message
                parts.extend(wsframe.encode_split(op, head, payload, masks))
                size += len(payload)
            else:
                parts.extend(wsframe.encode_parts(op, message, masks))
                size += len(message)
        if self._tls or size < JOIN_BELOW:
            transport.write(b"".join(parts))
        else:  # bulk frames: no copy into one buffer (one writev)
            transport.writelines(parts)
        return True

    def send_text(self, text: bytes) -> None:
        """A text message (tests of a peer that breaks the protocol)."""
        self._control(wsframe.OP_TEXT, text)

    def send_raw(self, data: bytes) -> None:
        """Bytes as they are (tests of a peer that breaks the protocol)."""
        if self.transport is not None:
            self.transport.write(data)

    def budget(self) -> int:
        if self._close_sent or self.transport is None or self.transport.is_closing():
            return 0
        # Positive exactly while the transport is not paused: asyncio pauses a protocol
        # when its buffer is *above* the high-water mark. With exactly WRITE_HIGH
        # buffered a budget of 0 would make the session wait for a resume_writing()
        # that never comes.
        return WRITE_HIGH + 1 - self.transport.get_write_buffer_size()

    def close(self, code: int, reason: str) -> None:
        """Send a close frame (once); the connection ends when the peer answers. With an
        error code (not 1000 or 1001) the connection is failed: nothing more the peer
        sends is parsed."""
        self._send_close(code, reason)
        if code not in _CLEAN_CLOSE and not self._failed:
            self._fail()

    def _send_close(self, code: int, reason: str) -> None:
        if not self._close_sent:
            self._control(wsframe.OP_CLOSE, wsframe.close_payload(code, reason))
            self._close_sent = True
        if self._close_handle is None and self.transport is not None:
            self._close_handle = self._loop.call_later(CLOSE_TIMEOUT, self.abort)

    def _fail(self) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): the close frame is written, then
        our end of TCP, so the peer ends it now rather than at the close timeout. What it
        still sends is read and dropped unparsed (a flood that broke the rules costs no
        more parsing; closing with unread bytes would reset the connection and could
        lose the close frame)."""
        self._failed = True
        self._pending.clear()
        transport = self.transport
        if transport is not None:
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed.done():
            self.transport.abort()

    # -- internals ----------------------------------------------------------------------------

    def _process(self) -> None:
        pending = self._pending
        session = self.session
        if session is None:
            if self._close_sent:  # closed before a session took it: only the handshake
                while pending:
                    opcode, payload = pending.popleft()
                    if opcode == wsframe.OP_CLOSE and not isinstance(payload, tuple):
                        self._peer_closed(payload)
            return  # kept until attach()
        count = 0
        while pending and count < MAX_MESSAGES_PER_TURN:
            opcode, payload = pending.popleft()
            count += 1
            if opcode == wsframe.OP_BINARY:
                if isinstance(payload, tuple):
                    heap.bulk()
                session.receive(payload)
                if self.session is not session:  # a resumption moved the link
                    if self.session is None:
                        return
                    session = self.session
            elif not isinstance(payload, tuple):  # control and text frames are never split
                self._other(opcode, payload, session)
        more = pending or (self._parser.more and not self._failed)
        if more and not self._paused_reading and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()
            self._loop.call_soon(self._resume)

    def _other(self, opcode: int, payload: bytes, session: Session) -> None:
        if opcode == wsframe.OP_PING:
            self._control(wsframe.OP_PONG, payload)
        elif opcode == wsframe.OP_PONG:
            if self._ping_sent is not None:
                self.rtt, self._ping_sent = time.perf_counter() - self._ping_sent, None
        elif opcode == wsframe.OP_CLOSE:
            self._peer_closed(payload)
        elif opcode == wsframe.OP_TEXT:
            session.fail(wire.ErrorCode.PROTOCOL_ERROR, "text message on the tunnel")

    def _peer_closed(self, payload: bytes) -> None:
        self.close_code, _reason = wsframe.parse_close(payload)
        self._pending.clear()
        if not self._close_sent:
            code = self.close_code if self.close_code != 1005 else 1000
            self._send_close(code, "")  # the answer: the peer ends the connection
        transport = self.transport
        if transport is not None and not self.client:
            transport.close()  # the server closes TCP first (RFC 6455 section 7.1.1)

    def _resume(self) -> None:
        self._paused_reading = False
        if self._parser.more and not self._failed:
            self._parse(b"")
        if self._pending:
            self._process()
        if not self._paused_reading and self.transport is not None:
            self.transport.resume_reading()

    def _control(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        if self._close_sent or transport is None or transport.is_closing():
            return
        transport.write(wsframe.encode(opcode, payload, self._masks))

    def _arm_ping(self) -> None:
        if self.ping_interval:
            self._ping_handle = self._loop.call_later(self.ping_interval, self._ping)

    def _ping(self) -> None:
        if self._close_sent:
            return
        self._control(wsframe.OP_PING, b"")
        self._ping_sent = time.perf_counter()  # uvloop's clock counts whole ms
        if self.ping_timeout:
            seen = self._received
            self._pong_deadline = self._loop.call_later(self.ping_timeout, self._check, seen)
        self._arm_ping()

    def _check(self, seen: int) -> None:
        if self._received == seen:  # not a byte since the ping, pong included
            log.info("tunnel_keepalive_timeout")
            self._reset()

    def _reset(self) -> None:
        """Abort with a TCP reset, not a FIN: the connection failed (a FIN that reaches
        the peer once the network is back would say this side ended the session on
        purpose, and a resumable session would not be kept for resumption)."""
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.abort()
