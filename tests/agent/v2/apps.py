"""A raw ASGI origin for the v2 handler tests (served by a real uvicorn, or called
in-process through the object bridge)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]


def _query(scope: Scope) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


class V2Origin:
    """Routes: ``/echo`` (JSON: method, path, headers, body size and SHA-256),
    ``/bytes?n=&chunk=`` (``n`` bytes of a known pattern, Content-Length unless
    ``chunked=1``), ``/status?code=``, ``/wait`` (one chunk, then until disconnect)."""

    def __init__(self) -> None:
        self.disconnected = asyncio.Event()
        self.waiting = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        path = scope["path"][len(scope.get("root_path", "")) :]
        route = getattr(self, "_" + path.strip("/").split("/")[0], self._missing)
        await route(scope, receive, send)

    async def _missing(self, scope: Scope, receive: Any, send: Any) -> None:
        await respond(send, 404, [], b"no such route")

    async def _echo(self, scope: Scope, receive: Any, send: Any) -> None:
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            body = message.get("body", b"")
            digest.update(body)
            size += len(body)
            if not message.get("more_body"):
                break
        answer = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": [[n.decode(), v.decode()] for n, v in scope["headers"]],
            "size": size,
            "sha256": digest.hexdigest(),
        }
        await respond(send, 200, [(b"content-type", b"application/json")], json.dumps(answer))

    async def _bytes(self, scope: Scope, receive: Any, send: Any) -> None:
        query = _query(scope)
        total, step = int(query["n"]), int(query.get("chunk", "65536"))
        headers = [(b"content-type", b"application/octet-stream")]
        if query.get("chunked") != "1":
            headers.append((b"content-length", str(total).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for start in range(0, total, step):
            part = pattern(start, min(step, total - start))
            more = start + step < total
            await send({"type": "http.response.body", "body": part, "more_body": more})
        if total == 0:
            await send({"type": "http.response.body", "body": b""})

    async def _status(self, scope: Scope, receive: Any, send: Any) -> None:
        code = int(_query(scope)["code"])
        await send({"type": "http.response.start", "status": code, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def _wait(self, scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
        self.waiting.set()
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected.set()


async def respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: Any) -> None:
    data = body.encode() if isinstance(body, str) else body
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def pattern(start: int, size: int) -> bytes:
    """Bytes ``start .. start+size`` of an endless, position-dependent pattern."""
    block = bytes(range(251)) * 300  # 251: prime, so chunk edges never line up with it
    out = bytearray()
    pos = start
    while len(out) < size:
        offset = pos % 251
        piece = block[offset : offset + min(size - len(out), len(block) - offset)]
        out += piece
        pos += len(piece)
    return bytes(out)
