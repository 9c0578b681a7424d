"""``edge-agent run`` against the dev platform and the relay, all real processes, in
both platform generations (the ``stack`` fixture is parametrized).

The tests on the shared agent (``served``) leave it serving; the ones that end an
agent (deletion, revocation) start their own workspace and agent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from tests.e2e.procs import run_cli
from tests.molecule_e2e.conftest import Served, Stack
from tests.molecule_e2e.stack import (
    AGENT_CALL_CEILING,
    HEARTBEAT,
    RunAgent,
    answer_text,
    jsonrpc,
)

T = TypeVar("T")

#: Wide margins: the machine is shared and noisy.
SETTLE = 30.0


def eventually(check: Callable[[], T | None], within: float = SETTLE, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {within} s: {what or check}")
        time.sleep(0.1)


def call_works(served: Served, text: str) -> bool:
    resp = served.stack.admin.a2a(served.ws.id, text)
    return resp.status_code == 200 and answer_text(resp) == text.upper()


def direct(url: str, secret: str | None) -> httpx.Response:
    """A call to the public URL itself, bypassing the platform."""
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    return httpx.post(url, content=jsonrpc("direct"), headers=headers, timeout=30)


def inbound_secret(served: Served) -> str | None:
    path = served.ws.token_dir / served.ws.id / ".platform_inbound_secret"
    return path.read_text() if path.exists() else None


# -- the shared agent ------------------------------------------------------------------


def test_registers_the_relay_url_and_a_card_pointing_at_it(served: Served) -> None:
    expected = served.stack.relay.workspace_url(served.ws.id)
    assert served.url == expected
    row = served.stack.admin.workspace(served.ws.id)
    assert row["url"] == expected
    assert row["status"] == "online"
    card = row["agent_card"]
    assert card["url"] == expected
    assert {i["url"] for i in card["supportedInterfaces"]} == {expected}
    generation = "next" if served.stack.is_next else "current"
    served.agent.wait_line(rf"^Registered: workspace {served.ws.id} .*generation {generation}")


def test_a2a_call_through_the_platform_proxy_reaches_the_local_agent(served: Served) -> None:
    text = f"hello {uuid.uuid4().hex[:8]}"
    message_id = str(uuid.uuid4())
    resp = served.stack.admin.a2a(served.ws.id, text, message_id=message_id)
    assert answer_text(resp) == text.upper()  # the example agent's answer, back in full
    assert served.stack.origin.recorder.deliveries[message_id] == 1
    # The request line (the child's own output shares the agent's stdout and may end
    # on the same line when both write at once).
    served.agent.wait_line(r"POST / 200 ")


def test_the_tunnel_accepts_only_what_the_platform_may_send(served: Served) -> None:
    secret = inbound_secret(served)
    if not served.stack.is_next:
        # "current" sends no credential with its calls: the tunnel must stay open.
        assert secret is None
        assert direct(served.url, None).status_code == 200
        return
    assert secret is not None
    refused = direct(served.url, None)
    assert refused.status_code == 401
    assert refused.headers["x-edge-error"] == "caller_unauthorized"
    assert direct(served.url, "not-the-secret").status_code == 401
    assert direct(served.url, secret).status_code == 200
    assert call_works(served, "through the proxy")  # which presents the secret


def test_secrets_reach_the_command_and_never_the_output(served: Served) -> None:
    seen = json.loads(eventually(lambda: _read(served.child_file), what="child env file"))
    assert "DEMO_SECRET" in seen["keys"]
    assert seen["digest"] == hashlib.sha256(served.secret_value.encode()).hexdigest()
    served.agent.wait_line(r"^Starting \S+ with secrets: DEMO_SECRET \(values not shown\)")
    served.agent.wait_line(r"^child: environment written")  # its output passes through
    output = "\n".join(served.agent.lines)
    assert served.secret_value not in output
    assert served.ws.token not in output  # nor the platform token
    secret = inbound_secret(served)
    assert secret is None or secret not in output


def test_the_token_cache_is_private(served: Served) -> None:
    folder = served.ws.token_dir / served.ws.id
    token_file = folder / ".auth_token"
    assert token_file.read_text() == served.ws.token
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_resent_message_reaches_the_local_agent_once(served: Served) -> None:
    stack = served.stack
    caller_id, caller_token = stack.admin.create_workspace(f"caller-{uuid.uuid4().hex[:6]}")
    message_id = str(uuid.uuid4())
    delay = AGENT_CALL_CEILING + 2
    started = time.monotonic()
    queued = stack.admin.a2a(
        served.ws.id,
        "slow one",
        message_id=message_id,
        metadata={"delay": delay},
        caller=(caller_id, caller_token),
    )
    # The platform gave up on the slow answer and queued the call for a re-send.
    assert queued.status_code == 202, queued.text
    assert queued.json()["queued"] is True
    assert time.monotonic() - started < delay
    # A heartbeat after the first delivery finished re-sends it; the agent answers from
    # its cache, so the local agent saw the message once.
    served.agent.wait_line(rf"dedup_replayed message_id={message_id}", SETTLE)
    recorder = stack.origin.recorder
    assert recorder.completed[message_id] == 1
    assert recorder.deliveries[message_id] == 1


def test_pause_answers_503_until_resumed(served: Served) -> None:
    stack, ws = served.stack, served.ws
    paused_before = served.agent.count(r"^Paused on the platform")
    stack.admin.pause(ws.id)
    served.agent.wait_count(r"^Paused on the platform", paused_before + 1, SETTLE)
    refused = direct(served.url, inbound_secret(served))
    assert refused.status_code == 503
    assert refused.headers["x-edge-error"] == "agent_unavailable"
    assert stack.admin.a2a(ws.id, "while paused").status_code == 503  # no URL on the platform
    registered = served.agent.registrations()
    stack.admin.resume(ws.id)
    served.agent.wait_line(r"^Resumed on the platform")
    eventually(lambda: served.agent.registrations() > registered, what="re-registered")
    assert call_works(served, "after resume")


def test_the_agent_reconnects_after_a_relay_restart(served: Served) -> None:
    relay = served.stack.relay
    assert call_works(served, "before the relay restart")
    connects = served.agent.count(r"tunnel_connected")
    relay.restart()
    served.agent.wait_count(r"tunnel_connected", connects + 1, 60)
    eventually(lambda: call_works(served, "after the relay restart"), what="calls work again")


def test_the_agent_registers_again_after_a_platform_restart(served: Served) -> None:
    stack = served.stack
    registered = served.agent.registrations()
    # SIGKILL, then the same port and database. The outage outlasts a heartbeat
    # interval, so the agent sees it (a shorter one can pass unnoticed, which is fine:
    # the platform kept its state).
    stack.platform.restart(down_for=3 * HEARTBEAT)
    eventually(lambda: served.agent.registrations() > registered, 60, "registered again")
    eventually(lambda: call_works(served, "after the platform restart"), what="calls work")
    assert served.agent.alive()


def test_peers_and_card_commands_use_the_cached_token(served: Served) -> None:
    stack, ws = served.stack, served.ws
    base = ["--platform", stack.platform.url, "--workspace-id", ws.id, "--token-dir"]
    done = _edge_agent("peers", *base, str(ws.token_dir), "--json")
    peers = json.loads(done.stdout)
    assert peers and all(p["id"] != ws.id for p in peers)  # other root workspaces
    done = _edge_agent("peers", *base, str(ws.token_dir), ws.id)
    assert served.url in done.stdout
    done = _edge_agent("card", *base, str(ws.token_dir), "--agent-name", "renamed by card")
    assert served.url in done.stdout
    card = stack.admin.workspace(ws.id)["agent_card"]
    assert card["name"] == "renamed by card"
    assert card["url"] == served.url


# -- agents that end --------------------------------------------------------------------


def test_token_revocation_stops_the_agent_and_its_command(stack: Stack) -> None:
    ws = stack.workspace("revoked")
    child_file = stack.tmp / "revoked-child.json"
    agent = stack.start_agent(ws, "--to", stack.origin.url, *stack.child_command(child_file))
    agent.wait_line(r"^Registered: ", SETTLE)
    child_pid = json.loads(eventually(lambda: _read(child_file)))["pid"]
    assert stack.admin.revoke_all_tokens(ws.id) == 1
    assert agent.wait(SETTLE) == 5
    error = agent.wait_line(r"edge-agent: error: the platform refused the workspace token .*")
    assert "revoked" in error.string and "was deleted" not in error.string
    eventually(lambda: not _alive(child_pid), 15, "the command was stopped")


def test_workspace_deletion_stops_the_agent(stack: Stack) -> None:
    """Settings from a config file and the environment; the example agent in-process."""
    ws = stack.workspace("deleted")
    config = stack.tmp / "deleted.toml"
    config.write_text(
        f'relay = "{stack.relay.url}"\n'
        f"[run]\n"
        f'platform = "{stack.platform.url}"\n'
        f'app = "examples.a2a_agent:app"\n'
        f'token_dir = "{ws.token_dir}"\n'
        f"heartbeat_interval = 1\n"
    )
    env = {"EDGE_WORKSPACE_ID": ws.id, "EDGE_RELAY_TOKEN": ws.relay_token}
    agent = _bare_agent(stack, ["--config", str(config)], env | {"EDGE_PLATFORM_TOKEN": ws.token})
    agent.wait_line(r"^Registered: ", SETTLE)
    resp = stack.admin.a2a(ws.id, "in process")
    assert answer_text(resp) == "IN PROCESS"
    stack.admin.delete(ws.id)
    assert agent.wait(SETTLE) == 5
    agent.wait_line(rf"edge-agent: error: workspace {ws.id} was deleted on the platform")


def test_a_missing_workspace_token_is_explained(stack: Stack) -> None:
    ws = stack.workspace("tokenless")
    args = [
        "--platform", stack.platform.url, "--workspace-id", ws.id, "--relay", stack.relay.url,
        "--relay-token", ws.relay_token, "--to", stack.origin.url, "--token-dir", str(ws.token_dir),
    ]  # fmt: skip
    agent = _bare_agent(stack, args, {})
    assert agent.wait(SETTLE) == 5
    agent.wait_line(r"edge-agent: error: register: .*already has a token .*--token")


def test_the_command_decides_when_the_run_ends(stack: Stack) -> None:
    """A command that finishes (exit 0) ends the run with 0; one that cannot start
    ends it with the settings error code."""
    finished = stack.start_agent(
        stack.workspace("finishes"), "--to", "8000", "--", sys.executable, "-c", "print('done')"
    )
    missing = stack.start_agent(
        stack.workspace("no-such-command"), "--to", "8000", "--", "/nonexistent/agent-binary"
    )
    assert finished.wait(SETTLE) == 0
    finished.wait_line(r"^done$")
    assert missing.wait(SETTLE) == 2
    missing.wait_line(r"edge-agent: error: cannot start '/nonexistent/agent-binary'")


def test_a_refused_relay_token_ends_the_run(stack: Stack) -> None:
    ws = stack.workspace("wrong-relay-token")
    other = stack.relay.issue(f"other-{uuid.uuid4().hex[:8]}")  # valid, for another name
    agent = stack.start_agent(dataclasses.replace(ws, relay_token=other), "--to", "8000")
    assert agent.wait(SETTLE) == 3
    agent.wait_line(
        r"edge-agent: error: the relay refused the name \(403 name_forbidden: .* other-"
    )
    assert other not in agent.output()


# -- helpers ---------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _bare_agent(stack: Stack, args: list[str], env: dict[str, str]) -> RunAgent:
    """``edge-agent run`` with exactly ``args`` and ``env`` (no defaults added)."""
    return stack.procs.add(RunAgent(args, env, name=f"bare-{stack.generation}"))


def _edge_agent(*args: str) -> subprocess.CompletedProcess[str]:
    done = run_cli("edge-agent", *args)
    assert done.returncode == 0, done.stderr
    return done


def test_the_inspector_masks_the_workspace_secret_values(served: Served) -> None:
    """``run`` hands the pulled secret values to its inspector, which never shows them."""
    served.agent.wait_line(r"^Starting \S+ with secrets: DEMO_SECRET")
    inspector = next(
        line.split()[1] for line in served.agent.lines if line.startswith("Inspector http")
    )
    text = f"the secret is {served.secret_value}"
    served.stack.admin.a2a(served.ws.id, text, message_id=str(uuid.uuid4()))
    rows = eventually(
        lambda: [
            r
            for r in httpx.get(f"{inspector}/api/requests", timeout=5).json()
            if r["method"] == "POST"
        ],
        what="a POST row in the inspector",
    )
    shown = httpx.get(f"{inspector}/api/requests/{rows[0]['id']}", timeout=5).text
    assert served.secret_value not in shown
    assert "[masked]" in shown


def test_the_inspector_serves_the_agent_metrics(served: Served) -> None:
    """``run``'s inspector has the agent's counters on ``/metrics``, as ``http``'s has."""
    inspector = next(
        line.split()[1] for line in served.agent.lines if line.startswith("Inspector http")
    )
    served.stack.admin.a2a(served.ws.id, "count me", message_id=str(uuid.uuid4()))

    def samples() -> dict[str, float] | None:
        text = httpx.get(f"{inspector}/metrics", timeout=5).text
        found = {
            name: float(value)
            for name, value in (
                line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")
            )
        }
        return found if found.get('edge_agent_requests_total{class="2xx"}', 0) >= 1 else None

    found = eventually(samples, what="a 2xx exchange counted on /metrics")
    assert found["edge_agent_connected"] == 1.0
    assert found["edge_agent_request_duration_seconds_count"] >= 1
