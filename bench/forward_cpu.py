"""CPU per small request of the agent's v2 forwarding path (edge_agent.forward).

    python -m bench.forward_cpu [--requests 5000] [--concurrency 1] [--record]

A raw keep-alive HTTP/1.1 server runs in a child process (its CPU is not counted).
This process, on uvloop, pushes small GETs through :class:`HttpForwarder` handlers
driven by a lean stand-in for the tunnel runtime's stream, and reports the process
CPU (user + system) per request. For comparison it runs the same loop with a bare
asyncio Protocol that writes the request and waits for the response bytes: the floor
that any forwarder pays for the two socket calls and the loop turn. Last, the
forwarder's own Python work without any socket (a transport whose write does nothing,
the response fed to the connection directly), which is the steadiest figure on a
noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import socket
import time
from collections.abc import Callable
from typing import cast

import uvloop

from edge_agent.forward import ExchangeRecord, HttpForwarder, TargetConnection
from wire import ErrorCode

REQUEST = b"GET /small HTTP/1.1\r\nHost: public.example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n"
    b"date: Wed, 02 Dec 2026 06:00:00 GMT\r\nserver: raw\r\n\r\nHello, world!"
)


class _Responder(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(RESPONSE * n)


def _serve(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Responder, sock=sock)
        await server.serve_forever()

    uvloop.run(main())


class LeanStream:
    """The runtime's side of StreamPort, as cheap as it can be."""

    __slots__ = ("buffered", "done", "sid")

    def __init__(self, sid: int, done: Callable[[], None]) -> None:
        self.sid = sid
        self.buffered = 0
        self.done = done

    def write(self, data: bytes) -> None:
        pass

    def end(self, close: bool = False) -> None:
        self.done()

    def reset(self, code: ErrorCode, reason: str = "", after_queued: bool = False) -> None:
        raise RuntimeError(f"reset {code.name}: {reason}")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _through_forwarder(port: int, requests: int, concurrency: int, record: bool) -> float:
    records: list[ExchangeRecord] = []
    fwd = HttpForwarder(f"127.0.0.1:{port}", on_done=records.append if record else None)
    loop = asyncio.get_running_loop()

    async def worker(count: int) -> None:
        for i in range(count):
            waiter: asyncio.Future[None] = loop.create_future()
            stream = LeanStream(i, functools.partial(waiter.set_result, None))
            handler = fwd.handler(stream)
            handler.data(REQUEST)
            handler.end(False)
            await waiter
            records.clear()

    await asyncio.gather(*(worker(50) for _ in range(concurrency)))  # warm the pool
    started = time.process_time()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    cpu = time.process_time() - started
    fwd.close()
    return cpu / requests * 1e6


class _Bare(asyncio.Protocol):
    waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is not None:
            self.waiter.set_result(None)


async def _bare(port: int, requests: int, concurrency: int) -> float:
    loop = asyncio.get_running_loop()

    async def worker(count: int) -> None:
        _, proto = await loop.create_connection(_Bare, "127.0.0.1", port)
        for _ in range(count):
            proto.waiter = loop.create_future()
            proto.transport.write(REQUEST)
            await proto.waiter
        proto.transport.close()

    started = time.process_time()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    return (time.process_time() - started) / requests * 1e6


class _NullTransport:
    def write(self, data: bytes) -> None:
        pass


async def _python_path(requests: int, record: bool) -> float:
    fwd = HttpForwarder("127.0.0.1:9", on_done=(lambda r: None) if record else None)
    conn = TargetConnection(fwd)
    conn.transport = cast(asyncio.Transport, _NullTransport())
    fwd.release(conn)
    started = time.process_time()
    for i in range(requests):
        handler = fwd.handler(LeanStream(i, lambda: None))
        handler.data(REQUEST)
        handler.end(False)
        conn.data_received(RESPONSE)
    return (time.process_time() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--record", action="store_true", help="with an on_done callback")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,), daemon=True)
    server.start()
    try:
        for _ in range(args.rounds):
            fwd = uvloop.run(_through_forwarder(port, args.requests, args.concurrency, args.record))
            bare = uvloop.run(_bare(port, args.requests, args.concurrency))
            print(
                f"c={args.concurrency} n={args.requests}: forwarder {fwd:.1f} us/request, "
                f"bare socket loop {bare:.1f} us/request"
            )
        python = min(uvloop.run(_python_path(20 * args.requests, args.record)) for _ in range(3))
        print(f"forwarder's Python path alone (no sockets, best of 3): {python:.2f} us/request")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
