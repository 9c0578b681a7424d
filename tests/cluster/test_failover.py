"""A node dies, Redis restarts: the agents and the cluster recover on their own."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.cluster.conftest import (
    NameOrigin,
    RedisServer,
    get_json,
    issue,
    start_agent,
    start_node,
    wait_status,
)
from tests.e2e.procs import Procs

#: The issue's bound: the URL answers again within this many seconds of the SIGKILL.
FAILOVER_BOUND = 10.0


@pytest.fixture
def origin() -> Iterator[NameOrigin]:
    server = NameOrigin("fo")
    yield server
    server.close()


def test_sigkill_of_the_owner_node_moves_the_agent(
    redis_server: RedisServer, origin: NameOrigin, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with Procs() as procs:
        nodes = [
            start_node(procs, redis_server, tmp_path_factory.mktemp("n"), f"node{i}")
            for i in range(3)
        ]
        agent = start_agent(procs, nodes, issue(redis_server, "fo"), origin, "agent-fo")
        owner = next(n for n in nodes if agent.url.startswith(n.url))
        others = [n for n in nodes if n is not owner]
        for node in nodes:
            assert get_json(f"{node.url}/a/fo/")[1].get("agent") == "fo"
        owner.signal(signal.SIGKILL)
        killed = time.monotonic()
        for node in others:  # every surviving node reaches the agent on its new node
            wait_status(f"{node.url}/a/fo/", 200, FAILOVER_BOUND - (time.monotonic() - killed))
        took = time.monotonic() - killed
        print(f"failover: the URL answered through every node {took:.2f} s after SIGKILL")
        assert took < FAILOVER_BOUND
        agent.wait_line(r"relay_switched")


def test_redis_restart_keeps_sessions_and_republishes(
    redis_server: RedisServer, origin: NameOrigin, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with Procs() as procs:
        node_a = start_node(procs, redis_server, tmp_path_factory.mktemp("a"), "node-a")
        node_b = start_node(procs, redis_server, tmp_path_factory.mktemp("b"), "node-b")
        start_agent(procs, [node_a], issue(redis_server, "rr"), origin, "agent-rr")
        late_token = issue(redis_server, "late")
        assert httpx.get(f"{node_b.url}/a/rr/").status_code == 200
        redis_server.stop()
        try:
            node_a.wait_line(r"cluster_redis_down", timeout=15)
            # Both nodes keep serving: A its session, B forwards from its cache.
            assert httpx.get(f"{node_a.url}/a/rr/").status_code == 200
            assert httpx.get(f"{node_b.url}/a/rr/").status_code == 200
        finally:
            redis_server.start()
        node_a.wait_line(r"cluster_redis_back", timeout=15)
        node_b.wait_line(r"cluster_redis_back", timeout=15)
        assert httpx.get(f"{node_b.url}/a/rr/").status_code == 200
        # Subscribed again: a session opened on B after the outage is reachable from A.
        late = NameOrigin("late")
        try:
            start_agent(procs, [node_b], late_token, late, "agent-late")
            wait_status(f"{node_a.url}/a/late/", 200, 5.0)  # A learned of B's new session
        finally:
            late.close()
