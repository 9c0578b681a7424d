"""A pool across nodes, the cases where a node answers that it holds no member: a
node the directory still lists after its members left, and a member that drains
(SIGTERM) while another node forwards to it. The entry node then sends the request to
another node of the pool; no caller sees an error."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import redis

from relay.cluster.hop import is_refusal
from relay.cluster.node import Directory
from tests.cluster.conftest import RedisServer
from tests.cluster.pools import Load, issue_pool, nodes, start_member, targets, wait_pool
from tests.e2e.procs import Procs
from tests.e2e.test_pool import Target

__all__ = ["targets"]  # the fixture


def test_a_node_without_a_member_refuses_and_another_node_serves(
    redis_server: RedisServer, targets: list[Target], tmp_path: Path
) -> None:
    """Redis says B holds members of the pool, but B holds none (its last one just left,
    as far as the entry node C knows): B refuses each hop unanswered, C sends it to A."""
    only = Target("only")
    targets.append(only)
    with Procs() as procs:
        a, b, c = nodes(procs, redis_server, tmp_path, "r")
        start_member(procs, a, only, issue_pool(redis_server, "stale"))
        client = redis.Redis.from_url(redis_server.url)
        client.set(f"edge:pool:stale|{b.url}", 1, ex=60)
        client.publish("edge:sessions", f"pool stale {b.url}")
        client.close()
        wait_pool(c, "stale", 2)
        with httpx.Client(timeout=10) as caller:
            answers = [caller.post(f"{c.url}/a/stale/r/s{i}", content=b"once") for i in range(8)]
        metrics = httpx.get(f"{c.url}/_edge/metrics").text
        c.wait_line(r"cluster_hop_refused node=\S+ agent=stale", 5)  # C tried B, then A
    assert [r.status_code for r in answers] == [200] * 8, [r.text for r in answers]
    assert sorted(only.answered) == sorted(f"s{i}" for i in range(8))  # each exactly once
    assert "edge_cluster_pool_retries_total 0.0" not in metrics, metrics
    assert all("x-edge-hop" not in r.headers for r in answers)


def test_a_member_that_stops_loses_no_forwarded_request(
    redis_server: RedisServer, targets: list[Target], tmp_path: Path
) -> None:
    """SIGTERM of the member on B while C forwards to A and B: what crossed its GOAWAY
    is refused unseen, B has no other member and refuses the hop, C sends it to A; a
    draining member takes nothing new. No caller sees an error."""
    leaving, staying = Target("leaving", delay=0.005), Target("staying", delay=0.005)
    targets += [leaving, staying]
    with Procs() as procs:
        a, b, c = nodes(procs, redis_server, tmp_path, "s")
        token = issue_pool(redis_server, "drain")
        start_member(procs, a, staying, token)
        leaver = start_member(procs, b, leaving, token)
        wait_pool(c, "drain", 2)
        load = Load([f"{c.url}/a/drain/"] * 6)
        try:
            deadline = time.monotonic() + 10
            while len(leaving.answered) < 20 and time.monotonic() < deadline:
                time.sleep(0.02)
            leaver.signal(signal.SIGTERM)
            assert leaver.wait(10) == 0
            load.more(60)
        finally:
            results = load.end()
    assert results and all(status == 200 for status in results.values()), results
    seen = leaving.answered + staying.answered
    assert sorted(seen) == sorted(results), "every request answered exactly once"
    assert len(leaving.answered) >= 20 and len(staying.answered) > 60


def test_the_directory_keeps_every_node_of_a_pool() -> None:
    directory = Directory("http://me:1")
    for message in (
        "pool p http://a:1",
        "pool p http://b:1",
        "pool p http://me:1",
        "up s http://a:1",
    ):
        directory.apply(message)
    assert directory.owners("p") == ["http://a:1", "http://b:1"]
    assert directory.owners("s") == ["http://a:1"]
    directory.apply("unpool p http://a:1")
    assert directory.owners("p") == ["http://b:1"]
    directory.apply("unpool p http://b:1")
    assert directory.owners("p") == [] and "p" not in directory.pools
    assert directory.nodes() == 1


def test_only_a_refusal_with_the_secret_counts() -> None:
    head = b"HTTP/1.1 503 Service Unavailable\r\nx-edge-error: hop_not_held\r\n"
    head += b"x-edge-hop: S3cret\r\n"
    assert is_refusal(head, ["old", "S3cret"])
    assert not is_refusal(head, ["other"])
    assert not is_refusal(head.replace(b"S3cret", b"S3cre"), ["S3cret"])
