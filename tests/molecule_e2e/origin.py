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
from collections import Counter
from typing import Any, Final

from examples.a2a_agent import Settings, build_app
from tests.support.threaded_uvicorn import ThreadedUvicorn

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


class A2AOrigin(ThreadedUvicorn):
    def __init__(self) -> None:
        self.recorder = Recorder(build_app(Settings(secret_names=("DEMO_SECRET",))))
        # Lifespan on: its shutdown closes the runners of tasks left waiting for input,
        # which would otherwise be garbage-collected after their loop is gone.
        super().__init__(self.recorder, "a2a-origin", lifespan="on")


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
