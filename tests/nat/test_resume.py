"""Session resumption behind a real NAT: the router resets the tunnel's TCP connection
(nftables ``reject with tcp reset``, then lifted) or black-holes it for 10 s, in the
middle of a download, an upload, an SSE stream and 50 small requests. Every body
arrives whole (SHA-256), every event once and in order, every small request reaches the
target exactly once; and with the relay killed instead, callers get definite errors.

Sizes are scaled down for CI (the issue's 200 MiB down and 50 MiB up with
EDGE_LONG_TESTS=1).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.nat.faults import silent_drop, tcp_reset
from tests.nat.netns import NsThread
from tests.nat.product import (
    SseReader,
    poll,
    request,
    require,
    start_agent_http,
    start_relay,
    start_sse_origin,
)
from tests.nat.sse_origin import BLOCK, body_digest
from tests.nat.topology import Topology

pytestmark = pytest.mark.root

MiB = 1024 * 1024
LONG = os.environ.get("EDGE_LONG_TESTS") == "1"
DOWNLOAD = (200 if LONG else 24) * MiB
UPLOAD = (50 if LONG else 12) * MiB
EVENTS, EVENT_INTERVAL = 100, 0.1
SMALL, SMALL_SECONDS = 50, 4.0
BLACK_HOLE_SECONDS = 10.0
RESUMED = re.compile(r"detail=resumed session after ([\d.]+) s, (\d+) streams, (.+) re-sent")


class Transfer:
    """A download, an upload or a small request, run in the internet namespace."""

    def __init__(self, fn: Callable[[Transfer], Any]) -> None:
        self.progress = 0
        self.midway = threading.Event()
        self.go = threading.Event()  # released by the test once every transfer is mid-way
        self.fn = fn

    def start(self, topo: Topology) -> NsThread:
        return NsThread(topo.internet, self.fn, self).start()


def download(url: str) -> Callable[[Transfer], str]:
    def run(t: Transfer) -> str:
        digest = hashlib.sha256()
        with httpx.Client(timeout=httpx.Timeout(60.0), trust_env=False) as client:
            with client.stream("GET", url + f"bytes?n={DOWNLOAD}") as resp:
                assert resp.status_code == 200
                for chunk in resp.iter_bytes(BLOCK):
                    digest.update(chunk)
                    t.progress += len(chunk)
                    if t.progress >= DOWNLOAD // 3 and not t.go.is_set():
                        t.midway.set()
                        t.go.wait(60)
        return digest.hexdigest()

    return run


def upload(url: str) -> Callable[[Transfer], dict[str, Any]]:
    def body(t: Transfer) -> Iterator[bytes]:
        i = 0
        while t.progress < UPLOAD:
            piece = hashlib.sha256(i.to_bytes(8, "big")).digest() * (BLOCK // 32)
            piece = piece[: UPLOAD - t.progress]
            yield piece
            t.progress += len(piece)
            i += 1
            if t.progress >= UPLOAD // 3 and not t.go.is_set():
                t.midway.set()
                t.go.wait(60)

    def run(t: Transfer) -> dict[str, Any]:
        headers = {"content-length": str(UPLOAD)}
        with httpx.Client(timeout=httpx.Timeout(60.0), trust_env=False) as client:
            resp = client.post(url + "sink", content=body(t), headers=headers)
        assert resp.status_code == 200, resp.text
        answer: dict[str, Any] = resp.json()
        return answer

    return run


def upload_digest() -> str:
    digest, sent, i = hashlib.sha256(), 0, 0
    while sent < UPLOAD:
        piece = (hashlib.sha256(i.to_bytes(8, "big")).digest() * (BLOCK // 32))[: UPLOAD - sent]
        digest.update(piece)
        sent += len(piece)
        i += 1
    return digest.hexdigest()


def small(url: str, key: str) -> Callable[[Transfer], int]:
    def run(t: Transfer) -> int:
        t.midway.set()
        with httpx.Client(timeout=httpx.Timeout(60.0), trust_env=False) as client:
            resp = client.get(url + f"slow?key={key}&s={SMALL_SECONDS}")
        assert resp.text == "done"
        return resp.status_code

    return run


def traffic_through(
    topo: Topology, url: str, tag: str, fault: Callable[[], None]
) -> tuple[list[int], float]:
    """Run the four kinds of traffic, ``fault()`` once each is mid-way, check them all.
    Returns the SSE event ids and the longest gap between two events (the pause)."""
    sse = SseReader(topo.internet, "GET", url + f"events?n={EVENTS}&interval={EVENT_INTERVAL}")
    sse.start()
    bulk = [Transfer(download(url)), Transfer(upload(url))]
    smalls = [Transfer(small(url, f"{tag}-{i}")) for i in range(SMALL)]
    threads = [t.start(topo) for t in bulk + smalls]
    for t in bulk + smalls:
        assert t.midway.wait(60), "a transfer did not get going"
    sse.wait_events(EVENTS // 4, timeout=30)
    time.sleep(0.5)  # the small requests are at the target now, waiting SMALL_SECONDS
    for t in bulk:
        t.go.set()
    fault()
    assert threads[0].result(timeout=180) == body_digest(DOWNLOAD)
    assert threads[1].result(timeout=180) == {"size": UPLOAD, "sha256": upload_digest()}
    assert [th.result(timeout=60) for th in threads[2:]] == [200] * SMALL
    hits = [request(topo.internet, "GET", url + f"hits?key={tag}-{i}").text for i in range(SMALL)]
    assert hits == ["1"] * SMALL  # each small request reached the target exactly once
    assert sse.wait_done(timeout=60), "the SSE stream did not end"
    assert sse.ended_cleanly, repr(sse.error)
    ids = [e.json()["i"] for e in sse.events]
    assert ids == list(range(EVENTS))  # each event once, in order
    gaps = [b.arrived - a.arrived for a, b in zip(sse.events, sse.events[1:], strict=False)]
    return ids, max(gaps)


def test_a_router_reset_of_the_tunnel_is_a_pause(topo: Topology) -> None:
    require("edge-relay serve", "edge-agent http")
    relay = start_relay(topo)
    agent, url = start_agent_http(topo, relay, "laptop", start_sse_origin(topo))
    poll(topo.internet, url + "hello", lambda r: r.status_code == 200, within=10)

    def reset() -> None:
        with tcp_reset(topo):
            time.sleep(1.0)

    _, pause = traffic_through(topo, url, "reset", reset)
    found = agent.wait_output(RESUMED.pattern, timeout=10)
    relay.proc.wait_output(RESUMED.pattern, timeout=10)
    print(f"\nrouter reset for 1 s: {found.group(0)}; longest SSE gap {pause:.2f} s")


def test_a_10_s_black_hole_is_a_pause(topo: Topology) -> None:
    require("edge-relay serve", "edge-agent http")
    relay = start_relay(topo)
    agent, url = start_agent_http(topo, relay, "laptop", start_sse_origin(topo))
    poll(topo.internet, url + "hello", lambda r: r.status_code == 200, within=10)

    def hole() -> None:
        with silent_drop(topo):
            time.sleep(BLACK_HOLE_SECONDS)

    _, pause = traffic_through(topo, url, "hole", hole)
    resumed = RESUMED.search(agent.output())
    how = resumed.group(0) if resumed else "TCP retransmitted: the session never dropped"
    print(f"\n{BLACK_HOLE_SECONDS:g} s black hole: {how}; longest SSE gap {pause:.2f} s")
    assert "agent_disconnected" not in relay.proc.output()


def test_a_killed_relay_gives_definite_errors(topo: Topology) -> None:
    require("edge-relay serve", "edge-agent http")
    relay = start_relay(topo)
    _, url = start_agent_http(topo, relay, "laptop", start_sse_origin(topo))
    poll(topo.internet, url + "hello", lambda r: r.status_code == 200, within=10)
    sse = SseReader(topo.internet, "GET", url + f"events?n={EVENTS}&interval={EVENT_INTERVAL}")
    sse.start()
    sse.wait_events(5, timeout=30)
    relay.proc.signal(signal.SIGKILL)
    assert sse.wait_done(timeout=10), "the stream hung after the relay died"
    assert isinstance(sse.error, httpx.TransportError), (sse.ended_cleanly, sse.error)
    ids = [e.json()["i"] for e in sse.events]
    assert ids == list(range(len(ids))) and len(ids) < EVENTS
