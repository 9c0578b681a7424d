"""``edge-agent start``: two tunnels from one config file in one process, against a real
relay, each forwarding to its own local server."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import (
    BIN,
    Proc,
    Procs,
    RelayProc,
    clean_env,
    http_servers,
    issue_token,
    run_cli,
)


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{self.server.server_address[1]} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[list[int]]:
    """Two local servers on 127.0.0.1; each answers ``<its port> <path>``."""
    with http_servers(_Hello, 2) as ports:
        yield ports


def _config(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_two_tunnels_one_process(procs: Procs, servers: list[int], tmp_path: Path) -> None:
    relay = procs.add(RelayProc(tmp_path / "state"))
    web_token = issue_token(relay.state_dir, "web")
    api_token = issue_token(relay.state_dir, "backend")
    web_port, api_port = servers
    config = _config(
        tmp_path / "agent.toml",
        f'relay = "{relay.url}"\ntoken = "{web_token}"\n'  # inherited by web
        f"[tunnels.web]\ntarget = {web_port}\n"
        f'[tunnels.api]\ntarget = "http://127.0.0.1:{api_port}"\n'
        f'token = "{api_token}"\nname = "backend"\n',
    )
    argv = [str(BIN / "edge-agent"), "start", "web", "api", "--config", config]
    agent = procs.add(Proc("agent", argv, env=clean_env()))
    # A loopback relay routes <name>.localhost too: each tunnel prints that URL first.
    port = relay.url.rsplit(":", 1)[1]
    for tag, name, target in (("web", "web", web_port), ("api", "backend", api_port)):
        for url in (f"http://{name}.localhost:{port}/", f"{relay.url}/a/{name}/"):
            line = rf"^\[{tag}\] Forwarding {re.escape(url)} -> http://127.0.0.1:{target}$"
            agent.wait_line(line)
    web, api = f"{relay.url}/a/web/", f"{relay.url}/a/backend/"
    with httpx.Client(trust_env=False, timeout=10) as client:
        assert client.get(web + "one").text == f"{web_port} /one"
        assert client.get(api + "two?x=1").text == f"{api_port} /two?x=1"
    agent.wait_line(r"^\[web\] \d\d:\d\d:\d\d GET /one 200 \d+ ms \d+ B$")
    agent.wait_line(r"^\[api\] \d\d:\d\d:\d\d GET /two\?x=1 200 \d+ ms \d+ B$")
    assert relay.count(r"agent_connected") == 1  # one connection carries both
    agent.signal(signal.SIGINT)
    assert agent.wait(15) == 0


def test_a_tunnel_that_fails_for_good_stops_the_process(
    procs: Procs, servers: list[int], tmp_path: Path
) -> None:
    relay = procs.add(RelayProc(tmp_path / "state"))
    token = issue_token(relay.state_dir, "web")
    config = _config(
        tmp_path / "agent.toml",
        f'relay = "{relay.url}"\ntoken = "{token}"\n'
        # Other keepalive settings: a connection of its own (test_start_shared: one).
        f"[tunnels.web]\ntarget = {servers[0]}\nping-interval = 5\n"
        f'[tunnels.other]\ntarget = {servers[1]}\nname = "other"\n',  # not the token's name
    )
    done = run_cli("edge-agent", "start", "--all", "--config", config)
    assert done.returncode == 3, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("edge-agent: error: [other] the relay refused the name (403"), last


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[tunnels.web]\ntarget = 8001\ntargte = 8002\n",
            "{path}: unknown key in [tunnels.web]: targte",
        ),
        (
            '[tunnels.web]\ntarget = ["8001", "8000"]\n',
            "{path}: [tunnels.web] target must be a port number or a URL string, not an array",
        ),
        ('relya = "x"\n[tunnels.web]\ntarget = 1\n', "{path}: unknown key at the top level: relya"),
        (
            "[tunnel.web]\ntarget = 1\n",
            "{path}: unknown table [tunnel] (known: [http], [run], [tunnels])",
        ),
        (
            '[tunnels.web]\ntarget = 1\ninsecure = "yes"\n',
            "{path}: [tunnels.web] insecure must be true or false, not a string",
        ),
        (
            "[tunnels.web]\n",
            "{path}: [tunnels.web] give either a TARGET (port or URL) or --app module:attr",
        ),
        (
            '[tunnels.web]\ntarget = 1\n[tunnels.x]\ntarget = 2\nname = "Bad_Name"\n',
            "{path}: [tunnels.x] tunnel name 'Bad_Name' is not a lowercase DNS label (a-z, 0-9, -)",
        ),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, text: str, message: str) -> None:
    config = _config(tmp_path / "agent.toml", 'relay = "http://127.0.0.1:9"\n' + text)
    done = run_cli("edge-agent", "start", "--all", "--config", config)
    assert done.returncode == 2
    assert f"Error: {message.format(path=config)}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'target = ["8001", "8000"]\n',
            "target must be a port number or a URL string, not an array",
        ),
        ('relya = "x"\n', "unknown key at the top level: relya"),
        ('[http]\ntarget = 1\nnmae = "x"\ntokne = "y"\n', "unknown keys in [http]: nmae, tokne"),
    ],
)
def test_http_rejects_them_too(tmp_path: Path, text: str, message: str) -> None:
    config = _config(tmp_path / "agent.toml", text)
    done = run_cli("edge-agent", "http", "--config", config, "--relay", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert f"Error: {config}: {message}" in done.stderr
    assert "Traceback" not in done.stderr


def test_start_names_what_to_start(tmp_path: Path) -> None:
    config = _config(
        tmp_path / "agent.toml", "[tunnels.web]\ntarget = 1\n[tunnels.api]\ntarget = 2\n"
    )
    for args, message in [
        ((), "name the tunnels to start (web, api) or pass --all"),
        (("nope",), f"no tunnel 'nope' in {config} (it has: web, api)"),
        (("web", "--all"), "name tunnels or pass --all, not both"),
    ]:
        done = run_cli("edge-agent", "start", *args, "--config", config)
        assert done.returncode == 2 and f"Error: {message}" in done.stderr, done.stderr
