"""TCP and TLS passthrough tunnels on the agent: each stream is one new connection to
the local target, bytes piped both ways untouched.

Theory of operation. :class:`RawForwarder` is the :class:`~edge_agent.session.StreamTarget`
of ``edge-agent tcp`` and ``edge-agent tls``: for every stream the relay opens it makes a
:class:`LocalPipe` and connects it to ``host:port`` in a task. Bytes that arrive before
the connection is made are held, with the stream's reading paused, so at most one
window is held. After that each direction is one call: stream bytes to
``transport.write``, target bytes to ``stream.write``; flow control is the stream's
(the target's reading pauses while the stream is over its high mark, the stream's
credit while the target's socket is backed up). Each direction half-closes on its own
EOF; the local connection closes once both did. A target that refuses or times out
resets the stream CONNECT_ERROR or TARGET_TIMEOUT (the relay closes the caller's
connection); a target that resets mid-stream, TARGET_ERROR after what it sent; a relay
RESET aborts the local connection.

For TLS passthrough the local service terminates TLS itself: the agent sees only
ciphertext, exactly as the relay does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final, cast

import tunnel
from edge_agent.errors import ConfigError
from edge_agent.port import ExchangeRecord
from edge_agent.target import CONNECT_TIMEOUT
from tunnel.link import set_nodelay
from wire import ErrorCode, StreamKind
from wire.payloads import TUNNEL_NAMES

logger = logging.getLogger(__name__)

#: Bytes buffered toward the local target above which the stream's credit is held back,
#: and below which it is returned again.
WRITE_HIGH: Final = 1024 * 1024
WRITE_LOW: Final = 256 * 1024


def parse_target(text: str) -> tuple[str, int]:
    """``PORT`` (on 127.0.0.1), ``HOST:PORT`` or ``[V6]:PORT``; ConfigError otherwise."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host = "127.0.0.1"
    host = host.removeprefix("[").removesuffix("]")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536 or (sep and not host):
        raise ConfigError(f"target must be PORT or HOST:PORT (port 1-65535), got {text!r}")
    return host, int(port_text)


