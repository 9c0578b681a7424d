"""Forwarded requests leave no cyclic garbage behind (tunnel/heap.py counts on it)."""

from __future__ import annotations

import asyncio
import gc

from relay.exchange import Exchange, ResponseWatch
from relay.h1.reader import RequestReader
from relay.public import PublicConnection
from tests.relay.conftest import RunningRelay
from tests.relay.fake_agent import FakeAgent, FakeRequest
from tunnel import Stream


async def answer(request: FakeRequest) -> None:
    body = await request.read_body()
    await request.respond(200, [("x-len", str(len(body)))])
    await request.send(b"ok", end=True)


async def test_exchanges_and_streams_are_freed_without_the_cyclic_collector(
    relay: RunningRelay,
) -> None:
    async with FakeAgent(relay.url, answer, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            await client.get("/a/demo/warm")
            gc.collect()
            gc.disable()
            try:
                for i in range(20):
                    r = await client.post(f"/a/demo/{i}", content=b"x" * i)
                    assert r.status_code == 200
                    assert r.content == b"ok"
                gc.set_debug(gc.DEBUG_SAVEALL)
                gc.collect()
                ours = [o for o in gc.garbage if isinstance(o, Exchange | ResponseWatch | Stream)]
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
    assert ours == []


async def test_refused_heads_leave_no_connection_behind(relay: RunningRelay) -> None:
    """A 431 (or 400) must not leave the connection and its buffers in a cycle with the
    error's traceback: a flood of bad heads held tens of MiB until a full collection."""
    port = relay.server.port
    gc.collect()
    gc.disable()
    try:
        for i in range(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if i % 2:
                writer.write(b"GET /a/demo/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000)
            else:
                writer.write(b"GET /a/demo/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            answer = await reader.read()
            assert answer.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 ")), answer[:40]
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.1)  # the relay's side of the last connection is gone
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = [o for o in gc.garbage if isinstance(o, PublicConnection | RequestReader)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert ours == []
