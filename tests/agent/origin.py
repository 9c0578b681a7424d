"""Local origin servers for the agent tests: a raw ASGI app served by a real uvicorn on
an ephemeral 127.0.0.1 port, and a raw TCP server that answers canned bytes (for
responses uvicorn would never produce: hop-by-hop headers, a body cut short)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import uvicorn

Scope = dict[str, Any]

GZIPPED = gzip.compress(b"hello, compressed world\n" * 100)


@dataclass
class OriginState:
    """What the origin saw; the tests share the event loop with uvicorn, so they can
    watch and steer it directly."""

    disconnects: list[str] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    received: int = 0  # request body bytes read by /slow-upload so far
    written: int = 0  # response bytes sent by /download so far


class OriginApp:
    def __init__(self) -> None:
        self.state = OriginState()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        name = "_" + scope["path"].strip("/").split("/")[0].replace("-", "_")
        route = getattr(self, name, None)
        if route is None:
            await _send_all(send, 404, [(b"content-type", b"text/plain")], b"no such route")
            return
        await route(scope, receive, send)

    async def _echo(self, scope: Scope, receive: Any, send: Any) -> None:
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        answer = {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query_string": scope["query_string"].decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
            "size": size,
            "sha256": digest.hexdigest(),
        }
        headers = [
            (b"content-type", b"application/json"),
            (b"set-cookie", b"a=1; Path=/"),
            (b"set-cookie", b"b=2; Path=/"),
            (b"x-multi", b"one"),
            (b"x-multi", b"two"),
        ]
        await _send_all(send, 201, headers, json.dumps(answer).encode())

    async def _gzip(self, scope: Scope, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-encoding", b"gzip")]
        await _send_all(send, 200, headers, GZIPPED)

    async def _sse(self, scope: Scope, receive: Any, send: Any) -> None:
        count = int(parse_qs(scope["query_string"].decode()).get("n", ["5"])[0])
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(count):
            event = f"id: {i}\ndata: event {i}\n\n".encode()
            await send({"type": "http.response.body", "body": event, "more_body": True})
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b""})

    async def _slow_upload(self, scope: Scope, receive: Any, send: Any) -> None:
        """Reads one chunk, waits for ``state.release``, then reads the rest."""
        digest = hashlib.sha256()
        first = True
        while True:
            message = await receive()
            body = message.get("body", b"")
            digest.update(body)
            self.state.received += len(body)
            if first:
                first = False
                self.state.started.set()
                await self.state.release.wait()
            if not message.get("more_body"):
                break
        answer = json.dumps({"size": self.state.received, "sha256": digest.hexdigest()})
        await _send_all(send, 200, [(b"content-type", b"application/json")], answer.encode())

    async def _download(self, scope: Scope, receive: Any, send: Any) -> None:
        total = int(parse_qs(scope["query_string"].decode())["n"][0])
        chunk = b"x" * 65536
        headers = [(b"content-length", str(total).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        while self.state.written < total:
            part = chunk[: total - self.state.written]
            self.state.written += len(part)
            more = self.state.written < total
            await send({"type": "http.response.body", "body": part, "more_body": more})

    async def _upload_watch(self, scope: Scope, receive: Any, send: Any) -> None:
        """Reads the body; records whether it ended cleanly or the client went away."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.state.disconnects.append("upload")
                self.state.disconnected.set()
                return
            self.state.received += len(message.get("body", b""))
            self.state.started.set()
            if not message.get("more_body"):
                self.state.disconnects.append("complete")
                self.state.disconnected.set()
                await _send_all(send, 200, [], b"got it")
                return

    async def _hang(self, scope: Scope, receive: Any, send: Any) -> None:
        """Streams a head and one chunk, then waits for the client to go away."""
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"waiting\n", "more_body": True})
        self.state.started.set()
        while (await receive())["type"] != "http.disconnect":
            pass
        self.state.disconnects.append(scope["path"])
        self.state.disconnected.set()


async def _send_all(
    send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def run_uvicorn(app: Any, tls: tuple[str, str] | None = None) -> AsyncIterator[str]:
    """Serve ``app`` on an ephemeral port (https with ``tls`` = (cert, key) files);
    yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for this)
            await asyncio.sleep(0.01)
        yield f"{'https' if tls else 'http'}://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@asynccontextmanager
async def canned_server(response: bytes) -> AsyncIterator[str]:
    """A TCP server that reads a request head, writes ``response`` and closes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
