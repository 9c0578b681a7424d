"""Three relay nodes on one Redis: every node reaches every agent, whichever node holds
its session; forwarded requests are authenticated node to node."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.cluster.conftest import NameOrigin, RedisServer, get_json, issue, start_agent, start_node
from tests.e2e.procs import AgentProc, Procs, RelayProc


@pytest.fixture(scope="module")
def cluster(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[RelayProc], list[AgentProc]]]:
    origins = [NameOrigin(f"ag{i}") for i in range(3)]
    with Procs() as procs:
        nodes = [
            start_node(procs, redis_server, tmp_path_factory.mktemp("n"), f"node{i}")
            for i in range(3)
        ]
        agents = [
            start_agent(procs, [nodes[i]], issue(redis_server, f"ag{i}"), origins[i], f"agent{i}")
            for i in range(3)
        ]
        yield nodes, agents
    for origin in origins:
        origin.close()


def test_every_node_reaches_every_agent(cluster: tuple[list[RelayProc], list[AgentProc]]) -> None:
    nodes, _ = cluster
    for node in nodes:
        for i in range(3):
            status, body = get_json(f"{node.url}/a/ag{i}/hello?x=1")
            assert status == 200, (node.name, i, body)
            assert body["agent"] == f"ag{i}"
            assert body["path"] == "/hello?x=1"
            headers = body["headers"]
            assert isinstance(headers, dict)
            assert headers["x-forwarded-prefix"] == f"/a/ag{i}"
            assert "x-edge-hop" not in headers  # the secret never reaches an agent


def test_a_forwarded_body_streams_through(cluster: tuple[list[RelayProc], list[AgentProc]]) -> None:
    nodes, _ = cluster
    body = b"x" * (3 * 1024 * 1024 + 17)
    with httpx.Client(timeout=10) as client:  # one keep-alive connection, several names
        for i in (1, 2, 1):
            answer = client.post(f"{nodes[0].url}/a/ag{i}/up", content=body)
            assert answer.status_code == 200
            assert answer.json()["size"] == len(body)
            assert answer.json()["agent"] == f"ag{i}"


def test_hops_show_in_metrics_and_logs(cluster: tuple[list[RelayProc], list[AgentProc]]) -> None:
    nodes, _ = cluster
    assert get_json(f"{nodes[0].url}/a/ag1/m")[0] == 200
    text = httpx.get(f"{nodes[0].url}/_edge/metrics").text
    assert f'edge_cluster_hops_out_total{{node="http://127.0.0.1:{nodes[1].port}"}}' in text
    owner = httpx.get(f"{nodes[1].url}/_edge/metrics").text
    hops_in = [line for line in owner.splitlines() if line.startswith("edge_cluster_hops_in_total")]
    assert hops_in and float(hops_in[0].split()[-1]) >= 1
    nodes[0].wait_line(rf"cluster_link_opened .*127.0.0.1:{nodes[1].port}")


def test_a_forged_hop_is_refused(cluster: tuple[list[RelayProc], list[AgentProc]]) -> None:
    nodes, _ = cluster
    answer = httpx.get(f"{nodes[1].url}/a/ag1/x", headers={"X-Edge-Hop": "guess"})
    assert answer.status_code == 403
    assert answer.headers["x-edge-error"] == "hop_forbidden"


def test_an_unknown_name_is_404_on_every_node(
    cluster: tuple[list[RelayProc], list[AgentProc]],
) -> None:
    nodes, _ = cluster
    for node in nodes:
        assert httpx.get(f"{node.url}/a/nobody/").status_code == 404


def _raw_get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return b"".join(iter(lambda: sock.recv(65536), b""))


def test_the_path_prefix_is_removed_once(cluster: tuple[list[RelayProc], list[AgentProc]]) -> None:
    nodes, _ = cluster
    raw = _raw_get(nodes[2].port, "/a/ag0/a/ag0/deep")
    assert b" 200 " in raw.split(b"\r\n")[0]
    assert b'"path": "/a/ag0/deep"' in raw
