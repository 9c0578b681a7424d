"""The origin server behind the tunnel: a raw ASGI app on a real uvicorn in a thread.

It runs on its own event loop in a background thread of the test process, so tests
(on pytest's loop) can both call it through the relay and watch what it saw: requests
recorded by key, disconnects with their time, bytes hashed. Steering crosses threads
only through :meth:`Origin.release` (``call_soon_threadsafe``) and plain dict/list
updates (atomic under the GIL). Every wait inside the origin is bounded, so a failed
test never leaves a request hanging.

Routes (the first path segment; query parameters in brackets):

* ``/`` and ``/echo[?status=N]``: reads the whole body, answers JSON (method, raw path, query,
  headers, size, sha256) with duplicate Set-Cookie and hop-by-hop response headers;
* ``/gzip``: a gzip body with ``Content-Encoding: gzip`` (bytes must pass untouched);
* ``/bytes?n=N[&chunked=1]``: ``N`` pattern bytes (:func:`pattern`);
* ``/sink?key=K``: hashes an upload as it streams in; records size and sha256 under K;
* ``/events?key=K&n=N[&gap=S][&chunked=1]``: SSE (or plain chunks); after event i it
  waits for ``release(K/i)`` or ``gap`` seconds, recording when each event was written;
* ``/hold?key=K[&head=0]``: (head and one chunk, then) waits for the caller to go away;
* ``/slow?key=K[&n=N]``: counts the request in ``hits``, waits for ``release(K)``, then
  answers ``done`` (or N pattern bytes);
* ``/fail?mode=length|chunked``: head, part of the body, then the app fails;
* ``/nohead?s=S``: answers only after ``S`` seconds;
* ``/barrier?key=K&n=N``: holds each request until N are in flight at once.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import parse_qs

from tests.support.threaded_uvicorn import ThreadedUvicorn

Scope = dict[str, Any]
Receive = Any
Send = Any

#: Upper bound of every wait inside the origin, in seconds (a failed test ends it).
MAX_WAIT: Final = 120.0

#: Chunk size of generated bodies.
CHUNK: Final = 64 * 1024

_BLOCK: Final = random.Random(20240601).randbytes(CHUNK)

GZIPPED: Final = gzip.compress(b"molecule-edge passes compressed bytes as they are\n" * 200)


def pattern(total: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """``total`` bytes of incompressible data, each chunk tagged with its index (so a
    lost, repeated or reordered chunk changes the hash). Nothing is kept in memory."""
    index = 0
    sent = 0
    while sent < total:
        size = min(chunk, total - sent)
        piece = index.to_bytes(8, "big") + _BLOCK[8:chunk]
        yield piece[:size]
        sent += size
        index += 1


def pattern_digest(total: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern(total):
        digest.update(piece)
    return digest.hexdigest()


class OnPurpose(RuntimeError):
    """A failure the origin raises on purpose (not logged by its uvicorn)."""


class _QuietOnPurpose(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], OnPurpose))


logging.getLogger("uvicorn.error").addFilter(_QuietOnPurpose())


def _uvloop() -> asyncio.AbstractEventLoop:
    import uvloop

    return uvloop.new_event_loop()


class Origin(ThreadedUvicorn):
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is its base URL;
    ``loop`` (set once started) runs the app."""

    def __init__(self) -> None:
        self.requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.started: dict[str, float] = {}  # key -> when the request reached the app
        self.disconnected: dict[str, float] = {}  # key -> when the app saw http.disconnect
        self.completed: dict[str, float] = {}  # key -> when the app finished its response
        self.uploads: dict[str, tuple[int, str]] = {}  # key -> (size, sha256) received
        self.sent: dict[str, tuple[int, str]] = {}  # key -> (size, sha256) sent by /bytes
        self.event_times: dict[str, list[float]] = defaultdict(list)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.hits: dict[str, int] = defaultdict(int)  # key -> requests /slow saw
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self._gates: dict[str, asyncio.Event] = {}
        super().__init__(
            self.app,
            "e2e-origin",
            loop_factory=_uvloop,
            http="httptools",
            backlog=4096,  # 1,000 concurrent connections from the agent at once
            timeout_keep_alive=5,  # uvicorn's default; the agent's pool closes at 4 s
        )

    # -- steering (any thread) -----------------------------------------------------------

    def release(self, key: str) -> None:
        """Let the request waiting on gate ``key`` go on."""
        gate = self._gates.setdefault(key, asyncio.Event())
        assert self.loop is not None
        self.loop.call_soon_threadsafe(gate.set)

    async def _gate(self, key: str, within: float = MAX_WAIT) -> bool:
        gate = self._gates.setdefault(key, asyncio.Event())
        try:
            async with asyncio.timeout(within):
                await gate.wait()
        except TimeoutError:
            return False
        return True

    # -- the ASGI app (origin thread) ----------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await _websocket_echo(receive, send)
            return
        assert scope["type"] == "http"
        name = scope["path"].strip("/").split("/")[0]
        route = getattr(self, f"_r_{name}", None)
        if route is None:
            await _answer(send, 404, [(b"content-type", b"text/plain")], b"no such route")
            return
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
        await route(scope, receive, send, query)

    async def _r_echo(self, scope: Scope, receive: Receive, send: Send, q: dict[str, str]) -> None:
        size, digest, _gone = await _drain_body(receive)
        record = {
            "method": scope["method"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query_string": scope["query_string"].decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
            "size": size,
            "sha256": digest,
        }
        self.requests[q.get("key", "")].append(record)
        headers = [
            (b"content-type", b"application/json"),
            (b"set-cookie", b"first=1; Path=/"),
            (b"x-order", b"a"),
            (b"set-cookie", b"second=2; Path=/; HttpOnly"),
            (b"x-order", b"b"),
            (b"set-cookie", b"third=3"),
            # Hop-by-hop: the forwarder must drop these and the one Connection names.
            (b"connection", b"x-resp-hop"),
            (b"x-resp-hop", b"must not arrive"),
            (b"keep-alive", b"timeout=99"),
            (b"proxy-connection", b"keep-alive"),
        ]
        body = b"" if scope["method"] == "HEAD" else json.dumps(record).encode()
        length = str(len(json.dumps(record).encode())).encode()
        status = int(q.get("status", "200"))
        if status in (204, 304):
            body = b""
        else:
            headers.append((b"content-length", length))
        await _answer(send, status, headers, body)

    _r_ = _r_echo  # the tunnel's root, "/a/<name>/" or "/a/<name>"

    async def _r_gzip(self, scope: Scope, receive: Receive, send: Send, q: dict[str, str]) -> None:
        headers = [
            (b"content-type", b"text/plain"),
            (b"content-encoding", b"gzip"),
            (b"content-length", str(len(GZIPPED)).encode()),
        ]
        await _answer(send, 200, headers, GZIPPED)

    async def _r_bytes(self, scope: Scope, receive: Receive, send: Send, q: dict[str, str]) -> None:
        total = int(q["n"])
        headers = [(b"content-type", b"application/octet-stream")]
        if q.get("chunked") != "1":
            headers.append((b"content-length", str(total).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        digest = hashlib.sha256()
        for piece in pattern(total):
            digest.update(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        if "key" in q:
            self.sent[q["key"]] = (total, digest.hexdigest())

    async def _r_sink(self, scope: Scope, receive: Receive, send: Send, q: dict[str, str]) -> None:
        key = q.get("key", "")
        self.started[key] = time.monotonic()
        size, digest, gone = await _drain_body(receive)
        if gone:
            self.disconnected[key] = time.monotonic()
            return
        self.uploads[key] = (size, digest)
        body = json.dumps({"size": size, "sha256": digest}).encode()
        await _answer(send, 200, [(b"content-type", b"application/json")], body)

    async def _r_events(
        self, scope: Scope, receive: Receive, send: Send, q: dict[str, str]
    ) -> None:
        key, count = q["key"], int(q.get("n", "3"))
        gap = float(q["gap"]) if "gap" in q else None
        await _drain_body(receive)
        kind = b"application/octet-stream" if q.get("chunked") == "1" else b"text/event-stream"
        headers = [(b"content-type", kind), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(count):
            self.event_times[key].append(time.monotonic())
            event = f"id: {i}\ndata: event {i} of {key}\n\n".encode()
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if i + 1 < count:
                if gap is not None:
                    await asyncio.sleep(gap)
                elif not await self._gate(f"{key}/{i}"):
                    return  # the test never released: cut the response
        await send({"type": "http.response.body", "body": b""})
        self.completed[key] = time.monotonic()

    async def _r_hold(self, scope: Scope, receive: Receive, send: Send, q: dict[str, str]) -> None:
        key = q["key"]
        if q.get("head", "1") == "1":
            headers = [(b"content-type", b"text/plain")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"holding\n", "more_body": True})
        self.started[key] = time.monotonic()
        try:
            async with asyncio.timeout(MAX_WAIT):
                while (await receive())["type"] != "http.disconnect":
                    pass
        except TimeoutError:
            return
        self.disconnected[key] = time.monotonic()

    async def _r_slow(self, scope: Scope, receive: Receive, send: Send, q: dict[str, str]) -> None:
        key = q["key"]
        await _drain_body(receive)
        self.started[key] = time.monotonic()
        self.hits[key] += 1
        released = await self._gate(key)
        if not released:
            await _answer(send, 500, [(b"content-type", b"text/plain")], b"never released")
            return
        total = int(q.get("n", "0"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in pattern(total) if total else [b"done"]:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        self.completed[key] = time.monotonic()

    async def _r_fail(self, scope: Scope, receive: Receive, send: Send, q: dict[str, str]) -> None:
        headers = [(b"content-type", b"application/octet-stream")]
        if q.get("mode") == "length":
            headers.append((b"content-length", b"1000000"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
        await asyncio.sleep(0.2)  # the first bytes reach the caller before the failure
        raise OnPurpose("origin failed mid-body")

    async def _r_nohead(
        self, scope: Scope, receive: Receive, send: Send, q: dict[str, str]
    ) -> None:
        key = q.get("key", "nohead")
        self.started[key] = time.monotonic()
        try:
            async with asyncio.timeout(float(q.get("s", "5"))):
                while (await receive())["type"] != "http.disconnect":
                    pass
            self.disconnected[key] = time.monotonic()
            return
        except TimeoutError:
            pass
        await _answer(send, 200, [], b"too late")

    async def _r_barrier(
        self, scope: Scope, receive: Receive, send: Send, q: dict[str, str]
    ) -> None:
        key, wanted = q["key"], int(q["n"])
        self.in_flight[key] += 1
        self.max_in_flight[key] = max(self.max_in_flight[key], self.in_flight[key])
        if self.in_flight[key] >= wanted:
            self._gates.setdefault(key, asyncio.Event()).set()
        released = await self._gate(key, within=float(q.get("within", "60")))
        await _answer(send, 200 if released else 503, [], b"ok" if released else b"timeout")
        self.in_flight[key] -= 1


async def _drain_body(receive: Receive) -> tuple[int, str, bool]:
    """Read the request body: (size, sha256 hex, whether the caller went away first)."""
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return size, digest.hexdigest(), True
        body = message.get("body", b"")
        size += len(body)
        digest.update(body)
        if not message.get("more_body", False):
            return size, digest.hexdigest(), False


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _websocket_echo(receive: Receive, send: Send) -> None:
    """Any path as a WebSocket: every message back as it came, until the caller closes."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
