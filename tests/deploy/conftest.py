"""Shared by the deployment tests: the Caddy stack, started once per run.

An origin, ``edge-relay serve --domain edge.test`` on a loopback port, Caddy on another
one (deploy/Caddyfile, internal CA), and ``edge-agent http`` connected *through Caddy*
(its tunnel WebSocket crosses the proxy, over TLS). Tunnel names are reached by host
name over HTTPS: clients connect to 127.0.0.1 and send the name as SNI and Host, so no
DNS is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import httpx
import pytest

from tests.deploy.caddy import Caddy
from tests.e2e.origin import Origin
from tests.e2e.procs import AgentProc, Procs, RelayProc, free_port, issue_token

DOMAIN: Final = "edge.test"
RELAY_HOST: Final = "localhost"


@dataclass
class Stack:
    origin: Origin
    relay: RelayProc
    caddy: Caddy
    agent: AgentProc

    def get(self, host: str, path: str) -> httpx.Response:
        with self.client() as client:
            return client.send(self.request(client, host, path))

    def request(self, client: httpx.Client, host: str, path: str) -> httpx.Request:
        """GET ``path`` from Caddy on 127.0.0.1 for ``host`` (its SNI and Host header)."""
        url = f"https://127.0.0.1:{self.caddy.port}{path}"
        return client.build_request(
            "GET", url, headers={"host": host}, extensions={"sni_hostname": host}
        )

    def client(self) -> httpx.Client:
        # httpx defaults written down: no pooling needed, 10 s is plenty on loopback.
        return httpx.Client(verify=self.caddy.client_context(), timeout=10.0)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("caddy")
    with Origin() as origin, Procs() as procs:
        port = free_port()
        public_url = f"https://{RELAY_HOST}:{port}"
        relay = procs.add(
            RelayProc(
                home / "state",
                *("--domain", DOMAIN, "--public-url", public_url),
                *("--trusted-proxy", "127.0.0.1/32"),  # Caddy, as docs/deploy.md sets it
            )
        )
        token = issue_token(home / "state", "demo")
        caddy = procs.add(Caddy(home, f"127.0.0.1:{relay.port}", RELAY_HOST, DOMAIN, port))
        agent = procs.add(
            AgentProc(
                str(origin.port),
                "--relay",
                public_url,
                "--ca-file",
                str(caddy.root_ca),
                name="agent",
                env={"EDGE_RELAY_TOKEN": token},
            )
        )
        agent.url = agent.wait_url()
        yield Stack(origin, relay, caddy, agent)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print why deployment tests were skipped (a missing daemon or package), even
    without ``-rs``: a skip here means a part of deploy/ went untested."""
    skipped = terminalreporter.stats.get("skipped", [])
    reasons = sorted(
        {
            str(report.longrepr[2]).removeprefix("Skipped: ")
            for report in skipped
            if "tests/deploy/" in report.nodeid and isinstance(report.longrepr, tuple)
        }
    )
    for reason in reasons:
        terminalreporter.write_line(f"tests/deploy skipped: {reason}")
