"""Helpers of the pool-across-nodes tests: three relay nodes on the suite's Redis,
``--pool`` agents in front of tests/e2e/test_pool.py's recording Targets, and callers
that POST unique ids until stopped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import RedisServer, start_node
from tests.e2e.procs import AgentProc, Procs, RelayProc, run_cli
from tests.e2e.test_pool import HOLD_LIMIT, Target


@pytest.fixture
def targets() -> Iterator[list[Target]]:
    made: list[Target] = []
    yield made
    for target in made:
        target.release()


def issue_pool(redis: RedisServer, name: str) -> str:
    done = run_cli("edge-relay", "token", "issue", name, "--pool", "--cluster", redis.url)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def start_member(procs: Procs, node: RelayProc, target: Target, token: str) -> AgentProc:
    args = [str(target.port), "--relay", node.url, "--token", token, "--pool", "--no-inspect"]
    agent = procs.add(AgentProc(*args, name=f"agent-{target.label}"))
    agent.wait_url()
    return agent


def nodes(procs: Procs, redis: RedisServer, tmp: Path, name: str) -> list[RelayProc]:
    return [
        start_node(procs, redis, tmp / f"{name}{i}", f"node-{name}{i}")
        for i in range(3)
        if (tmp / f"{name}{i}").mkdir() is None
    ]


def wait_pool(node: RelayProc, name: str, nodes: int) -> None:
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
