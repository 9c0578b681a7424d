"""HttpForwarder: v2 streams piped as raw bytes to a local HTTP(S) server, over a keep-alive pool.

The relay sends the request bytes of one exchange exactly as they go to the origin
(head validated and rewritten by the relay); this side writes them to a pooled
connection untouched, and passes the target's response bytes back untouched. Nothing
is re-serialised: the only parse is httptools observing the response to find its end
(see :mod:`edge_agent.passthrough`, the per-stream hot path). The one optional edit is
the ``Host`` line (``host_header``).

Why hand-written and not aiohttp or httpx: a proxy that passes bytes through needs no
message objects, and the per-request cost is a budget (~30 us of CPU for the whole
agent process per small request). Measured with ``python -m bench.forward_cpu`` on the
2-vCPU benchmark VM (uvloop; the target a raw keep-alive server in another process, so
only this side's CPU counts; 5,000 small GETs through a lean fake stream; the VM is
shared and noisy, so ranges over runs): 11-14 us of process CPU per request at c=1
(12.6-13.3 us with an ``on_done`` record), where a bare asyncio Protocol doing the same
socket writes and reads costs 9.0-9.3 us; at c=64 10-19 us against 6.7-11 us for the
bare loop, depending on the machine's load. The forwarder's own work (handler, pool,
observe-only parse), measured without sockets, is 3.0-3.5 us per request, about 1 us
more with the record. edge_agent.http1's object path cost about 40 us.

A request on a reused connection that the server closes before answering (it was
closing the idle connection as the request went out) is sent once more on a new
connection when its method is idempotent and it fits in
:data:`~edge_agent.passthrough.MAX_REPLAY`; ``keepalive`` below the server's idle
timeout makes that rare.

Not done here: a cap on connections in use (the relay caps streams per agent, and
each stream holds at most one connection), HTTP/2 to the target.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Final, Literal, cast

from yarl import URL

from edge_agent.errors import (
    ConfigError,
    TargetError,
    TargetFailed,
    TargetTimeout,
    TargetUnreachable,
)
from edge_agent.http_bytes import ResponseObserver
from edge_agent.passthrough import Passthrough
from edge_agent.port import ExchangeRecord, StreamHandler, StreamPort
from edge_agent.target import CONNECT_TIMEOUT, KEEPALIVE_TIMEOUT, POOL_LIMIT, target_url
from tunnel.link import set_nodelay

logger = logging.getLogger(__name__)

__all__ = ["ExchangeRecord", "HostHeader", "HttpForwarder", "StreamHandler", "StreamPort"]

#: ``preserve``: the Host line the relay sent goes through untouched (the default: the
#: relay already made it what the origin should see). ``rewrite``: replaced by the
#: target's own ``host[:port]``. Any other string: replaced by that value.
HostHeader = Literal["preserve", "rewrite"] | str

#: Idle connections kept per forwarder: one per stream the relay may open at once by
#: default; more are closed when they come back.
MAX_IDLE: Final = POOL_LIMIT


class HttpForwarder:
    """Makes the :class:`StreamHandler` of each v2 stream bound for one HTTP(S) target.

    Args:
        target: ``PORT``, ``host:port`` or an ``http(s)://host:port`` URL (no path).
        ca_file: PEM bundle trusted instead of the system store for an https target.
        insecure: no certificate verification for an https target (development).
        host_header: see :data:`HostHeader`.
        connect_timeout: seconds for the TCP (and TLS) connect; past it the stream is
            reset TARGET_TIMEOUT (the relay answers 504).
        keepalive: seconds an idle connection may be reused for; keep it below the
            server's own idle timeout (uvicorn: 5 s) so a reused connection is not one
            the server is closing.
        on_done: called with an :class:`ExchangeRecord` once per stream.

    Raises:
        ConfigError: a target with a path or query, or a CA file that cannot be read.
    """

    def __init__(
        self,
        target: str,
        *,
        ca_file: str | None = None,
        insecure: bool = False,
        host_header: HostHeader = "preserve",
        connect_timeout: float = CONNECT_TIMEOUT,
        keepalive: float = KEEPALIVE_TIMEOUT,
        on_done: Callable[[ExchangeRecord], None] | None = None,
    ) -> None:
        url = URL(target_url(target))
        if url.raw_path not in ("", "/"):
            raise ConfigError(f"a forwarding target has no path, got {target!r}")
        self.host = url.raw_host or ""
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.authority = url.raw_authority
        self.tls = _tls_context(ca_file, insecure) if url.scheme == "https" else None
        self.host_value = _host_value(host_header, self.authority)
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.on_done = on_done
        self._idle: list[TargetConnection] = []
        self._connecting: set[asyncio.Task[None]] = set()
        self.connections_made = 0

    def handler(self, stream: StreamPort) -> Passthrough:
        """The handler for a new stream; call before its first ``data``. Never blocks:
        a pooled connection is used at once, else one is made in a task (meanwhile the
        request bytes are held, and the stream's reading paused).

        Pooled connections idle for longer than ``keepalive`` (or lost) are dropped on
        the way; one clock read serves that and the exchange's start (once per request)."""
        now = time.monotonic()
        exchange = Passthrough(self, stream, self.on_done, now)
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.lost and now - conn.idle_since < self.keepalive:
                exchange.attach(conn, reused=True)
                return exchange
            conn.abort()
        exchange.update_reading()
        self.connect(exchange)
        return exchange

    def connect(self, exchange: Passthrough) -> None:
        """Make a new connection for ``exchange`` in a task (``attach`` or ``connect_failed``)."""
        task = asyncio.get_running_loop().create_task(self._connect(exchange))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def release(self, conn: TargetConnection) -> None:
        """Back to the pool after a complete keep-alive exchange. The pool is a stack
        (the most recent connection is reused first), so the oldest sit at the bottom:
        those idle for longer than ``keepalive`` are closed here, without a timer."""
        now = time.monotonic()
        idle = self._idle
        while idle and now - idle[0].idle_since >= self.keepalive:
            idle.pop(0).transport.close()
        if conn.lost or len(idle) >= MAX_IDLE:
            conn.transport.close()
            return
        conn.idle_since = now
        idle.append(conn)

    def discard(self, conn: TargetConnection) -> None:
        """An idle connection was closed by the server."""
        if conn in self._idle:
            self._idle.remove(conn)

    async def aclose(self) -> None:
        """:meth:`close`, as the agent's stream targets are closed."""
        self.close()

    def close(self) -> None:
        """Close idle connections and stop connects in progress; in-use ones finish."""
        for task in self._connecting:
            task.cancel()
        while self._idle:
            self._idle.pop().transport.close()

    async def _connect(self, exchange: Passthrough) -> None:
        try:
            conn = await self._open()
        except TargetError as exc:
            exchange.connect_failed(exc)
            return
        except asyncio.CancelledError:
            exchange.connect_failed(TargetFailed("the forwarder was closed"))
            raise
        exchange.attach(conn, reused=False)

    async def _open(self) -> TargetConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: TargetConnection(self), self.host, self.port, ssl=self.tls
                )
        except TimeoutError:
            raise TargetTimeout("local target timed out: connect") from None
        except ssl.SSLError as exc:
            raise TargetFailed(f"local target TLS failed: {exc}") from exc
        except OSError as exc:
            raise TargetUnreachable(f"cannot connect to the local target: {exc}") from exc
        self.connections_made += 1
        return conn


