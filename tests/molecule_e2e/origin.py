"""The local A2A server behind the agent: the project's example agent
(:mod:`examples.a2a_agent`), on a real uvicorn in a thread of the test process.

A thin ASGI wrapper in front of it records every JSON-RPC message that reaches it (by
``params.message.messageId``), so a test can count deliveries, and holds a message
whose metadata says ``{"delay": S}`` for S seconds before the example answers it, so
the platform's proxy times out on it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import Counter
from typing import Any, Final

import uvicorn

from examples.a2a_agent import Settings, build_app

#: Longest delay a message may ask for (a failed test never leaves a request hanging).
MAX_DELAY: Final = 30.0

Scope = dict[str, Any]


class Recorder:
    """ASGI middleware: counts messages by id, delays the ones that ask for it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.deliveries: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        message_id, delay = _inspect(body)
        if message_id:
            self.deliveries[message_id] += 1
        if delay:
            await asyncio.sleep(min(delay, MAX_DELAY))
        await self.app(scope, _replay(body, receive), send)
        if message_id:
            self.completed[message_id] += 1


class A2AOrigin:
    def __init__(self) -> None:
        self.recorder = Recorder(build_app(Settings(secret_names=("DEMO_SECRET",))))
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> A2AOrigin:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.recorder,
            lifespan="off",
            log_level="warning",
            access_log=False,
            interface="asgi3",
            proxy_headers=False,
        )
        self._server = uvicorn.Server(config)
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sock, ready), name="a2a-origin", daemon=True
        )
        self._thread.start()
        if not ready.wait(20):
            raise RuntimeError("the A2A origin did not start")
        return self

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        server = self._server
        assert server is not None

        async def serve() -> None:
            task = asyncio.ensure_future(server.serve(sockets=[sock]))
            while not server.started and not task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            ready.set()
            await task

        try:
            asyncio.run(serve())
        finally:
            sock.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _inspect(body: bytes) -> tuple[str | None, float]:
    try:
        message = json.loads(body)["params"]["message"]
    except (ValueError, KeyError, TypeError):
        return None, 0.0
    delay = (message.get("metadata") or {}).get("delay", 0)
    return message.get("messageId"), float(delay)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return dict(await receive())

    return replayed
