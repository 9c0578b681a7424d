"""Streaming through the agent: SSE arrives incrementally, bodies are flow-controlled."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
from collections.abc import AsyncIterator

from edge_agent.forward import HttpForwarder
from tests.agent.conftest import TOKEN, AgentRun, make_agent, stop_agent
from tests.agent.fake_relay import FakeRelay
from tests.agent.origin import OriginApp

MiB = 1024 * 1024


async def _events(relay: FakeRelay, method: str) -> list[tuple[bytes, float]]:
    session = await relay.session()
    body = b'{"jsonrpc": "2.0"}' if method == "POST" else None
    stream = await session.open(method, "/sse?n=5", [("Accept", "text/event-stream")], body)
    head = await stream.response()
    assert head.status == 200
    arrivals = []
    while True:
        data, end, when = await stream.read()
        if data:
            arrivals.append((data, when))
        if end:
            return arrivals


async def test_sse_events_arrive_one_by_one(relay: FakeRelay, agent: AgentRun) -> None:
    for method in ("GET", "POST"):
        arrivals = await _events(relay, method)
        assert [data for data, _ in arrivals] == [
            f"id: {i}\ndata: event {i}\n\n".encode() for i in range(5)
        ]
        gaps = [b - a for (_, a), (_, b) in itertools.pairwise(arrivals)]
        # The origin waits 200 ms between events; buffering would bunch them up.
        assert all(gap > 0.1 for gap in gaps), gaps


async def _random_chunks(total: int, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    block = os.urandom(MiB)
    sent = 0
    while sent < total:
        digest.update(block)
        sent += len(block)
        yield block


async def test_upload_is_flow_controlled(
    relay: FakeRelay, agent: AgentRun, origin_app: OriginApp
) -> None:
    """A 64 MiB upload to a target that stops reading: the relay is held back by the
    agent's window (the agent does not buffer the body), and everything arrives later."""
    session = await relay.session()
    total, digest = 64 * MiB, hashlib.sha256()
    headers = [("Content-Length", str(total))]
    stream = await session.open("POST", "/slow-upload", headers, _random_chunks(total, digest))
    await asyncio.wait_for(origin_app.state.started.wait(), 10)
    await asyncio.sleep(1.0)
    stalled_at = stream.uploaded
    await asyncio.sleep(0.5)
    assert stream.uploaded == stalled_at, "the relay kept sending to a stalled target"
    # Window (256 KiB) + socket and HTTP client buffers; far below the body size.
    assert stalled_at < 16 * MiB, stalled_at
    origin_app.state.release.set()
    head = await stream.response(within=60)
    answer = json.loads(await stream.body(within=60))
    assert head.status == 200
    assert answer == {"size": total, "sha256": digest.hexdigest()}


async def test_download_waits_for_credit(
    relay: FakeRelay, agent: AgentRun, origin_app: OriginApp
) -> None:
    """A relay that stops consuming stops the agent, which stops reading the origin."""
    session = await relay.session()
    total = 64 * MiB
    stream = await session.open("GET", f"/download?n={total}")
    head = await stream.response()
    assert head.status == 200
    await asyncio.sleep(1.0)  # nothing consumed: no credit goes back to the agent
    written = origin_app.state.written
    assert written < 16 * MiB, written
    received = 0
    while True:
        data, end, _ = await stream.read(within=30)
        received += len(data)
        if end:
            break
    assert received == total == origin_app.state.written


async def test_many_concurrent_streams_and_a_stalled_reader(origin: str) -> None:
    """300 requests at once on one tunnel complete while another stream's reader is
    stalled with a full window: the agent's reader never waits on a single stream."""
    relay = await FakeRelay(tokens={TOKEN: "demo"}, max_streams=1024).start()
    target = HttpForwarder(origin)
    run = make_agent(relay.url, target).start()
    try:
        session = await relay.session()
        stalled = await session.open("GET", f"/download?n={32 * MiB}")
        await stalled.response()  # never read: its window stays exhausted

        async def one(i: int) -> int:
            head, raw = await session.request("POST", f"/echo?i={i}", body=b"%d" % i)
            assert json.loads(raw)["query_string"] == f"i={i}"
            return head.status

        statuses = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(300))), 60)
        assert statuses == [201] * 300
        assert run.client.active_streams == 1  # only the stalled download is left
    finally:
        await stop_agent(run)
        await target.aclose()
        await relay.stop()
