"""Serving the relay with uvicorn, and shutting it down gracefully.

Every uvicorn setting the relay relies on is written here, defaults included, because
several defaults are wrong for a tunnel relay (see the comments in :func:`uvicorn_config`).

Shutdown: uvicorn's own shutdown closes every WebSocket at once (close code 1012), which
would cut the agents before their streams finish. :class:`RelayServer` therefore drains
first, while the listener still answers (new public requests get 503 relay_draining,
new agents are refused with 503, ``/_edge/readyz`` says draining): GOAWAY to every
agent, wait for in-flight streams up to the drain timeout, close the agents' WebSockets,
and only then hand over to uvicorn's shutdown. A second SIGINT/SIGTERM cuts the drain
short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any, Final

import uvicorn

import wire
from relay.app import RelayApp
from relay.config import KEEP_ALIVE_TIMEOUT, PARSER_MAX_HEADER_BYTES, Settings
from relay.errors import RelayConfigError
from relay.httpproto import guarded_protocol
from relay.state import RelayState

log = logging.getLogger(__name__)

#: Seconds uvicorn's own shutdown waits for leftover tasks after the relay has drained
#: (uvicorn's default is to wait forever).
UVICORN_SHUTDOWN_GRACE: Final = 5

#: Pending connections the kernel queues (uvicorn's default, written down).
BACKLOG: Final = 2048


def uvicorn_config(app: RelayApp, settings: Settings, loop: str = "uvloop") -> uvicorn.Config:
    """The uvicorn configuration of a relay. ``loop="asyncio"`` for in-process tests."""
    tls: dict[str, Any] = {}
    if settings.tls_cert is not None:
        if settings.tls_key is None:
            raise RelayConfigError("--tls-cert needs --tls-key")
        for path in (settings.tls_cert, settings.tls_key):
            if not path.is_file():
                raise RelayConfigError(f"cannot read {path}")
        tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop=loop,
        # httptools with a head-size cap, a head timeout and TCP_NODELAY (relay.httpproto).
        http=guarded_protocol(PARSER_MAX_HEADER_BYTES, settings.header_timeout),
        # The websockets library's sans-I/O protocol (the same library as the agent).
        ws="websockets-sansio",
        # uvicorn's default is 16 MiB; one frame is one message, never larger.
        ws_max_size=wire.MAX_FRAME_SIZE,
        # Default True: deflate costs 10-20x throughput on incompressible bodies.
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        lifespan="on",
        # Logging is configured by the relay (relay.logs); no per-request access log.
        log_config=None,
        access_log=False,
        # Default True with 127.0.0.1 trusted: the relay is the edge, so the client
        # address is the socket's and X-Forwarded-For is appended to, not believed.
        proxy_headers=False,
        # The agent's own Date/Server headers pass through; uvicorn must not add more.
        server_header=False,
        date_header=False,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        timeout_graceful_shutdown=UVICORN_SHUTDOWN_GRACE,
        # Used if the h11 parser is ever chosen (httptools has no such setting).
        h11_max_incomplete_event_size=PARSER_MAX_HEADER_BYTES,
        limit_concurrency=None,
        backlog=BACKLOG,
        **tls,
    )


class RelayServer(uvicorn.Server):
    """uvicorn's server with the relay's drain before uvicorn's own shutdown.

    Args:
        handle_signals: install SIGINT/SIGTERM handlers (off for in-process tests).
    """

    def __init__(self, config: uvicorn.Config, app: RelayApp, handle_signals: bool = True) -> None:
        super().__init__(config)
        self.app = app
        self.handle_signals = handle_signals

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            port = self.bound_port()
            url = self.app.state.settings.base_url(port)
            log.info("relay_listening", extra={"port": port, "public_url": url})

    def bound_port(self) -> int:
        for server in self.servers:
            for sock in server.sockets:
                port: int = sock.getsockname()[1]
                return port
        return self.config.port

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.app.drain(self.app.state.settings.drain_timeout, lambda: self.force_exit)
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's version re-raises the signal after serving, which would turn a clean
        # drain into death by SIGTERM (or a KeyboardInterrupt traceback).
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


def build(settings: Settings, loop: str = "uvloop", handle_signals: bool = True) -> RelayServer:
    state = RelayState.create(settings)
    app = RelayApp(state)
    return RelayServer(uvicorn_config(app, settings, loop), app, handle_signals)


def serve(settings: Settings) -> None:
    """Run a relay until SIGINT/SIGTERM (then drain and return)."""
    build(settings).run()
