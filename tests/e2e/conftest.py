"""Fixtures of the end-to-end suite: real ``edge-relay serve`` and ``edge-agent http``
processes (from this virtualenv's ``bin``), a real uvicorn origin on 127.0.0.1, and
callers over real sockets.

Processes are expensive to start (about a second each on a busy machine), so the
tunnels most tests share live for the whole session; tests that kill, stop or restart a
process start their own. Every process is stopped in a ``finally`` (SIGTERM, then
SIGKILL), so none outlives the suite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.deadpeers import DeadPeers
from tests.e2e.origin import Origin
from tests.e2e.procs import AgentProc, Procs, RelayProc, issue_token, start_agent


@dataclasses.dataclass
class Tunnel:
    relay: RelayProc
    agent: AgentProc
    token: str
    url: str  # the public URL the agent printed (ends with "/")

    def at(self, path: str) -> str:
        """Public URL of ``path`` (no leading slash) on this tunnel."""
        return self.url + path


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    with Origin() as server:
        yield server


@pytest.fixture(scope="session")
def session_procs() -> Iterator[Procs]:
    with Procs() as procs:
        yield procs


@pytest.fixture
def procs() -> Iterator[Procs]:
    """Processes of one test, stopped when it ends."""
    with Procs() as started:
        yield started


def open_tunnel(
    procs: Procs, state_dir: Path, target: str, *relay_args: str, name: str = "demo"
) -> Tunnel:
    """A relay with ``relay_args``, a token for ``name`` and an agent forwarding to
    ``target`` (a port or URL)."""
    relay = procs.add(RelayProc(state_dir, *relay_args, name=f"relay-{name}"))
    token = issue_token(state_dir, name)
    agent = procs.add(start_agent(relay, token, target, name=f"agent-{name}"))
    return Tunnel(relay, agent, token, agent.url)


@pytest.fixture(scope="session")
def tunnel(
    origin: Origin, session_procs: Procs, tmp_path_factory: pytest.TempPathFactory
) -> Tunnel:
    """The default tunnel: a relay with production settings, agent ``demo`` -> origin."""
    return open_tunnel(session_procs, tmp_path_factory.mktemp("relay"), str(origin.port))


#: Limits of the ``strict`` relay: short enough for a test to hit each one quickly.
STRICT_RESPONSE_TIMEOUT = 1.0
STRICT_MAX_BODY = 1024 * 1024
STRICT_MAX_STREAMS = 3


@pytest.fixture(scope="session")
def strict(
    origin: Origin, session_procs: Procs, tmp_path_factory: pytest.TempPathFactory
) -> Tunnel:
    """A relay with small limits (response timeout, body size, streams), agent -> origin."""
    return open_tunnel(
        session_procs,
        tmp_path_factory.mktemp("strict"),
        str(origin.port),
        "--response-timeout",
        str(STRICT_RESPONSE_TIMEOUT),
        "--max-body",
        str(STRICT_MAX_BODY),
        "--max-streams",
        str(STRICT_MAX_STREAMS),
    )


@pytest.fixture(scope="session")
def dead_peers(origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeadPeers]:
    procs = Procs()
    try:
        peers = DeadPeers(procs, tmp_path_factory.mktemp("keepalive"), str(origin.port))
    except BaseException:
        procs.stop_all()
        raise
    try:
        yield peers
    finally:
        peers.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that collect ``dead_peers`` last: their clocks started first."""
    items.sort(key=lambda item: "dead_peers" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session", autouse=True)
def _freeze_dead_peers_early(request: pytest.FixtureRequest) -> None:
    """When a selected test needs ``dead_peers``, freeze them before the first test, so
    the ~40 s keepalive timeouts run while the rest of the suite does."""
    if any("dead_peers" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("dead_peers")
