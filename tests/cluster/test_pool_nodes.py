"""A pool across nodes: two ``--pool`` agents of one name on nodes A and B, callers
through those nodes and a third, C; one member, then one node, SIGKILLed mid-load. Each
agent fronts a real HTTP server that records the ids it gets and holds every request
past its first few (tests/e2e/test_pool.py's Target), so "reached it" is known: every
request is answered exactly once, or failed and was held by the doomed server."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.cluster.conftest import RedisServer
from tests.cluster.pools import Load, issue_pool, nodes, start_member, targets, wait_pool
from tests.e2e.procs import Procs
from tests.e2e.test_pool import Target

__all__ = ["targets"]  # the fixture

#: Answers the doomed member's server gives before it holds every request.
ANSWERED = 5


def _settled(target: Target, least: int, timeout: float = 10.0) -> None:
    """Until ``target`` holds ``least`` requests or more, the same count for 0.5 s: the
    callers that reach it are all stuck there, the others go to the other member."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(target.held)
        if count != last:
            last, since = count, time.monotonic()
        elif count >= least and time.monotonic() - since > 0.5:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{target.label} holds {len(target.held)} requests, not settled")


def _check(results: dict[str, int], doomed: Target, steady: Target) -> None:
    failed = {rid for rid, status in results.items() if status != 200}
    held = set(doomed.held)
    assert failed == held, f"failed without reaching the doomed server: {failed - held}"
    seen = doomed.answered + doomed.held + steady.answered
    assert len(seen) == len(set(seen)), "a request reached a server twice"
    assert set(doomed.answered) | set(steady.answered) == set(results) - failed
    assert len(doomed.answered) == ANSWERED


def test_a_killed_member_fails_only_what_reached_it(
    redis_server: RedisServer, targets: list[Target], tmp_path: Path
) -> None:
    doomed, steady = Target("doomed", answer=ANSWERED), Target("steady", delay=0.01)
    targets += [doomed, steady]
    with Procs() as procs:
        a, b, c = nodes(procs, redis_server, tmp_path, "m")
        token = issue_pool(redis_server, "spread")
        start_member(procs, a, steady, token)
        victim = start_member(procs, b, doomed, token)
        for node in (a, b, c):
            wait_pool(node, "spread", 2)
        url = "{}/a/spread/"
        load = Load([url.format(n.url) for n in (a, b, c, c, c, c)])
        try:
            _settled(doomed, 3)  # B's caller, and C's until C sends to A
            assert doomed.held, "nothing reached the member on B"
            victim.signal(signal.SIGKILL)
            b.wait_line(r"pool_left agent=spread", 10)
            wait_pool(c, "spread", 1)  # B left the pool; C forwards to A only
            load.more(60)
        finally:
            results = load.end()
        metrics = httpx.get(f"{b.url}/_edge/metrics").text
    _check(results, doomed, steady)
    # B, now without a member, forwarded its callers' requests to A.
    assert len(steady.answered) > 60 and any(rid.startswith("w1-") for rid in steady.answered)
    assert 'edge_cluster_pool_nodes{tunnel="spread"} 1.0' in metrics, metrics


def test_a_killed_node_fails_only_what_reached_itsmember(
    redis_server: RedisServer, targets: list[Target], tmp_path: Path
) -> None:
    doomed, steady = Target("doomed", answer=ANSWERED), Target("steady", delay=0.01)
    targets += [doomed, steady]
    with Procs() as procs:
        a, b, c = nodes(procs, redis_server, tmp_path, "k")
        token = issue_pool(redis_server, "nodes")
        start_member(procs, a, steady, token)
        start_member(procs, b, doomed, token)
        wait_pool(c, "nodes", 2)
        # Callers through the node that dies would lose their connection: a load
        # balancer's business. These go through A and C.
        url = "{}/a/nodes/"
        load = Load([url.format(n.url) for n in (a, c, c, c, c)])
        try:
            _settled(doomed, 2)
            b.signal(signal.SIGKILL)  # its pool entry lives on in Redis until its TTL
            load.more(80)
            # Once B is no longer picked last (its links broke 3 s ago), C tries it again:
            # the connect fails, nothing left C, and the request goes to A.
            c.wait_line(r"cluster_hop_failed node=\S+ detail=.*refused", 8)
            c.wait_line(r"cluster_pool_retry agent=nodes", 2)
            load.more(10)
        finally:
            results = load.end()
        metrics = httpx.get(f"{c.url}/_edge/metrics").text
    _check(results, doomed, steady)
    assert len(steady.answered) > 80
    failed = [line for line in metrics.splitlines() if line.startswith("edge_cluster_pool_retries")]
    assert failed and float(failed[0].split()[-1]) >= 1, metrics  # sent to A, not lost
