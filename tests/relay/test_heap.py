"""Forwarded requests leave no cyclic garbage behind (tunnel/heap.py counts on it)."""

from __future__ import annotations

import gc

from relay.exchange import Exchange, ResponseWatch
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
