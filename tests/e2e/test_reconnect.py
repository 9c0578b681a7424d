"""Reconnect: the agent comes back by itself after the relay restarts, with the same
URL; a new session for a name replaces a stale one at once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.e2e.client import relay_error, session
from tests.e2e.origin import Origin
from tests.e2e.procs import Procs, RelayProc, free_port, issue_token, start_agent

#: The agent's first reconnect waits 1 s plus up to 5 s of jitter (edge_agent.tunnel's
#: ReconnectPolicy); a second try, if the relay was not up yet, up to 7 s more.
RECONNECT_WITHIN = 30.0

EXIT_NAME_TAKEN = 4


async def test_agent_reconnects_after_the_relay_is_killed(
    origin: Origin, procs: Procs, tmp_path: Path
) -> None:
    state, port = tmp_path / "state", free_port()
    first = procs.add(RelayProc(state, port=port, name="relay-1"))
    token = issue_token(state, "comeback")
    agent = procs.add(start_agent(first, token, str(origin.port), name="agent-comeback"))
    async with session() as http, http.get(agent.url + "echo") as resp:
        assert resp.status == 200

    first.signal(signal.SIGKILL)
    first.wait()
    killed = time.monotonic()
    # The terminal says the tunnel is down, and then that it is back.
    agent.wait_line(r"^\d\d:\d\d:\d\d Tunnel down \(.+\); reconnecting in \d+ s$", 10)
    second = procs.add(RelayProc(state, port=port, name="relay-2"))
    second.wait_line(r"agent_connected agent=comeback", RECONNECT_WITHIN)
    agent.wait_line(r"^\d\d:\d\d:\d\d Reconnected: the tunnel is up again$", 5)
    print(f"\nagent back {time.monotonic() - killed:.1f} s after the relay was killed")

    async with session() as http, http.get(agent.url + "echo") as resp:
        assert resp.status == 200
    # Same URL: the agent prints the URL again only when WELCOME brings a new one.
    assert agent.count(r"^Forwarding .*/a/") == 1
    assert agent.alive()


async def test_new_session_replaces_a_stale_one_at_once(
    origin: Origin, procs: Procs, tmp_path: Path
) -> None:
    relay = procs.add(RelayProc(tmp_path / "state", name="relay-twins"))
    token = issue_token(relay.state_dir, "twin")
    stale = procs.add(start_agent(relay, token, str(origin.port), name="agent-stale"))
    stale.signal(signal.SIGSTOP)  # a laptop gone to sleep: its session is dead but open

    start = time.monotonic()
    fresh = procs.add(start_agent(relay, token, str(origin.port), name="agent-fresh"))
    assert fresh.url == stale.url
    async with session() as http, http.get(fresh.url + "echo?via=fresh") as resp:
        assert resp.status == 200
    took = time.monotonic() - start
    fresh.wait_line(r"^\d\d:\d\d:\d\d GET /echo\?via=fresh 200 ", 5)
    relay.wait_line(r"agent_replaced agent=twin")
    print(f"\nnew session served {took:.1f} s after it was started")
    assert took < 10.0  # far below the ~40 s a keepalive timeout would take

    # The stale agent wakes up to GOAWAY REPLACED and leaves the name to the new one.
    stale.signal(signal.SIGCONT)
    assert stale.wait(20) == EXIT_NAME_TAKEN
    stale.wait_line(r"edge-agent: error: another agent took the name 'twin' \(replaced by a new", 5)
    async with session() as http, http.get(fresh.url + "echo?via=fresh-again") as resp:
        assert resp.status == 200
    fresh.wait_line(r"^\d\d:\d\d:\d\d GET /echo\?via=fresh-again 200 ", 5)


async def test_restart_without_the_agent_is_503(procs: Procs, tmp_path: Path) -> None:
    """A name whose agent has not (re)connected to a restarted relay is offline (its
    token makes it known), not unknown."""
    state = tmp_path / "state"
    issue_token(state, "later")
    relay = procs.add(RelayProc(state, name="relay-empty"))
    async with session() as http, http.get(relay.url + "/a/later/") as resp:
        assert (resp.status, await relay_error(resp)) == (503, "agent_offline")
