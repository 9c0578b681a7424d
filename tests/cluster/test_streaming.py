"""What crosses a node hop is streamed, never buffered: server-sent events arrive one by
one through a non-owner node, a WebSocket upgrades through it, a big download keeps
flowing, and the hop's keep-alive links carry request after request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.cluster.conftest import RedisServer, issue, start_node
from tests.e2e.origin import Origin
from tests.e2e.procs import AgentProc, Procs, RelayProc

GAP = 0.4


@pytest.fixture(scope="module")
def hop(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RelayProc, RelayProc]]:
    """(owner, entry): the agent is on the owner; requests go to the entry node."""
    with Origin() as origin, Procs() as procs:
        owner = start_node(procs, redis_server, tmp_path_factory.mktemp("o"), "owner")
        entry = start_node(procs, redis_server, tmp_path_factory.mktemp("e"), "entry")
        token = issue(redis_server, "st")
        argv = [str(origin.port), "--relay", owner.url, "--token", token]
        agent = procs.add(AgentProc(*argv, name="agent-st"))
        agent.wait_url()
        deadline = time.monotonic() + 5
        while httpx.get(f"{entry.url}/a/st/").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield owner, entry


def test_events_arrive_one_by_one_through_a_hop(hop: tuple[RelayProc, RelayProc]) -> None:
    _, entry = hop
    url = f"{entry.url}/a/st/events?key=hop-sse&n=3&gap={GAP}"
    start = time.monotonic()
    arrivals = []
    with httpx.stream("GET", url, timeout=10) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            if chunk:
                arrivals.append(time.monotonic() - start)
    assert arrivals[0] < GAP  # the first event did not wait for the others
    assert arrivals[-1] >= 2 * GAP * 0.9


def test_a_websocket_upgrades_through_a_hop(hop: tuple[RelayProc, RelayProc]) -> None:
    _, entry = hop

    async def talk() -> list[str | bytes]:
        uri = entry.url.replace("http://", "ws://") + "/a/st/ws"
        async with connect(uri, compression=None) as ws:
            got: list[str | bytes] = []
            for message in ("one", b"two" * 10_000, "three"):
                await ws.send(message)
                got.append(await ws.recv())
            return got

    assert asyncio.run(talk()) == ["one", b"two" * 10_000, "three"]


def test_a_big_download_and_keep_alive_through_a_hop(hop: tuple[RelayProc, RelayProc]) -> None:
    owner, entry = hop
    size = 32 * 1024 * 1024
    with httpx.Client(timeout=30) as client:
        for _ in range(3):
            answer = client.get(f"{entry.url}/a/st/bytes?n={size}&chunked=1")
            assert answer.status_code == 200 and len(answer.content) == size
        for i in range(50):  # small requests reuse the entry node's link to the owner
            assert client.get(f"{entry.url}/a/st/echo?i={i}").status_code == 200
    opened = entry.count(rf"cluster_link_opened .*127.0.0.1:{owner.port}")
    assert 1 <= opened <= 3, entry.output()
