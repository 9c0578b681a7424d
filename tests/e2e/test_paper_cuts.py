"""Small things that got in the way of a first-time user (issue: tried as an ngrok user
would), each as the user hits it: real ``edge-relay`` and ``edge-agent`` processes."""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.origin import Origin
from tests.e2e.procs import AgentProc, Procs, RelayProc, issue_token, run_cli

#: Seconds within which a refused agent prints its line and exits.
EXIT_WITHIN = 15.0


def test_agent_dash_h_is_help() -> None:
    done = run_cli("edge-agent", "-h")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: edge-agent ")
    http = run_cli("edge-agent", "http", "-h")
    assert http.returncode == 0 and "Usage: edge-agent http" in http.stdout
    # --help says where secrets may come from instead of flags (which ps shows).
    flat = " ".join(http.stdout.split())
    assert "env: EDGE_RELAY_TOKEN" in flat and "env: EDGE_CALLER_AUTH" in flat
    assert "~/.config/edge-agent/config.toml" in flat and "0600" in flat
    assert "--app-dir" in flat


def test_token_commands_take_config_after_the_subcommand(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "relay.toml"
    config.write_text(f'state-dir = "{state}"\n')
    issued = run_cli("edge-relay", "token", "issue", "cfg", "--config", str(config))
    assert issued.returncode == 0, issued.stderr
    listed = run_cli("edge-relay", "token", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("cfg\t")
    before = run_cli("edge-relay", "--config", str(config), "token", "list")  # as before
    assert before.stdout == listed.stdout
    revoked = run_cli("edge-relay", "token", "revoke", "cfg", "--config", str(config))
    assert revoked.returncode == 0, revoked.stderr
    assert run_cli("edge-relay", "token", "list", "--config", str(config)).stdout == ""


def test_revoked_tunnel_is_gone_not_offline(origin: Origin, tmp_path: Path) -> None:
    with Procs() as procs:
        relay = procs.add(RelayProc(tmp_path, name="relay-revoke"))
        token = issue_token(tmp_path, "gone")
        agent = procs.add(
            AgentProc(str(origin.port), "--relay", relay.url, "--token", token, name="agent-gone")
        )
        url = agent.wait_url()
        with httpx.Client(timeout=10.0) as client:
            assert client.get(url + "echo").status_code == 200
            assert run_cli("edge-relay", "token", "revoke", "gone", "--state-dir", str(tmp_path))
            assert agent.wait(EXIT_WITHIN) == 3  # told its token was revoked: no retry
            got = client.get(url + "echo")
            assert got.status_code == 410, got.text
            assert got.headers["x-edge-error"] == "tunnel_revoked"
            assert "retry-after" not in got.headers
            # A new token for the name: offline (its agent may come), not gone.
            issue_token(tmp_path, "gone")
            offline = client.get(url + "echo")
            assert offline.status_code == 503 and offline.headers["retry-after"]


@pytest.mark.parametrize("target", ["port", "app"])
def test_second_ctrl_c_leaves_no_empty_status(origin: Origin, tmp_path: Path, target: str) -> None:
    where = [str(origin.port)] if target == "port" else ["--app", "tests.e2e.asgi_app:app"]
    with Procs() as procs:
        relay = procs.add(RelayProc(tmp_path, "--open", name="relay-quit"))
        agent = procs.add(AgentProc(*where, "--relay", relay.url, "--name", "quit", name="agent-q"))
        url = agent.wait_url()
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as caller:
            # No response head yet: the line once had an empty status after a second Ctrl-C.
            caller.sendall(b"GET /a/quit/hold?key=q&head=0 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(1)
            agent.signal(signal.SIGINT)
            agent.wait_line(r"^Draining", 10)
            agent.signal(signal.SIGINT)
            agent.wait(EXIT_WITHIN)
        line = agent.wait_line(r"^\S+ GET /hold\?key=q&head=0 .*", 5).group(0)
        clock, method, target, outcome, *_rest = line.split(" ")
        assert re.fullmatch(r"\d\d:\d\d:\d\d", clock), line  # the time of day
        assert (method, target) == ("GET", "/hold?key=q&head=0"), line
        # No head came: the reset code stands where the status would be.
        assert re.fullmatch(r"[A-Z_]+", outcome), line
        assert url.endswith("/a/quit/")


APP_MODULE = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"hello from the app dir"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.fixture(scope="module")
def open_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProc]:
    with Procs() as procs:
        yield procs.add(RelayProc(tmp_path_factory.mktemp("open"), "--open", name="relay-open"))


def test_default_config_file_app_dir_and_secret_warning(
    open_relay: RelayProc, tmp_path: Path
) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "paper_cut_app.py").write_text(APP_MODULE)
    config = tmp_path / "xdg" / "edge-agent" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'relay = "{open_relay.url}"\nname = "cfg"\napp = "paper_cut_app:app"\n'
        f'app-dir = "{apps}"\ncaller-auth = "bearer:file-secret"\n'
    )
    config.chmod(0o644)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    with Procs() as procs:
        # No flag at all: everything comes from ~/.config/edge-agent/config.toml.
        agent = procs.add(AgentProc("--no-inspect", name="agent-cfg", env=env))
        url = agent.wait_url()
        warning = agent.wait_line(r"^WARNING: .*config\.toml holds caller_auth.*", 5).group(0)
        assert f"chmod 600 {config}" in warning
        assert "file-secret" not in agent.output()
        with httpx.Client(timeout=10.0) as client:
            assert client.get(url).status_code == 401
            got = client.get(url, headers={"Authorization": "Bearer file-secret"})
            assert (got.status_code, got.text) == (200, "hello from the app dir")
        agent.stop()
        config.chmod(0o600)
        again = procs.add(AgentProc("--no-inspect", name="agent-cfg-600", env=env))
        again.wait_url()
        assert again.count(r"^WARNING") == 0, again.output()


