"""The WebSocket benchmark's origin: every message echoed back as it came.

Two forms of the same echo, so that the figures differ only by the path:

* ``python -m bench.wsorigin --fd N``: a websockets server (asyncio on uvloop, deflate
  off) on a listening socket inherited from the harness, for the direct path and the
  pass-through tunnel. A plain ``GET`` (the harness's readiness probe) gets ``200 ok``.
* ``bench.wsorigin:app``: a raw ASGI app for ``edge-agent http --app`` (``GET /small``
  answers ``ok``; a WebSocket on any path echoes).
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

Message = MutableMapping[str, Any]

#: Largest message echoed (the benchmark's are small; a bigger one closes with 1009).
MAX_MESSAGE: Final = 1024 * 1024


async def _echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


def _probe(connection: ServerConnection, request: Request) -> Response | None:
    """A request without ``Upgrade`` is the readiness probe: answer it in plain HTTP."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return connection.respond(200, "ok\n")
    return None


async def _serve(sock: socket.socket) -> None:
    async with serve(
        _echo,
        sock=sock,
        process_request=_probe,
        compression=None,  # deflate off, as on the tunnel
        max_size=MAX_MESSAGE,
        ping_interval=None,  # no keepalive traffic inside a measurement
    ) as server:
        await server.serve_forever()


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok\n"})
    elif scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({**message, "type": "websocket.send"})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wsorigin")
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening socket")
    args = parser.parse_args()
    sock = socket.socket(fileno=args.fd)
    uvloop.run(_serve(sock))


if __name__ == "__main__":
    main()
