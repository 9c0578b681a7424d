"""Many streams on one tunnel: 1,000 at once all complete, and a caller that reads one
big download at a trickle does not slow the others down (per-stream flow control)."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.client import session
from tests.e2e.conftest import Tunnel, open_tunnel
from tests.e2e.origin import Origin
from tests.e2e.procs import Procs

CONCURRENT = 1000


@pytest.mark.slow
async def test_thousand_concurrent_requests_complete(
    procs: Procs, tmp_path: Path, origin: Origin
) -> None:
    """The origin holds every request until all 1,000 are in flight at the same time,
    so each one really is a concurrent stream of the one tunnel. They all come from one
    address, which may hold a quarter of the streams by default: that cap is lifted."""
    tunnel = open_tunnel(
        procs, tmp_path, str(origin.port), "--max-client-streams", "1024", name="thousand"
    )
    key = "thousand"
    url = tunnel.at(f"barrier?key={key}&n={CONCURRENT}&within=90")
    timeout = aiohttp.ClientTimeout(total=120)

    async def one(http: aiohttp.ClientSession) -> tuple[int, bytes]:
        async with http.get(url) as resp:
            return resp.status, await resp.read()

    start = time.monotonic()
    async with session(limit=CONCURRENT, timeout=timeout) as http:
        results = await asyncio.gather(*(one(http) for _ in range(CONCURRENT)))
    elapsed = time.monotonic() - start
    print(f"\n{CONCURRENT} concurrent requests in {elapsed:.1f} s")
    assert origin.max_in_flight[key] == CONCURRENT
    assert sorted(set(results)) == [(200, b"ok")]
    assert len(results) == CONCURRENT


async def test_slow_reader_does_not_stall_other_streams(tunnel: Tunnel) -> None:
    trickle_bytes = 0
    stop = asyncio.Event()

    async def trickle(http: aiohttp.ClientSession) -> None:
        """A 256 MiB download read 16 KiB per 50 ms (~320 KiB/s): it would take minutes."""
        nonlocal trickle_bytes
        async with http.get(tunnel.at(f"bytes?n={256 * 1024 * 1024}")) as resp:
            assert resp.status == 200
            while not stop.is_set():
                chunk = await resp.content.read(16 * 1024)
                assert chunk
                trickle_bytes += len(chunk)
                await asyncio.sleep(0.05)

    async def timed(http: aiohttp.ClientSession, data: bytes | None) -> float:
        start = time.monotonic()
        async with http.post(tunnel.at("echo"), data=data) as resp:
            await resp.read()
            assert resp.status == 200
        return time.monotonic() - start

    async with session() as http:
        slow = asyncio.create_task(trickle(http))
        try:
            await asyncio.sleep(1.0)  # the slow stream's windows and buffers are full now
            assert not slow.done()
            latencies = [await timed(http, None) for _ in range(20)]
            big = b"x" * (1024 * 1024)  # bodies that need credit, too
            latencies += await asyncio.gather(*(timed(http, big) for _ in range(10)))
            latencies += [await timed(http, big) for _ in range(10)]
            assert not slow.done(), "the trickle stream should still be running"
        finally:
            stop.set()
            slow.cancel()
            await asyncio.gather(slow, return_exceptions=True)
    print(
        f"\nbeside a trickle ({trickle_bytes} B read): {len(latencies)} requests, "
        f"median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert max(latencies) < 3.0
    assert statistics.median(latencies) < 0.5
