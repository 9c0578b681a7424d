"""Host routing with no DNS work in development: a relay on loopback without ``--domain``
routes ``<name>.localhost:PORT`` (browsers and curl send every ``*.localhost`` to
loopback), and ``edge-agent http`` prints that URL first, the path URL second.

curl resolves ``*.localhost`` itself, so it is called with the real host name. Python's
resolver (glibc with ``hosts: files dns``) does not know ``demo.localhost``: the Python
client connects to 127.0.0.1 and sends ``Host: demo.localhost:PORT``, which is what a
browser sends.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import AgentProc, Procs, RelayProc, http_servers, issue_token


class _App(http.server.BaseHTTPRequestHandler):
    """A web app written for the root of its host: absolute redirects, its own /_edge/."""

    def do_GET(self) -> None:
        if self.path == "/login":
            self._send(302, b"", (("Location", "/home"),))
        elif self.path == "/home":
            self._send(200, f"home of {self.headers['Host']}".encode())
        elif self.path == "/_edge/healthz":
            self._send(200, b"the app's own /_edge/healthz")
        else:
            self._send(404, b"no such page")

    def _send(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def app_port() -> Iterator[int]:
    with http_servers(_App) as ports:
        yield ports[0]


def _curl(*args: str) -> str:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (apt-get install curl)")
    done = subprocess.run(
        [curl, "-sS", "--max-time", "10", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_loopback_relay_routes_name_localhost(tmp_path: Path, app_port: int) -> None:
    with Procs() as procs:
        relay = procs.add(RelayProc(tmp_path, name="relay-localhost"))
        token = issue_token(tmp_path, "demo")
        agent = procs.add(
            AgentProc(str(app_port), "--relay", relay.url, "--token", token, name="agent-lh")
        )
        host_url = f"http://demo.localhost:{relay.port}/"
        path_url = f"{relay.url}/a/demo/"
        agent.wait_line(r"^Forwarding .*/a/demo/ -> ")
        shown = [line for line in agent.lines if line.startswith("Forwarding ")]
        assert shown == [
            f"Forwarding {host_url} -> http://127.0.0.1:{app_port}",
            f"Forwarding {path_url} -> http://127.0.0.1:{app_port}",
        ]

        # An absolute redirect stays on the tunnel's host (under /a/demo/ it would leave it).
        assert _curl("-L", host_url + "login") == f"home of demo.localhost:{relay.port}"
        # /_edge/ on a tunnel's host is the app's; on the relay's own host, the relay's.
        assert _curl(host_url + "_edge/healthz") == "the app's own /_edge/healthz"
        assert '"status": "ok"' in _curl(f"{relay.url}/_edge/healthz")

        with httpx.Client(timeout=10.0) as client:
            got = client.get(f"{relay.url}/home", headers={"Host": f"demo.localhost:{relay.port}"})
            assert got.status_code == 200 and got.text == f"home of demo.localhost:{relay.port}"
            # The path URL still works (A2A needs its one fixed base).
            assert client.get(path_url + "home").status_code == 200
            # An unknown name under localhost is the relay's 404, not someone else's app.
            other = client.get(relay.url + "/", headers={"Host": f"nobody.localhost:{relay.port}"})
            assert other.status_code == 404 and other.headers["x-edge-error"] == "unknown_tunnel"


def test_relay_with_a_public_host_prints_no_localhost_url(tmp_path: Path, app_port: int) -> None:
    with Procs() as procs:
        relay = procs.add(
            RelayProc(tmp_path, "--open", "--public-url", "http://relay.test:9", name="relay-pub")
        )
        agent = procs.add(
            AgentProc(str(app_port), "--relay", relay.url, "--name", "pub", name="agent-pub")
        )
        agent.wait_line(r"^Forwarding http://relay\.test:9/a/pub/ -> ")
        assert agent.count(r"^Forwarding ") == 1, agent.output()
        # And a Host under localhost is not routed there (path routing only).
        with httpx.Client(timeout=10.0) as client:
            got = client.get(relay.url + "/home", headers={"Host": f"pub.localhost:{relay.port}"})
        assert got.status_code == 404 and got.headers["x-edge-error"] == "unknown_tunnel"
