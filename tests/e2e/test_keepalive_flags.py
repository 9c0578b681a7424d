"""``--ping-interval`` / ``--ping-timeout`` on both ends: a shorter keepalive detects a
frozen peer in seconds instead of the default ~40 s (users on flaky links want this)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.e2e.client import relay_error, session, until
from tests.e2e.origin import Origin
from tests.e2e.procs import Procs, RelayProc, issue_token, start_agent

FAST = ("--ping-interval", "2", "--ping-timeout", "2")
#: Two 2 s periods plus a busy machine's slack; the default settings need ~40 s.
DROP_WITHIN = 15.0


async def test_short_keepalive_drops_frozen_peers_quickly(
    origin: Origin, procs: Procs, tmp_path: Path
) -> None:
    # No resumption grace: this is about noticing a dead peer, which then ends the session
    # (with a grace, the relay parks it instead: tests/e2e/test_resume.py).
    relay = procs.add(RelayProc(tmp_path, *FAST, "--resume-grace", "0", name="relay-fast"))
    token = issue_token(tmp_path, "quick")
    agent = procs.add(start_agent(relay, token, str(origin.port), *FAST, name="agent-quick"))
    async with session() as http:
        async with http.get(agent.url + "echo") as resp:
            assert resp.status == 200

        agent.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        await until(
            lambda: relay.count(r"agent_disconnected agent=quick") > 0,
            DROP_WITHIN,
            "relay drops the frozen agent",
        )
        print(f"\nrelay dropped the frozen agent {time.monotonic() - stopped:.1f} s after SIGSTOP")
        async with http.get(agent.url + "echo") as resp:
            assert resp.status == 503 and await relay_error(resp) == "agent_offline"
        agent.signal(signal.SIGCONT)
        # Thawed, the agent finds its tunnel gone and reconnects; then freeze the relay.
        await until(
            lambda: relay.count(r"agent_connected agent=quick") >= 2, 30, "agent reconnects"
        )
        seen = agent.count(r"tunnel_disconnected")

        relay.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        await until(
            lambda: agent.count(r"tunnel_disconnected") > seen,
            DROP_WITHIN,
            "agent drops the frozen relay",
        )
        print(f"agent dropped the frozen relay {time.monotonic() - stopped:.1f} s after SIGSTOP")
        relay.signal(signal.SIGCONT)
