"""A real uvicorn serving an ASGI app on 127.0.0.1 in a background thread of the test
process, on its own event loop, so tests on pytest's loop can call it and watch it."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any, Self

import uvicorn

#: How long :meth:`ThreadedUvicorn.start` waits for the server to listen, in seconds.
START_WITHIN = 20.0

#: How long :meth:`ThreadedUvicorn.stop` waits for the thread to end, in seconds.
STOP_WITHIN = 15.0


class ThreadedUvicorn:
    """Start with :meth:`start`, stop with :meth:`stop` (or both with ``with``); ``port``
    is set once started.
    Origins subclass it and pass their own ASGI app.

    ``config`` is passed to :class:`uvicorn.Config` on top of quiet defaults (no lifespan,
    no access log, ASGI 3, X-Forwarded-* left as headers). ``loop_factory`` makes the
    thread's loop (asyncio's default when None)."""

    def __init__(
        self,
        app: Any,
        name: str,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        **config: Any,
    ) -> None:
        self._app = app
        self._name = name
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_factory = loop_factory or asyncio.new_event_loop
        self._config = {
            "lifespan": "off",
            "log_level": "warning",
            "access_log": False,
            "interface": "asgi3",  # a bound method: uvicorn's guess would say ASGI 2
            "proxy_headers": False,  # keep X-Forwarded-* as headers, as the tunnel sent them
            **config,
        }
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self._app, **self._config))
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sock, ready), name=self._name, daemon=True
        )
        self._thread.start()
        if not ready.wait(START_WITHIN):
            raise RuntimeError(f"the {self._name} server did not start")
        return self

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = self._loop_factory()
        self.loop = loop
        server = self._server
        assert server is not None

        async def serve() -> None:
            task = asyncio.ensure_future(server.serve(sockets=[sock]))
            while not server.started and not task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            ready.set()
            await task

        try:
            loop.run_until_complete(serve())
        finally:
            loop.close()
            sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_WITHIN)
