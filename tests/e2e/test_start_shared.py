"""``edge-agent start``: tunnels to one relay share ONE connection (docs/protocol.md
section 10.5), against a real relay; refusals and revocations hit one name only."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import BIN, Proc, Procs, RelayProc, clean_env, issue_token, run_cli
from tests.e2e.test_start import servers  # noqa: F401 (a fixture)

EXIT_AUTH = 3


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as http:
        yield http


def _metric(http: httpx.Client, relay: RelayProc, name: str) -> float:
    text = http.get(f"{relay.url}/_edge/metrics").text
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match is not None, text
    return float(match.group(1))


def _start(procs: Procs, path: Path, text: str) -> Proc:
    path.write_text(text)
    argv = [str(BIN / "edge-agent"), "start", "--all", "--config", str(path)]
    return procs.add(Proc("agent", argv, env=clean_env()))


def _revoke(relay: RelayProc, name: str) -> None:
    done = run_cli("edge-relay", "token", "revoke", name, "--state-dir", str(relay.state_dir))
    assert done.returncode == 0, done.stderr


def test_one_connection_carries_the_tunnels_and_refuses_one_alone(
    procs: Procs,
    servers: list[int],  # noqa: F811
    tmp_path: Path,
    client: httpx.Client,
) -> None:
    relay = procs.add(RelayProc(tmp_path / "state"))
    web_token = issue_token(relay.state_dir, "web")
    api_token = issue_token(relay.state_dir, "backend")
    web_port, api_port = servers
    agent = _start(
        procs,
        tmp_path / "agent.toml",
        f'relay = "{relay.url}"\ntoken = "{web_token}"\n'  # inherited by web and other
        f"[tunnels.web]\ntarget = {web_port}\n"
        f'[tunnels.api]\ntarget = {api_port}\ntoken = "{api_token}"\nname = "backend"\n'
        f'[tunnels.other]\ntarget = {web_port}\nname = "other"\n',  # web's token: refused
    )
    agent.wait_line(rf"^\[web\] Forwarding {re.escape(relay.url)}/a/web/ -> ")
    agent.wait_line(rf"^\[api\] Forwarding {re.escape(relay.url)}/a/backend/ -> ")
    agent.wait_line(
        r"^\[other\] the relay refused this tunnel: "
        r"the relay token is for the name web, not other$"
    )
    web, api = f"{relay.url}/a/web/", f"{relay.url}/a/backend/"
    assert client.get(web + "one").text == f"{web_port} /one"
    assert client.get(api + "two").text == f"{api_port} /two"
    agent.wait_line(r"^\[web\] \d\d:\d\d:\d\d GET /one 200 ")
    agent.wait_line(r"^\[api\] \d\d:\d\d:\d\d GET /two 200 ")
    # ONE agent connection, two names (and the refused one nowhere).
    assert relay.count(r"agent_connected") == 1
    assert relay.count(r"tunnel_shared agent=backend via=web") == 1
    assert _metric(client, relay, "edge_agents_connected") == 1
    assert _metric(client, relay, "edge_tunnels_connected") == 2
    assert client.get(f"{relay.url}/a/other/").status_code == 404  # unknown_tunnel
    assert "Traceback" not in "\n".join(agent.lines)

    # An old-style single-name agent beside it works as before.
    old_token = issue_token(relay.state_dir, "single")
    argv = [str(BIN / "edge-agent"), "http", str(api_port), "--relay", relay.url]
    single = procs.add(Proc("single", [*argv, "--token", old_token], env=clean_env()))
    single.wait_line(r"^Forwarding \S+/a/single/ -> ")
    assert client.get(f"{relay.url}/a/single/three").text == f"{api_port} /three"
    assert _metric(client, relay, "edge_agents_connected") == 2
    assert _metric(client, relay, "edge_tunnels_connected") == 3

    # backend's token revoked: that name goes, web on the same connection stays.
    _revoke(relay, "backend")
    relay.wait_line(r"tunnel_dropped agent=backend via=web code=UNAUTHORIZED")
    assert client.get(api + "two").status_code == 410  # its token is gone
    assert client.get(web + "still").text == f"{web_port} /still"
    assert relay.count(r"agent_connected") == 2  # no reconnect: web's session went on
    assert agent.alive()
    agent.signal(signal.SIGINT)
    assert agent.wait(15) == 0
    for token in (web_token, api_token):  # they went in HELLO: never in a log line
        assert all(token not in line for line in [*relay.lines, *agent.lines])


def test_the_first_tunnels_token_revoked_the_rest_reconnect(
    procs: Procs,
    servers: list[int],  # noqa: F811
    tmp_path: Path,
    client: httpx.Client,
) -> None:
    relay = procs.add(RelayProc(tmp_path / "state"))
    web_token = issue_token(relay.state_dir, "web")
    api_token = issue_token(relay.state_dir, "backend")
    web_port, api_port = servers
    agent = _start(
        procs,
        tmp_path / "agent.toml",
        f'relay = "{relay.url}"\n'
        f'[tunnels.web]\ntarget = {web_port}\ntoken = "{web_token}"\n'
        f'[tunnels.api]\ntarget = {api_port}\ntoken = "{api_token}"\n',  # the token names it
    )
    agent.wait_line(rf"^\[api\] Forwarding {re.escape(relay.url)}/a/backend/ -> ")
    _revoke(relay, "web")
    agent.wait_line(r"^\[web\] the relay revoked this agent's token: .*; the other tunnels go on$")
    relay.wait_count(r"agent_connected agent=backend", 1)
    assert client.get(f"{relay.url}/a/backend/x").text == f"{api_port} /x"
    assert client.get(f"{relay.url}/a/web/x").status_code == 410
    assert _metric(client, relay, "edge_agents_connected") == 1
    # The last one's token revoked too: nothing is left, the agent stops with its error.
    _revoke(relay, "backend")
    assert agent.wait(15) == EXIT_AUTH
    agent.wait_line(r"^edge-agent: error: \[api\] the relay revoked this agent's token")


def test_open_mode_one_connection_without_tokens(
    procs: Procs,
    servers: list[int],  # noqa: F811
    tmp_path: Path,
    client: httpx.Client,
) -> None:
    relay = procs.add(RelayProc(tmp_path / "state", "--open"))
    web_port, api_port = servers
    agent = _start(
        procs,
        tmp_path / "agent.toml",
        f'relay = "{relay.url}"\n'
        f'[tunnels.web]\ntarget = {web_port}\nname = "site"\n'
        f'[tunnels.api]\ntarget = {api_port}\nname = "backend"\n'
        f'[tunnels.adm]\ntarget = {api_port}\nname = "admin"\n',
    )
    agent.wait_line(r"^\[adm\] the relay refused this tunnel: the name admin is reserved$")
    agent.wait_line(rf"^\[api\] Forwarding {re.escape(relay.url)}/a/backend/ -> ")
    assert client.get(f"{relay.url}/a/site/a").text == f"{web_port} /a"
    assert client.get(f"{relay.url}/a/backend/b").text == f"{api_port} /b"
    assert relay.count(r"agent_connected") == 1
    assert _metric(client, relay, "edge_tunnels_connected") == 2
    agent.signal(signal.SIGINT)
    assert agent.wait(15) == 0
