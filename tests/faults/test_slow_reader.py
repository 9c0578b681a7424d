"""A caller that reads a 100 MiB download at 1 KiB/s costs the relay and the agent no
more memory than the flow-control windows, and other streams keep their speed.

The caller's socket has a small receive buffer and is read 1 KiB per second, so TCP
pushes back on the relay almost at once. From there only the protocol bounds memory:
the relay stops returning credit for the stream (it holds at most the stream's receive
window, ``wire.INITIAL_STREAM_WINDOW``, since a lagging stream's window never grows),
the agent stops reading its local target once that credit is spent. A relay or agent
that buffered would grow by up to the 100 MiB body.

The test reads for about :data:`SLOW_SECONDS` (bounded), measuring RSS throughout, and
meanwhile times a full-speed download on the same tunnel against one made before.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Iterator

import pytest

import wire
from tests.e2e.client import session
from tests.e2e.origin import pattern_digest
from tests.e2e.procs import PeakRss, Procs
from tests.faults.stack import MIB, CountingOrigin, Tunnel, open_tunnel

HUGE = 100 * MIB
SLOW_SECONDS = 15.0
FAST = 48 * MIB
#: What the slow stream may hold per process: its receive window, socket and transport
#: buffers (a few frames), plus the allocator's slack (freed pages are not returned at
#: once). Far below the 100 MiB a buffering forwarder would reach.
SLOW_STREAM_BOUND = wire.INITIAL_STREAM_WINDOW + 4 * wire.MAX_FRAME_SIZE + 12 * MIB
#: With the full-speed download beside it: that stream's grown window too.
BOTH_BOUND = SLOW_STREAM_BOUND + wire.MAX_STREAM_WINDOW + 8 * MIB
#: The full-speed download beside the slow reader keeps at least this share of its speed.
SPEED_SHARE = 0.25


@pytest.fixture(scope="module")
def tunnel(origin: CountingOrigin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tunnel]:
    with Procs() as procs:
        yield open_tunnel(procs, tmp_path_factory.mktemp("slowreader"), str(origin.port))


async def _fast(tunnel: Tunnel) -> float:
    """One full-speed download, checked; its throughput in MiB/s."""
    digest = hashlib.sha256()
    start = time.monotonic()
    async with session() as http, http.get(tunnel.at(f"bytes?n={FAST}")) as resp:
        async for chunk in resp.content.iter_any():
            digest.update(chunk)
    seconds = time.monotonic() - start
    assert digest.hexdigest() == pattern_digest(FAST)
    return FAST / MIB / seconds


class SlowCaller:
    """A raw HTTP/1.1 GET whose socket is read 1 KiB per second."""

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.path = path
        self.read = 0
        self.status_line = b""

    async def run(self, seconds: float) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", self.port))
        try:
            request = f"GET {self.path} HTTP/1.1\r\nhost: relay\r\n\r\n".encode()
            await loop.sock_sendall(sock, request)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                data = await asyncio.wait_for(loop.sock_recv(sock, 1024), 10)
                assert data, "the relay closed the slow caller's connection"
                self.status_line = self.status_line or data.split(b"\r\n", 1)[0]
                self.read += len(data)
                await asyncio.sleep(1.0)
        finally:
            sock.close()


async def test_slow_reader_holds_no_more_than_the_windows(tunnel: Tunnel) -> None:
    baseline = await _fast(tunnel)
    pids = (tunnel.relay.pid, tunnel.agent.pid)
    slow = SlowCaller(tunnel.relay.port, f"/a/{tunnel.name}/bytes?n={HUGE}")
    with PeakRss(*pids, interval=0.1) as alone:
        task = asyncio.create_task(slow.run(SLOW_SECONDS))
        await asyncio.sleep(SLOW_SECONDS / 3)
    with PeakRss(*pids, interval=0.1) as beside:
        during = await _fast(tunnel)
        await task
    print(
        f"\nslow reader: {slow.read} B read in {SLOW_SECONDS:g} s of a {HUGE // MIB} MiB body; "
        f"full speed {baseline:.0f} MiB/s alone, {during:.0f} MiB/s beside it"
    )
    for label, pid in zip(("relay", "agent"), pids, strict=True):
        grew = (alone.peak[pid] - alone.start[pid]) / MIB
        both = (beside.peak[pid] - alone.start[pid]) / MIB
        print(f"  {label}: RSS +{grew:.1f} MiB with the slow stream, +{both:.1f} MiB with both")
    assert slow.status_line.startswith(b"HTTP/1.1 200")
    assert slow.read < 64 * 1024  # it really was slow
    for pid in pids:
        assert alone.peak[pid] - alone.start[pid] < SLOW_STREAM_BOUND
        assert beside.peak[pid] - alone.start[pid] < BOTH_BOUND
    assert during >= SPEED_SHARE * baseline
