"""An ASGI app the agent serves in-process (``edge-agent http --app tests.e2e.asgi_app:app``).

It lives in the agent's process, so it reports what it saw through the tunnel itself:

* ``/hold?key=K[&head=0]``: (head and one chunk, then) waits for ``http.disconnect``;
* ``/seen?key=K``: JSON ``{"started": bool, "disconnected": bool}`` for request K;
* anything else: ``hello from <path>``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

#: Upper bound of a held request, in seconds (a failed test ends it).
MAX_WAIT = 120.0

_started: set[str] = set()
_disconnected: set[str] = set()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"].removeprefix(scope.get("root_path", ""))
    if path == "/hold":
        await _hold(query, receive, send)
    elif path == "/seen":
        key = query["key"]
        seen = {"started": key in _started, "disconnected": key in _disconnected}
        await _answer(send, json.dumps(seen).encode(), b"application/json")
    else:
        await _answer(send, f"hello from {path}".encode(), b"text/plain")


async def _hold(query: dict[str, str], receive: Any, send: Any) -> None:
    key = query["key"]
    if query.get("head", "1") == "1":
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"holding\n", "more_body": True})
    _started.add(key)
    async with asyncio.timeout(MAX_WAIT):
        while (await receive())["type"] != "http.disconnect":
            pass
    _disconnected.add(key)


async def _answer(send: Any, body: bytes, kind: bytes) -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
