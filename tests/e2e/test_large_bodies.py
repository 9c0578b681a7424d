"""1 GiB each way through the tunnel, streamed: the bytes arrive intact (running hash and
count on both ends, nothing held in memory), and the relay's and the agent's memory stay
bounded by the flow-control windows, not by the body size.

Memory bound, per process: what the protocol lets one stream and one session hold
(the receive windows: ``wire.INITIAL_SESSION_WINDOW`` for the session, at most
``wire.MAX_STREAM_WINDOW`` for a stream), the relay's WebSocket outbox
(``relay.session.OUTBOX_HIGH``), websockets' incoming queue (16 frames) and the socket
buffers, counted twice over for copies in flight; plus a fixed allowance for the
interpreter's allocator, which does not return every freed page at once. A forwarder
that buffered the body would grow by the body size (1 GiB) and fail by far.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

import wire
from tests.e2e.client import session
from tests.e2e.conftest import Tunnel, open_tunnel
from tests.e2e.origin import Origin, pattern
from tests.e2e.procs import PeakRss, Procs
from tunnel.link import WRITE_HIGH as LINK_HIGH
from tunnel.stream import WRITE_HIGH as STREAM_HIGH

GIB = 1024**3
MIB = 1024**2

#: Growth of a process's RSS during a 1 GiB transfer that the flow-control windows
#: explain (see the module docstring).
WINDOWS = (
    wire.INITIAL_SESSION_WINDOW
    + wire.MAX_STREAM_WINDOW
    + LINK_HIGH
    + STREAM_HIGH
    + 16 * wire.MAX_FRAME_SIZE
)
ALLOCATOR_SLACK = 32 * MIB
GROWTH_BOUND = 2 * WINDOWS + ALLOCATOR_SLACK
#: And the absolute ceiling the task sets: well under 200 MiB per process.
PEAK_BOUND = 160 * MIB

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big(origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tunnel]:
    """A fresh relay and agent, so earlier tests' allocations do not blur the figures."""
    with Procs() as procs:
        yield open_tunnel(procs, tmp_path_factory.mktemp("big"), str(origin.port))


def _report(what: str, tunnel: Tunnel, rss: PeakRss, seconds: float) -> None:
    rate = GIB / MIB / seconds
    print(f"\n{what}: 1 GiB in {seconds:.1f} s = {rate:.0f} MiB/s; {rss.samples} RSS samples")
    for label, pid in (("relay", tunnel.relay.pid), ("agent", tunnel.agent.pid)):
        start, peak = rss.start[pid] / MIB, rss.peak[pid] / MIB
        print(f"  {label}: RSS {start:.1f} MiB before, peak {peak:.1f} MiB (+{peak - start:.1f})")


def _check_memory(tunnel: Tunnel, rss: PeakRss) -> None:
    for label, pid in (("relay", tunnel.relay.pid), ("agent", tunnel.agent.pid)):
        growth = rss.peak[pid] - rss.start[pid]
        assert growth < GROWTH_BOUND, f"{label} grew {growth / MIB:.1f} MiB"
        assert rss.peak[pid] < PEAK_BOUND, f"{label} peaked at {rss.peak[pid] / MIB:.1f} MiB"


async def test_upload_1gib_streams_with_bounded_memory(big: Tunnel, origin: Origin) -> None:
    sent = hashlib.sha256()
    count = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal count
        for piece in pattern(GIB):
            sent.update(piece)
            count += len(piece)
            yield piece

    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    headers = {"Content-Length": str(GIB), "Content-Type": "application/octet-stream"}
    with PeakRss(big.relay.pid, big.agent.pid) as rss:
        start = time.monotonic()
        async with session(timeout=timeout) as http:
            async with http.post(big.at("sink?key=1gib"), data=body(), headers=headers) as resp:
                answer = await resp.json()
        seconds = time.monotonic() - start
    _report("upload", big, rss, seconds)
    assert resp.status == 200
    assert count == GIB
    assert answer == {"size": GIB, "sha256": sent.hexdigest()}
    _check_memory(big, rss)


async def test_download_1gib_streams_with_bounded_memory(big: Tunnel, origin: Origin) -> None:
    received = hashlib.sha256()
    count = 0
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    with PeakRss(big.relay.pid, big.agent.pid) as rss:
        start = time.monotonic()
        async with session(timeout=timeout) as http:
            async with http.get(big.at("bytes?n=1073741824&key=1gib")) as resp:
                assert resp.headers["content-length"] == str(GIB)
                async for chunk in resp.content.iter_any():
                    received.update(chunk)
                    count += len(chunk)
        seconds = time.monotonic() - start
    _report("download", big, rss, seconds)
    assert resp.status == 200
    assert count == GIB
    assert origin.sent["1gib"] == (GIB, received.hexdigest())
    _check_memory(big, rss)
