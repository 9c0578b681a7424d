"""The token store in Redis: issue, list and revoke with ``--cluster``; a revoke ends the
session on whichever node holds it within a second."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.cluster.conftest import NameOrigin, RedisServer, issue, start_agent, start_node
from tests.e2e.procs import Procs, run_cli


@pytest.fixture
def origin() -> Iterator[NameOrigin]:
    server = NameOrigin("rv")
    yield server
    server.close()


def test_issue_list_revoke_with_cluster(redis_server: RedisServer) -> None:
    issue(redis_server, "listed")
    again = run_cli("edge-relay", "token", "issue", "listed", "--cluster", redis_server.url)
    assert again.returncode != 0 and "already has a token" in again.stderr
    listed = run_cli("edge-relay", "token", "list", "--cluster", redis_server.url)
    assert listed.returncode == 0 and "listed\t" in listed.stdout
    done = run_cli("edge-relay", "token", "revoke", "listed", "--cluster", redis_server.url)
    assert done.returncode == 0
    gone = run_cli("edge-relay", "token", "revoke", "listed", "--cluster", redis_server.url)
    assert gone.returncode != 0 and "has no token" in gone.stderr
    bad = run_cli("edge-relay", "token", "list", "--cluster", "redis://127.0.0.1:1/0")
    assert bad.returncode != 0 and "cannot use Redis" in bad.stderr


def test_revoke_ends_a_session_on_another_node_within_a_second(
    redis_server: RedisServer, origin: NameOrigin, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with Procs() as procs:
        node_a = start_node(procs, redis_server, tmp_path_factory.mktemp("a"), "node-a")
        node_b = start_node(procs, redis_server, tmp_path_factory.mktemp("b"), "node-b")
        agent = start_agent(procs, [node_b], issue(redis_server, "rv"), origin, "agent-rv")
        assert httpx.get(f"{node_a.url}/a/rv/").status_code == 200  # A forwards to B
        done = run_cli("edge-relay", "token", "revoke", "rv", "--cluster", redis_server.url)
        assert done.returncode == 0, done.stderr
        revoked_at = time.monotonic()
        node_b.wait_line(r"agent_revoked", timeout=5)
        assert node_b.stamp(r"agent_revoked") - revoked_at < 1.0
        agent.wait_line(r"revoked|unauthorized|401", timeout=5)
        for node in (node_a, node_b):
            assert httpx.get(f"{node.url}/a/rv/").status_code == 410
