"""A pool across nodes: two ``--pool`` agents of one name on two relay nodes, callers
through those nodes and a third; one member, then one node, SIGKILLed mid-load. Each
agent fronts a real HTTP server that records the ids it gets and holds every request
past its first few (tests/e2e/test_pool.py's Target), so "reached it" is known: every
request is answered exactly once, or failed and was held by the doomed server."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from relay.cluster.hop import is_refusal
from relay.cluster.node import Directory
from tests.cluster.conftest import RedisServer, start_node
from tests.e2e.procs import AgentProc, Procs, RelayProc, run_cli
from tests.e2e.test_pool import HOLD_LIMIT, Target

#: Answers the doomed member's server gives before it holds every request.
ANSWERED = 5


@pytest.fixture
def targets() -> Iterator[list[Target]]:
    made: list[Target] = []
    yield made
    for target in made:
        target.release()


def _issue(redis: RedisServer, name: str) -> str:
    done = run_cli("edge-relay", "token", "issue", name, "--pool", "--cluster", redis.url)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _member(procs: Procs, node: RelayProc, target: Target, token: str) -> AgentProc:
    args = [str(target.port), "--relay", node.url, "--token", token, "--pool", "--no-inspect"]
    agent = procs.add(AgentProc(*args, name=f"agent-{target.label}"))
    agent.wait_url()
    return agent


def _nodes(procs: Procs, redis: RedisServer, tmp: Path, name: str) -> list[RelayProc]:
    return [
        start_node(procs, redis, tmp / f"{name}{i}", f"node-{name}{i}")
        for i in range(3)
        if (tmp / f"{name}{i}").mkdir() is None
    ]


def _wait_pool(node: RelayProc, name: str, nodes: int) -> None:
    deadline = time.monotonic() + 10
    wanted = f'edge_cluster_pool_nodes{{tunnel="{name}"}} {float(nodes)}'
    while wanted not in (text := httpx.get(f"{node.url}/_edge/metrics").text):
        assert time.monotonic() < deadline, text
        time.sleep(0.05)


class Load:
    """Callers POSTing ``/r/<id>`` through given URLs until stopped; status per id (-1:
    no answer)."""

    def __init__(self, urls: list[str]) -> None:
        self.results: dict[str, int] = {}
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._caller, args=(w, url), daemon=True)
            for w, url in enumerate(urls)
        ]
        for thread in self.threads:
            thread.start()

    def _caller(self, worker: int, url: str) -> None:
        with httpx.Client(timeout=HOLD_LIMIT) as client:
            for i in range(10_000):
                if self.stop.is_set():
                    return
                rid = f"w{worker}-{i}"
                try:
                    status = client.post(f"{url}r/{rid}", content=b"x" * 100).status_code
                except httpx.HTTPError:
                    status = -1
                self.results[rid] = status

    def more(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` more requests got their answer."""
        done, deadline = len(self.results), time.monotonic() + timeout
        while len(self.results) < done + count and time.monotonic() < deadline:
            time.sleep(0.05)

    def end(self) -> dict[str, int]:
        self.stop.set()
        for thread in self.threads:
            thread.join(HOLD_LIMIT)
        return self.results


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
        a, b, c = _nodes(procs, redis_server, tmp_path, "m")
        token = _issue(redis_server, "spread")
        _member(procs, a, steady, token)
        victim = _member(procs, b, doomed, token)
        for node in (a, b, c):
            _wait_pool(node, "spread", 2)
        url = "{}/a/spread/"
        load = Load([url.format(n.url) for n in (a, b, c, c, c, c)])
        try:
            _settled(doomed, 3)  # B's caller, and C's until C sends to A
            assert doomed.held, "nothing reached the member on B"
            victim.signal(signal.SIGKILL)
            b.wait_line(r"pool_left agent=spread", 10)
            _wait_pool(c, "spread", 1)  # B left the pool; C forwards to A only
            load.more(60)
        finally:
            results = load.end()
        metrics = httpx.get(f"{b.url}/_edge/metrics").text
    _check(results, doomed, steady)
    # B, now without a member, forwarded its callers' requests to A.
    assert len(steady.answered) > 60 and any(rid.startswith("w1-") for rid in steady.answered)
    assert 'edge_cluster_pool_nodes{tunnel="spread"} 1.0' in metrics, metrics


def test_a_killed_node_fails_only_what_reached_its_member(
    redis_server: RedisServer, targets: list[Target], tmp_path: Path
) -> None:
    doomed, steady = Target("doomed", answer=ANSWERED), Target("steady", delay=0.01)
    targets += [doomed, steady]
    with Procs() as procs:
        a, b, c = _nodes(procs, redis_server, tmp_path, "k")
        token = _issue(redis_server, "nodes")
        _member(procs, a, steady, token)
        _member(procs, b, doomed, token)
        _wait_pool(c, "nodes", 2)
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


def test_a_node_without_a_member_refuses_and_another_node_serves(
    redis_server: RedisServer, targets: list[Target], tmp_path: Path
) -> None:
    """Redis says B holds members of the pool, but B holds none (its last one just left,
    as far as the entry node C knows): B refuses each hop unanswered, C sends it to A."""
    only = Target("only")
    targets.append(only)
    with Procs() as procs:
        a, b, c = _nodes(procs, redis_server, tmp_path, "r")
        _member(procs, a, only, _issue(redis_server, "stale"))
        client = redis.Redis.from_url(redis_server.url)
        client.set(f"edge:pool:stale|{b.url}", 1, ex=60)
        client.publish("edge:sessions", f"pool stale {b.url}")
        client.close()
        _wait_pool(c, "stale", 2)
        with httpx.Client(timeout=10) as caller:
            answers = [caller.post(f"{c.url}/a/stale/r/s{i}", content=b"once") for i in range(8)]
        metrics = httpx.get(f"{c.url}/_edge/metrics").text
        c.wait_line(r"cluster_hop_refused node=\S+ agent=stale", 5)  # C tried B, then A
    assert [r.status_code for r in answers] == [200] * 8, [r.text for r in answers]
    assert sorted(only.answered) == sorted(f"s{i}" for i in range(8))  # each exactly once
    assert "edge_cluster_pool_retries_total 0.0" not in metrics, metrics
    assert all("x-edge-hop" not in r.headers for r in answers)


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
