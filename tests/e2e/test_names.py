"""Taking over a live name, as users hit it with real processes: both agents are told
(the old one stops instead of fighting for the name); in open mode, only the machine
that holds a live name may take it (its agent key), another one is refused 409.

"Another machine" is an agent whose ``XDG_STATE_HOME`` (where the agent key lives)
differs; "the same machine", one that shares it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.e2e.origin import Origin
from tests.e2e.procs import AgentProc, Procs, RelayProc, issue_token

#: Seconds within which a replaced or refused agent prints its line and exits.
EXIT_WITHIN = 15.0
EXIT_NAME_TAKEN = 4


def _agent(procs: Procs, relay: RelayProc, origin: Origin, state: Path, *args: str) -> AgentProc:
    env = {"XDG_STATE_HOME": str(state), "XDG_CONFIG_HOME": str(state)}
    flags = ["--relay", relay.url, "--no-inspect", *args]
    return procs.add(AgentProc(str(origin.port), *flags, name=f"agent-{state.name}", env=env))


def test_takeover_tells_both_agents(origin: Origin, tmp_path: Path) -> None:
    with Procs() as procs:
        relay = procs.add(RelayProc(tmp_path / "relay", name="relay-names"))
        token = issue_token(tmp_path / "relay", "demo")
        old = _agent(procs, relay, origin, tmp_path / "old", "--token", token)
        url = old.wait_url()
        new = _agent(procs, relay, origin, tmp_path / "new", "--token", token)
        assert new.wait_url() == url
        told = new.wait_line(r"^\d\d:\d\d:\d\d Replaced the session that held demo .*", 5)
        assert "(from 127.0.0.1)" in told.group(0)

        assert old.wait(EXIT_WITHIN) == EXIT_NAME_TAKEN
        line = old.wait_line(r"^edge-agent: error: .*", 5).group(0)
        assert "replaced by a new session for demo from 127.0.0.1" in line, line
        assert "stops rather than fight" in line, line
        time.sleep(1.0)  # a reconnect, were there one, would show up here
        assert relay.count(r"agent_connected agent=demo") == 2, relay.output()
        with httpx.Client(timeout=10.0) as client:
            assert client.get(url + "echo").status_code == 200
        assert new.alive()


def test_open_mode_keeps_a_live_name_for_its_machine(origin: Origin, tmp_path: Path) -> None:
    with Procs() as procs:
        relay = procs.add(RelayProc(tmp_path / "relay", "--open", name="relay-open-names"))
        holder = _agent(procs, relay, origin, tmp_path / "laptop", "--name", "shared")
        url = holder.wait_url()

        # Another machine: refused at once, with one line and no retry.
        other = _agent(procs, relay, origin, tmp_path / "elsewhere", "--name", "shared")
        assert other.wait(EXIT_WITHIN) == EXIT_NAME_TAKEN
        line = other.wait_line(r"^edge-agent: error: .*", 5).group(0)
        assert "409 name_in_use" in line and "another machine" in line, line
        assert "token" not in line, line
        assert re.search(r"agent_refused status=409 code=name_in_use", relay.output())
        assert holder.alive()
        with httpx.Client(timeout=10.0) as client:
            assert client.get(url + "echo").status_code == 200

        # The same machine (its agent key): a restarted agent takes the name back at once.
        again = _agent(procs, relay, origin, tmp_path / "laptop", "--name", "shared")
        assert again.wait_url() == url
        assert holder.wait(EXIT_WITHIN) == EXIT_NAME_TAKEN
        key_file = tmp_path / "laptop" / "edge-agent" / "agent-key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert key_file.read_text().strip() not in relay.output() + again.output()
