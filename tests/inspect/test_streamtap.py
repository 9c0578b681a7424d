"""The inspector on the tunnel's streams (TappedTarget): it sees each exchange as the raw
bytes that crossed the tunnel, changes nothing, and marks a re-send that the
de-duplication answered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from edge_agent.bridge import ObjectBridge
from edge_agent.inspect.store import Store
from edge_agent.inspect.streamtap import TappedTarget
from edge_agent.molecule.dedup import DedupTarget
from edge_agent.tunnel import TunnelClient
from tests.agent.conftest import FAST, TOKEN
from tests.agent.fake_relay import FakeRelay
from tests.inspect.test_tap import Echo, a2a_call


@pytest.fixture
async def relay() -> AsyncIterator[FakeRelay]:
    fake = await FakeRelay(tokens={TOKEN: "demo"}).start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_streams_are_seen_as_bytes_and_resends_marked(relay: FakeRelay, store: Store) -> None:
    dedup = DedupTarget(Echo(headers=[("Content-Type", "application/json")]))
    client = TunnelClient(relay.url, TOKEN, "demo", TappedTarget(ObjectBridge(dedup)), policy=FAST)
    run = asyncio.create_task(client.run())
    try:
        session = await relay.session()
        headers = [("content-type", "application/json")]
        answers = [
            await session.request("POST", "/a2a", headers, a2a_call("m-7")) for _ in range(2)
        ]
    finally:
        client.stop()
        await asyncio.wait_for(run, 10)
        await dedup.aclose()
    assert [head.status for head, _ in answers] == [200, 200]
    assert json.loads(answers[0][1]) == json.loads(answers[1][1])  # the cached answer
    resend, first = store.newest_first()
    assert not first.duplicate and resend.duplicate
    assert first.a2a is not None and first.a2a["messageId"] == "m-7"
    assert (first.method, first.path, first.status) == ("POST", "/a2a", 200)
    assert first.request.complete and json.loads(first.request.body)["id"] is not None