class RawForwarder:
    """Makes the handler of each TCP or TLS stream (see the module docstring).

    Args:
        host, port: the local target.
        kind: the tunnel's kind; a stream of another kind ends the session
            (GOAWAY PROTOCOL_ERROR: the relay opened what HELLO did not ask for).
        connect_timeout: seconds to connect; past it the stream is reset TARGET_TIMEOUT.
        on_done: called with an :class:`ExchangeRecord` per connection (method ``TCP``
            or ``TLS``, no target or status).
    """

    def __init__(
        self,
        host: str,
        port: int,
        kind: StreamKind,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        on_done: Callable[[ExchangeRecord], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.kind = kind
        self.connect_timeout = connect_timeout
        self.on_done = on_done
        self.pipes: set[LocalPipe] = set()

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def handler(self, stream: tunnel.Stream) -> tunnel.StreamHandler:
        if stream.kind is not self.kind:  # the relay broke HELLO's promise: a session error
            stream.session.fail(
                ErrorCode.PROTOCOL_ERROR,
                f"a {stream.kind.name} stream on a {self.kind.name} tunnel",
            )
            return tunnel.NULL_HANDLER
        pipe = LocalPipe(self, stream)
        self.pipes.add(pipe)
        pipe.connecting = asyncio.get_running_loop().create_task(pipe.connect())
        return pipe.side

    async def aclose(self) -> None:
        for pipe in list(self.pipes):
            pipe.abort()


class LocalPipe(asyncio.Protocol):
    """One stream and its connection to the local target."""

    def __init__(self, forwarder: RawForwarder, stream: tunnel.Stream) -> None:
        self.forwarder = forwarder
        self.stream = stream
        self.side = _StreamSide(self)
        self.transport: asyncio.Transport | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.pending: list[bytes] = []
        self.started = time.monotonic()
        self.bytes_in = 0  # relay -> target
        self.bytes_out = 0  # target -> relay
        self.local_eof = False
        self.remote_eof = False
        self.done = False
        stream.pause_reading()  # until connected: hold at most one window

    async def connect(self) -> None:
        fw = self.forwarder
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: self, fw.host, fw.port), fw.connect_timeout
            )
        except TimeoutError:
            self._fail(ErrorCode.TARGET_TIMEOUT, f"connect to {fw.label} timed out")
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self._fail(ErrorCode.CONNECT_ERROR, f"cannot connect to {fw.label}: {reason}")

    # -- the local connection (asyncio.Protocol) ---------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        if self.done:  # the stream went away while connecting
            self.transport.abort()
            return
        if self.pending:
            self.transport.write(b"".join(self.pending))
            self.pending.clear()
        if self.remote_eof:
            self._write_eof()
        self.stream.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.stream.write(data)

    def eof_received(self) -> bool | None:
        self.local_eof = True
        self.stream.end()
        if self.remote_eof:
            return None
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stream.closed and not self.local_eof:
            reason = f"local connection lost: {exc}" if exc else "local connection closed"
            self.stream.reset(ErrorCode.TARGET_ERROR, reason, after_queued=True)
            self._finish(reason, ErrorCode.TARGET_ERROR)
        elif not self.stream.closed:
            self.stream.end()
        self._finish(None)

    def pause_writing(self) -> None:
        self.stream.pause_reading()

    def resume_writing(self) -> None:
        self.stream.resume_reading()

    # -- the stream (through _StreamSide) -----------------------------------------------

    def from_relay(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.transport is not None:
            self.transport.write(data)
        else:
            self.pending.append(data)

    def relay_eof(self) -> None:
        self.remote_eof = True
        if self.transport is not None:
            self._write_eof()

    def abort(self, code: ErrorCode | None = None, reason: str = "") -> None:
        """The relay reset the stream (or the agent stops): cut the local connection."""
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()
        if self.transport is not None:
            self.transport.abort()
        if not self.stream.closed:
            self.stream.reset(ErrorCode.CANCEL, "agent stopping")
        self._finish(f"aborted: {code.name} {reason}".rstrip() if code else None, code)

    def target_pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def target_resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- internals ---------------------------------------------------------------------

    def _write_eof(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.local_eof or not transport.can_write_eof():
            transport.close()
        else:
            with contextlib.suppress(OSError):
                transport.write_eof()

    def _fail(self, code: ErrorCode, reason: str) -> None:
        logger.info("target_connect_failed", extra={"stream_id": self.stream.sid, "detail": reason})
        self.stream.reset(code, reason)
        self._finish(reason, code)

    def _finish(self, error: str | None, code: ErrorCode | None = None) -> None:
        if self.done:
            return
        self.done = True
        self.forwarder.pipes.discard(self)
        on_done = self.forwarder.on_done
        if on_done is not None:
            on_done(
                ExchangeRecord(
                    self.stream.sid,
                    TUNNEL_NAMES[self.forwarder.kind].upper(),
                    "",
                    None,
                    (time.monotonic() - self.started) * 1000.0,
                    self.bytes_in,
                    self.bytes_out,
                    error,
                    code,
                )
            )


class _StreamSide:
    """The :class:`tunnel.StreamHandler` face of a :class:`LocalPipe` (``asyncio.Protocol``
    has ``pause_writing`` too, for the opposite direction)."""

    __slots__ = ("pipe",)

    def __init__(self, pipe: LocalPipe) -> None:
        self.pipe = pipe

    def data(self, data: bytes) -> None:
        self.pipe.from_relay(data)

    def end(self, close: bool) -> None:
        self.pipe.relay_eof()

    def aborted(self, code: ErrorCode, reason: str) -> None:
        self.pipe.abort(code, reason)

    def pause_writing(self) -> None:
        self.pipe.target_pause()

    def resume_writing(self) -> None:
        self.pipe.target_resume()
