"""Fixtures of the inspector's tests: a Store the tap records into, the local target,
and a real tunnel (an ``edge-relay serve`` and an ``edge-agent http`` process with its
inspector on an ephemeral loopback port) in front of it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from edge_agent.inspect import tap
from edge_agent.inspect.observe import Recorder
from edge_agent.inspect.store import Store
from tests.e2e.procs import AgentProc, Procs, RelayProc, issue_token, start_agent
from tests.inspect.local import Local


@pytest.fixture(scope="session")
def local() -> Iterator[Local]:
    with Local() as server:
        yield server


@pytest.fixture
def store() -> Iterator[Store]:
    store = Store()
    tap.install(Recorder(store))
    try:
        yield store
    finally:
        tap.install(None)


@dataclasses.dataclass
class InspectedTunnel:
    relay: RelayProc
    agent: AgentProc
    url: str  # public URL, ends with "/"
    inspector: str  # http://127.0.0.1:PORT

    def at(self, path: str) -> str:
        return self.url + path.lstrip("/")


@pytest.fixture(scope="session")
def tunnel(local: Local, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InspectedTunnel]:
    with Procs() as procs:
        state = tmp_path_factory.mktemp("inspect-relay")
        relay = procs.add(RelayProc(state, name="relay-inspect"))
        token = issue_token(state, "inspected")
        agent = procs.add(
            start_agent(relay, token, str(local.port), "--inspect", "127.0.0.1:0", name="agent")
        )
        inspector = agent.wait_line(r"^Inspector (http://127\.0\.0\.1:\d+)$").group(1)
        yield InspectedTunnel(relay, agent, agent.url, inspector)
