"""The command under ``edge-agent run ... -- CMD``: a crash loop that ends the run with the
command's code, and a secret rotated on the platform while it runs (real processes, both
platform generations)."""

from __future__ import annotations

import hashlib
import json
import sys

from tests.molecule_e2e.conftest import Stack
from tests.molecule_e2e.test_run import SETTLE, _read, eventually

CRASHING = "import sys; print('child: crashing', flush=True); sys.exit(7)"


def test_a_crash_loop_ends_the_run_with_the_commands_code(stack: Stack) -> None:
    ws = stack.workspace("crash-loop")
    agent = stack.start_agent(
        ws, "--to", "8000", "--max-restarts", "2", "--ping-interval", "2", "--ping-timeout", "2",
        "--", sys.executable, "-c", CRASHING,
    )  # fmt: skip
    assert agent.wait(SETTLE) == 7
    error = agent.wait_line(r"edge-agent: error: the command .* keeps failing")
    assert "exited with code 7 after 2 restarts within 600 s" in error.string
    assert agent.count(r"^child: crashing$") == 3  # the first start and two restarts
    assert agent.count(r"child_restart_scheduled") == 2


def test_a_rotated_secret_restarts_the_command_with_the_new_value(stack: Stack) -> None:
    ws = stack.workspace("rotated")
    old, new = "first-" + ws.id[:8], "second-" + ws.id[:8]
    stack.admin.set_secret(ws.id, "DEMO_SECRET", old)
    child_file = stack.tmp / "rotated-child.json"
    agent = stack.start_agent(
        ws, "--to", stack.origin.url, "--secrets-refresh", "1", *stack.child_command(child_file)
    )
    first = json.loads(eventually(lambda: _read(child_file), what="child env file"))
    assert first["digest"] == hashlib.sha256(old.encode()).hexdigest()
    stack.admin.set_secret(ws.id, "DEMO_SECRET", new)

    def restarted() -> dict[str, str] | None:
        seen = json.loads(_read(child_file) or "{}")
        return seen if seen.get("pid") not in (None, first["pid"]) else None

    second = eventually(restarted, what="the command restarted")
    assert second["digest"] == hashlib.sha256(new.encode()).hexdigest()
    agent.wait_line(r"child_secrets_changed .*keys=\['DEMO_SECRET'\]")
    assert agent.alive() and agent.count(r"child_restart_scheduled") == 0
    assert old not in agent.output() and new not in agent.output()
