"""The benchmark's origin: a raw ASGI app on uvicorn (uvloop, httptools, no access log).

Every path under test forwards to this one server, so the figures differ only by the
path. Routes:

* ``GET /small``: a fixed body of :data:`SMALL_SIZE` bytes.
* ``POST /echo``: the request body streamed back chunk by chunk as it arrives.
* ``GET /sse``: :data:`SSE_EVENTS` server-sent events :data:`SSE_PERIOD` seconds apart,
  the first one at once.
* ``GET /big``: :data:`BIG_SIZE` bytes (``?size=N`` for another size, at most
  :data:`MAX_BIG_SIZE`), written from one reused buffer so the origin allocates nothing
  per chunk.

Run: ``python -m bench.origin --fd N`` (a listening socket inherited from the harness)
or ``--port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SMALL_SIZE: Final = 100
SMALL_BODY: Final = b"x" * (SMALL_SIZE - 1) + b"\n"
SSE_EVENTS: Final = 20
SSE_PERIOD: Final = 0.050
BIG_SIZE: Final = 64 * 1024 * 1024
#: Largest ``/big?size=``: the 1 GiB download of the scale benchmark, with room to spare.
MAX_BIG_SIZE: Final = 4 * 1024 * 1024 * 1024
#: One buffer, written again and again; uvicorn waits for the socket to drain between
#: writes (its flow control), so memory stays at one chunk whatever the size.
BIG_CHUNK: Final = b"\xa5" * (256 * 1024)


def _head(status: int, headers: list[tuple[bytes, bytes]]) -> Message:
    return {"type": "http.response.start", "status": status, "headers": headers}


async def _small(send: Send) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % SMALL_SIZE)]
    await send(_head(200, headers))
    await send({"type": "http.response.body", "body": SMALL_BODY})


async def _echo(receive: Receive, send: Send) -> None:
    await send(_head(200, [(b"content-type", b"application/octet-stream")]))
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if body or not more:
            await send({"type": "http.response.body", "body": body, "more_body": more})
        if not more:
            return


async def _sse(send: Send) -> None:
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send(_head(200, headers))
    for i in range(SSE_EVENTS):
        if i:
            await asyncio.sleep(SSE_PERIOD)
        event = b"id: %d\ndata: event %d\n\n" % (i, i)
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def _size(query: bytes) -> int:
    values = urllib.parse.parse_qs(query.decode("latin-1")).get("size", [])
    try:
        return min(max(int(values[0]), 0), MAX_BIG_SIZE) if values else BIG_SIZE
    except ValueError:
        return BIG_SIZE


async def _big(scope: Scope, send: Send) -> None:
    size = _size(scope.get("query_string", b""))
    headers = [(b"content-type", b"application/octet-stream")]
    await send(_head(200, [*headers, (b"content-length", b"%d" % size)]))
    chunk, left = BIG_CHUNK, size
    while left > len(chunk):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        left -= len(chunk)
    await send({"type": "http.response.body", "body": chunk[:left]})


async def _not_found(send: Send) -> None:
    await send(_head(404, [(b"content-length", b"0")]))
    await send({"type": "http.response.body", "body": b""})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return  # lifespan is off; nothing else is served
    path, method = scope["path"], scope["method"]
    if path == "/small" and method == "GET":
        await _small(send)
    elif path == "/echo" and method == "POST":
        await _echo(receive, send)
    elif path == "/sse" and method == "GET":
        await _sse(send)
    elif path == "/big" and method == "GET":
        await _big(scope, send)
    else:
        await _not_found(send)


def main() -> None:
    parser = argparse.ArgumentParser(description="benchmark origin")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--fd", type=int, help="inherited listening socket")
    group.add_argument("--port", type=int, help="listen on 127.0.0.1:PORT")
    args = parser.parse_args()
    # uvicorn defaults written down: keep-alive 5 s (wrk keeps every connection busy),
    # backlog 2048, no concurrency limit.
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        sock = socket.create_server(("127.0.0.1", args.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
