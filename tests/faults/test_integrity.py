"""Bytes through the tunnel arrive intact under concurrency: many uploads and downloads
of odd sizes at once (around the 64 KiB frame size and the 256 KiB stream window, plus
random ones), in both framings, request bodies cut at odd boundaries, and streams being
cancelled or answered early beside them; every body is checked by SHA-256 on the other
end.

Why: a tunnel that corrupts or reorders bytes is the worst failure it can have, and such
a bug shows only under concurrency (frames of several streams interleaved, credit
waits, buffers reused). The bounded run here takes seconds; ``EDGE_STRESS_ROUNDS`` makes
it longer for a soak outside CI (e.g. ``EDGE_STRESS_ROUNDS=200 ... --timeout 3600``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.e2e.client import session
from tests.e2e.procs import Procs
from tests.faults.stack import CountingOrigin, Tunnel, open_tunnel

#: Sizes around the frame payload (64 KiB), the initial stream window (256 KiB) and
#: the aiohttp read buffer; random sizes are added per request.
SIZES = (0, 1, 65_535, 65_536, 65_537, 131_071, 131_073, 262_143, 262_145, 1_048_577)
#: Request body pieces the caller writes: not aligned with anything in the tunnel.
PIECES = (1, 100, 4_095, 16_383, 50_000, 65_535, 65_536, 65_537, 70_001)

ROUNDS = int(os.environ.get("EDGE_STRESS_ROUNDS", "6"))
CONCURRENT = 32
#: Seconds one exchange may take before it counts as hung (the test fails).
WITHIN = 60.0


@pytest.fixture(scope="module")
def tunnel(origin: CountingOrigin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tunnel]:
    with Procs() as procs:
        yield open_tunnel(procs, tmp_path_factory.mktemp("integrity"), str(origin.port))


async def _pieces(data: bytes, rnd: random.Random) -> AsyncIterator[bytes]:
    offset = 0
    while offset < len(data):
        size = rnd.choice(PIECES)
        yield data[offset : offset + size]
        offset += size
        if rnd.random() < 0.2:
            await asyncio.sleep(rnd.random() * 0.005)  # let other streams interleave


class Stress:
    def __init__(self, tunnel: Tunnel, origin: CountingOrigin, seed: int) -> None:
        self.tunnel = tunnel
        self.origin = origin
        self.rnd = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.bad: list[str] = []

    def _corrupted(self, what: str) -> None:
        print(f"\nCORRUPTED {what}", flush=True)  # at once: a long soak may be cut short
        self.bad.append(what)

    def size(self) -> int:
        return self.rnd.choice((*SIZES, self.rnd.randrange(1, 600_000)))

    async def upload(self, http: aiohttp.ClientSession, i: int) -> None:
        size, chunked = self.size(), self.rnd.random() < 0.5
        data = random.Random(i).randbytes(size)
        body = _pieces(data, random.Random(-i)) if chunked else data
        route = self.rnd.choice(("sink", "echo"))
        async with http.post(self.tunnel.at(f"{route}?key=i{i}"), data=body) as resp:
            answer = await resp.json()
        got = (answer["size"], answer["sha256"])
        if got != (size, hashlib.sha256(data).hexdigest()):
            self._corrupted(f"upload #{i}: {size} B chunked={chunked} via {route}: {got}")
        self.counts["upload"] += 1

    async def download(self, http: aiohttp.ClientSession, i: int) -> None:
        size, chunked = self.size(), self.rnd.random() < 0.5
        url = self.tunnel.at(f"bytes?n={size}&key=d{i}" + ("&chunked=1" if chunked else ""))
        async with http.get(url) as resp:
            body = await resp.read()
        got = (len(body), hashlib.sha256(body).hexdigest())
        if got != self.origin.sent.get(f"d{i}"):
            self._corrupted(f"download #{i}: {size} B chunked={chunked}: got {len(body)} B")
        self.counts["download"] += 1

    async def disturb(self, http: aiohttp.ClientSession, i: int) -> None:
        """A stream that ends badly beside the checked ones: the caller leaves during an
        upload or a download, or the origin answers before reading the body."""
        kind = self.rnd.choice(("leave-upload", "leave-download", "early-answer"))
        try:
            if kind == "leave-upload":
                data = random.Random(i).randbytes(700_000)
                async with asyncio.timeout(self.rnd.random() * 0.05):
                    url = self.tunnel.at(f"sink?key=x{i}")
                    async with http.post(url, data=_pieces(data, random.Random(i))) as resp:
                        await resp.read()
            elif kind == "leave-download":
                async with http.get(self.tunnel.at("bytes?n=4000000")) as resp:
                    await resp.content.read(self.rnd.randrange(1, 300_000))
            else:  # 404 from the origin, which never reads the body
                data = random.Random(i).randbytes(self.rnd.randrange(1, 400_000))
                url = self.tunnel.at("no-such-route")
                async with http.post(url, data=_pieces(data, random.Random(i))) as resp:
                    await resp.read()
        except (TimeoutError, aiohttp.ClientError):
            pass
        self.counts[kind] += 1

    async def worker(self, http: aiohttp.ClientSession, w: int, rounds: int) -> None:
        for r in range(rounds * 4):
            i = w * 100_000 + r
            step = self.rnd.choice((self.upload, self.upload, self.download, self.disturb))
            async with asyncio.timeout(WITHIN):
                await step(http, i)


async def test_odd_sizes_arrive_intact_under_concurrency(
    tunnel: Tunnel, origin: CountingOrigin
) -> None:
    stress = Stress(tunnel, origin, seed=20261126)
    start = time.monotonic()
    try:
        async with session(limit=CONCURRENT * 2) as http:
            await asyncio.gather(*(stress.worker(http, w, ROUNDS) for w in range(CONCURRENT)))
    except BaseException:
        # Both ends' logs say why (a session cut, a reset), which the caller cannot see.
        print("\nrelay:\n" + tunnel.relay.output()[-8000:])
        print("\nagent:\n" + tunnel.agent.output()[-8000:])
        raise
    seconds = time.monotonic() - start
    print(f"\nintegrity: {dict(stress.counts)} in {seconds:.1f} s, {len(stress.bad)} corrupted")
    assert stress.bad == []
    assert stress.counts["upload"] > 0 and stress.counts["download"] > 0
    assert tunnel.relay.count("agent_connected") == 1  # one session carried all of it


async def test_one_upload_per_size_and_framing_after_the_load(tunnel: Tunnel) -> None:
    """The exact exchanges of the end-to-end pass-through test, once the session has
    carried the load above (grown windows, many closed streams)."""
    async with session() as http:
        for size in SIZES:
            data = random.Random(size).randbytes(size)
            for chunked in (False, True):
                body = _pieces(data, random.Random(size)) if chunked else data
                url = tunnel.at(f"echo?key=after-{size}-{chunked}")
                async with http.post(url, data=body) as resp:
                    answer = await resp.json()
                assert (answer["size"], answer["sha256"]) == (
                    size,
                    hashlib.sha256(data).hexdigest(),
                ), (size, chunked)
