"""A local target for the inspector's tests: a real uvicorn on 127.0.0.1 (in a thread)
that echoes what it got as JSON, answers ``/sse`` with three events, ``/bin`` with
binary bytes and ``/a2a`` with an A2A task's event stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support.threaded_uvicorn import ThreadedUvicorn

#: What the server was sent, one dict per request (appended from its thread).
SEEN: list[dict[str, Any]] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/sse":
        await sse(send)
        return
    if scope["path"] == "/a2a":
        await a2a_stream(send, json.loads(body))
        return
    if scope["path"] == "/bin":
        await answer(send, bytes(range(256)) * 8, b"application/octet-stream")
        return
    doc = {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode(),
        "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
        "body": body.decode("utf-8", "replace"),
    }
    SEEN.append(doc)
    await answer(send, json.dumps(doc).encode(), b"application/json", [(b"set-cookie", b"s=1")])


async def answer(
    send: Any, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type), *(extra or [])]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def sse(send: Any) -> None:
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for n in range(3):
        event = f'event: tick\ndata: {{"n": {n}}}\n\n'.encode()
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await asyncio.sleep(0.05)
    await send({"type": "http.response.body", "body": b""})


class Local(ThreadedUvicorn):
    def __init__(self) -> None:
        super().__init__(app, "inspect-local")


A2A_EVENTS = (
    {"task": {"id": "task-1", "contextId": "ctx-1", "status": {"state": "TASK_STATE_SUBMITTED"}}},
    {"statusUpdate": {"taskId": "task-1", "contextId": "ctx-1",
                      "status": {"state": "TASK_STATE_WORKING"}}},
    {"artifactUpdate": {"taskId": "task-1", "contextId": "ctx-1",
                        "artifact": {"artifactId": "result", "parts": [{"text": "done"}]}}},
    {"statusUpdate": {"taskId": "task-1", "contextId": "ctx-1",
                      "status": {"state": "TASK_STATE_COMPLETED"}}},
)  # fmt: skip


async def a2a_stream(send: Any, call: dict[str, Any]) -> None:
    """``SendStreamingMessage`` as a2a-sdk answers it: one JSON-RPC response per event."""
    headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for result in A2A_EVENTS:
        doc = {"jsonrpc": "2.0", "id": call.get("id"), "result": result}
        data = b"data: " + json.dumps(doc).encode() + b"\r\n\r\n"
        await send({"type": "http.response.body", "body": data, "more_body": True})
        await asyncio.sleep(0.02)
    await send({"type": "http.response.body", "body": b""})
