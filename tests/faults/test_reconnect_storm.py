"""1,000 agents reconnecting together after the relay restarts do not overload it: the
jitter of their reconnect policy spreads them out, and all are back within 15 s.

The agents are simulated by ``bench.simagent`` (two load processes of 500): each opens
the agent WebSocket exactly as ``edge-agent`` does, exchanges HELLO/WELCOME with the
``wire`` protocol and reconnects with the agent's own policy
(``edge_agent.tunnel.ReconnectPolicy``, the same tenacity wait). The relay is killed
(SIGKILL) and started again on the same port right away.

The agents here had been up for less than the policy's ``healthy_after`` (30 s), so the
restart counts as a failed session: the first retry waits ``1 s + U(0, 5 s)``. The
other branch (agents up longer: ``U(0, 5 s)`` then the same backoff) is measured by
``python -m bench scale relay-restart``, which waits the 30 s first.
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

from bench.fleet import Fleet, reconnect_spread
from bench.procs import Children, raise_nofile
from bench.simagent import agent_policy
from tests.e2e.procs import Procs, RelayProc, free_port

AGENTS = 1000
LOAD_PROCESSES = 2
#: Every agent back within this many seconds of the kill.
BACK_WITHIN = 15.0
#: No second may see more than this share of the agents reconnect.
MAX_SHARE = 0.25


def test_thousand_agents_reconnect_spread_out(procs: Procs, tmp_path: Path) -> None:
    raise_nofile(AGENTS * 2 + 1024)  # the relay and the load processes inherit it
    state, port = tmp_path / "state", free_port()
    relay = procs.add(RelayProc(state, "--open", port=port, name="relay-storm"))
    children = Children(tmp_path)
    try:
        fleet = Fleet(children, tmp_path, relay.url)
        for n in range(1, LOAD_PROCESSES + 1):
            fleet.grow(AGENTS * n // LOAD_PROCESSES)
        start = time.monotonic()
        fleet.wait_all_up(60)
        first_up = time.monotonic() - start

        killed = time.time()
        relay.signal(signal.SIGKILL)
        relay.wait()
        relay = procs.add(RelayProc(state, "--open", port=port, name="relay-storm-2"))
        listening = time.time()
        deadline = time.monotonic() + 60
        back, _ = reconnect_spread(fleet.events, killed, AGENTS)
        while back == math.inf and time.monotonic() < deadline:
            time.sleep(0.5)
            fleet.poll()
            back, _ = reconnect_spread(fleet.events, killed, AGENTS)
    finally:
        children.close()
    # Seconds counted from when the relay listened again: attempts before that were
    # refused by the kernel and cost the relay nothing.
    _, per_second = reconnect_spread(fleet.events, listening, AGENTS)

    peak = max(per_second, default=0)
    print(
        f"\n{AGENTS} agents ({agent_policy().source}): first connect {first_up:.1f} s; "
        f"relay down {listening - killed:.1f} s; all back {back:.1f} s after the kill; "
        f"at most {peak} ({peak / AGENTS:.0%}) in one second; per second after it listened: "
        f"{per_second}"
    )
    assert back < math.inf, f"not every agent came back within 60 s ({len(fleet.up)} up)"
    assert back <= BACK_WITHIN
    assert peak <= MAX_SHARE * AGENTS
    assert relay.count(r"agent_connected") >= AGENTS  # the relay itself saw them all
