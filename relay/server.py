"""Serving the relay: one asyncio server (uvloop) of :class:`relay.public.PublicConnection`,
and the graceful shutdown.

No web framework or ASGI server sits on the data path: measured, uvicorn's per-request
machinery was most of the relay's ~250 us per small request, where the relay's own
protocol object costs a few tens of microseconds.

Shutdown: SIGINT/SIGTERM drains first, while the listener still answers (new public
requests get 503 relay_draining, new agents are refused with 503, ``/_edge/readyz``
says draining): GOAWAY to every agent, wait for in-flight streams up to the drain
timeout, close the agents' WebSockets, then stop listening and close what is left. A
second signal cuts the drain short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Final

from relay.app import RelayApp
from relay.config import Settings
from relay.errors import RelayConfigError
from relay.public import PublicConnection
from relay.sniroute import SniRouter, listen
from relay.state import RelayState
from tunnel import heap
from tunnel.heap import settle as settle_gc

log = logging.getLogger(__name__)

#: Pending connections the kernel queues.
BACKLOG: Final = 2048


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None:
        return None
    if settings.tls_key is None:
        raise RelayConfigError("--tls-cert needs --tls-key")
    for path in (settings.tls_cert, settings.tls_key):
        if not path.is_file():
            raise RelayConfigError(f"cannot read {path}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    except (ssl.SSLError, OSError) as exc:
        raise RelayConfigError(f"cannot use the certificate: {exc}") from exc
    return context


class RelayServer:
    """One relay process's listener.

    Args:
        handle_signals: install SIGINT/SIGTERM handlers (off for in-process tests).
    """

    def __init__(self, app: RelayApp, handle_signals: bool = True) -> None:
        self.app = app
        self.handle_signals = handle_signals
        self.started = False
        self.should_exit = False
        self.force_exit = False
        self.port = app.state.settings.port
        self._server: asyncio.Server | SniRouter | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until :attr:`should_exit` (or a signal), then drain and return."""
        settings = self.app.state.settings
        context = tls_context(settings)
        tls = context is not None
        loop = asyncio.get_running_loop()
        if self.app.state.cluster is not None:  # joins before listening: no Redis, no start
            await self.app.state.cluster.start(self.app)

        def factory() -> PublicConnection:
            return PublicConnection(self.app, tls)

        if sockets and context is not None and settings.domain:  # TLS passthrough by SNI
            sockets[0].listen(BACKLOG)
            self._server = SniRouter(self.app.state, sockets[0], context, factory)
        elif sockets:
            self._server = await loop.create_server(
                factory, sock=sockets[0], ssl=context, backlog=BACKLOG
            )
        else:
            try:
                if context is not None and settings.domain:  # TLS passthrough by SNI
                    sock = listen(settings.host, settings.port, BACKLOG)
                    self._server = SniRouter(self.app.state, sock, context, factory)
                else:
                    self._server = await loop.create_server(
                        factory, settings.host, settings.port, ssl=context, backlog=BACKLOG
                    )
            except OSError as exc:
                log.error(
                    "relay_bind_failed",
                    extra={"detail": f"cannot listen on {settings.host}:{settings.port}: {exc}"},
                )
                raise RelayConfigError(
                    f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
                ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        self.app.start()
        self.started = True
        log.info("relay_listening", extra={"port": self.port, "public_url": self.public_url})
        with self._signals():
            trim_at = loop.time() + heap.TRIM_INTERVAL
            while not self.should_exit:
                await asyncio.sleep(0.05)
                if loop.time() >= trim_at:  # what a burst freed goes back to the kernel
                    heap.trim()
                    trim_at = loop.time() + heap.TRIM_INTERVAL
            await self.shutdown()

    @property
    def public_url(self) -> str:
        return self.app.state.settings.base_url(self.port)

    def bound_port(self) -> int:
        return self.port

    async def shutdown(self) -> None:
        await self.app.drain(self.app.state.settings.drain_timeout, lambda: self.force_exit)
        if self._server is not None:
            self._server.close()
        for conn in list(self.app.connections):
            conn.abort()
        await self.app.stop()
        if self.app.state.cluster is not None:
            await self.app.state.cluster.stop()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        log.info("signal_received", extra={"signal": signal.Signals(sig).name})
        if self.should_exit:
            self.force_exit = True  # a second signal: stop draining
        self.should_exit = True


def build(settings: Settings, handle_signals: bool = True) -> RelayServer:
    state = RelayState.create(settings)
    return RelayServer(RelayApp(state), handle_signals)


def serve(settings: Settings) -> None:
    """Run a relay until SIGINT/SIGTERM (then drain and return)."""
    server = build(settings)
    settle_gc()
    try:
        import uvloop
    except ImportError:  # Windows, PyPy
        asyncio.run(server.serve())
    else:
        uvloop.run(server.serve())