class TargetConnection(asyncio.Protocol):
    """One connection to the target; serves one :class:`Passthrough` at a time."""

    def __init__(self, forwarder: HttpForwarder) -> None:
        self.forwarder = forwarder
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.exchange: Passthrough | None = None
        self.observer = ResponseObserver()
        self.lost = False
        self.write_paused = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.abort()  # bytes on an idle connection: it is out of step, never reuse it
        else:
            exchange.response_data(data)

    def eof_received(self) -> bool | None:
        exchange = self.exchange
        return exchange.response_eof() if exchange is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.connection_lost(self, exc)
        else:
            self.forwarder.discard(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchange is not None:
            self.exchange.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchange is not None:
            self.exchange.update_reading()

    def send(self, data: bytes) -> None:
        """Write toward the target; a transport that is already failing is aborted (the
        exchange learns it from ``connection_lost``), never raised into the runtime."""
        if self.lost:
            return
        try:
            self.transport.write(data)
        except (RuntimeError, OSError):
            self.abort()

    def abort(self) -> None:
        self.lost = True
        self.transport.abort()


def _tls_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the target CA file {ca_file!r}: {exc}") from exc
    if insecure:
        logger.warning(
            "target_tls_verification_disabled",
            extra={"warning": "--target-insecure: the target's certificate is NOT verified"},
        )
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _host_value(mode: HostHeader, authority: str) -> bytes | None:
    if mode == "preserve":
        return None
    value = authority if mode == "rewrite" else mode
    if not value or any(c in value for c in "\r\n\0"):
        raise ConfigError(f"invalid Host header value {value!r}")
    return value.encode("latin-1")