def test_secrets_from_the_environment(
    open_relay: RelayProc, origin: Origin, tmp_path: Path
) -> None:
    env = {
        "XDG_CONFIG_HOME": str(tmp_path),  # no config file there
        "EDGE_RELAY_URL": open_relay.url,
        "EDGE_CALLER_AUTH": "bearer:env-secret basic:ann:pass:word",
    }
    with Procs() as procs:
        agent = procs.add(AgentProc(str(origin.port), "--name", "envs", name="agent-env", env=env))
        url = agent.wait_url()
        cmdline = Path(f"/proc/{agent.pid}/cmdline").read_bytes()
        assert b"env-secret" not in cmdline  # nothing for ps to show
        with httpx.Client(timeout=10.0) as client:
            assert client.get(url + "echo").status_code == 401
            bearer = {"Authorization": "Bearer env-secret"}
            assert client.get(url + "echo", headers=bearer).status_code == 200
            assert client.get(url + "echo", auth=("ann", "pass:word")).status_code == 200


def test_missing_app_dir_is_one_line(open_relay: RelayProc, tmp_path: Path) -> None:
    with Procs() as procs:
        agent = procs.add(
            AgentProc(
                "--app", "nothing:app", "--app-dir", str(tmp_path / "none"),
                "--relay", open_relay.url, name="agent-nodir",
            )
        )  # fmt: skip
        assert agent.wait(EXIT_WITHIN) == 2
        assert agent.wait_line(r"^edge-agent: error: --app-dir .*none: no such folder$", 5)


def test_reserved_name_in_open_mode_says_so(open_relay: RelayProc) -> None:
    with Procs() as procs:
        agent = procs.add(AgentProc("9", "--relay", open_relay.url, "--name", "www", name="www"))
        assert agent.wait(EXIT_WITHIN) == 3
        line = agent.wait_line(r"^edge-agent: error: .*", 5).group(0)
        assert "the name www is reserved" in line
        assert "token" not in line, line  # open mode: nothing about a relay token
