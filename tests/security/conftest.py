"""Fixtures of the security suite: one real ``edge-relay`` with a wildcard domain and a
1 MiB body limit, and three real ``edge-agent http`` tunnels on it, each in front of an
origin of its own that counts what reaches it:

* ``alpha`` and ``beta``: no caller auth;
* ``guarded``: caller auth by bearer token and by basic user/password.

A health probe asks the relay's ``/_edge/healthz`` every 100 ms for the whole session,
so every attack runs while the relay's responsiveness is being measured
(``test_zz_relay_stayed_responsive.py`` checks the record last).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import AgentProc, Procs, RelayProc, issue_token, start_agent
from tests.faults.stack import CountingOrigin, HealthProbe

DOMAIN = "tunnels.test"
MAX_BODY = 1024 * 1024
CALLER_TOKEN = "caller-bearer-7Hq2vN0pXc"
BASIC_USER, BASIC_PASSWORD = "ops", "basic-pass:9dK1"


@dataclasses.dataclass
class Edge:
    relay: RelayProc
    agents: dict[str, AgentProc]
    origins: dict[str, CountingOrigin]
    probe: HealthProbe
    state_dir: Path

    def totals(self) -> dict[str, int]:
        """Requests each origin has seen so far."""
        return {name: origin.total for name, origin in self.origins.items()}

    def url(self, name: str, path: str = "") -> str:
        return f"{self.relay.url}/a/{name}/{path}"


@pytest.fixture(scope="session")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    state = tmp_path_factory.mktemp("security")
    procs = Procs()
    origins = {name: CountingOrigin() for name in ("alpha", "beta", "guarded")}
    probe: HealthProbe | None = None
    try:
        for origin in origins.values():
            origin.start()
        relay = procs.add(
            RelayProc(state, "--domain", DOMAIN, "--max-body", str(MAX_BODY), name="relay")
        )
        probe = HealthProbe(relay.port).start()
        auth = {
            "guarded": (
                "--caller-auth",
                f"bearer:{CALLER_TOKEN}",
                "--caller-auth",
                f"basic:{BASIC_USER}:{BASIC_PASSWORD}",
            )
        }
        agents = {
            name: procs.add(
                start_agent(
                    relay,
                    issue_token(state, name),
                    str(origin.port),
                    *auth.get(name, ()),
                    name=f"agent-{name}",
                )
            )
            for name, origin in origins.items()
        }
        yield Edge(relay, agents, origins, probe, state)
    finally:
        if probe is not None:
            probe.stop()
        procs.stop_all()
        for origin in origins.values():
            origin.stop()
