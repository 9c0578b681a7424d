"""Dead peers are dropped by WebSocket keepalive (ping every 20 s, 20 s to answer) on
both ends, within about 40 s, and the tunnel serves again once the peer is back.

The peers were frozen (SIGSTOP) when the suite started (``deadpeers.py``); these tests
run last and only wait for what is left of the 40 s.
"""

from __future__ import annotations

import signal
import time

from tests.e2e.client import relay_error, session
from tests.e2e.deadpeers import DeadPeers

#: Pings every 20 s with a 20 s timeout give up to ~40 s; a busy machine adds a little.
DROP_WITHIN = 60.0
#: Never sooner than one ping timeout: proves it was keepalive, not something else.
DROP_NOT_BEFORE = 15.0
#: After SIGCONT: reconnect backoff (1 s + up to 5 s jitter, doubling) plus handshakes.
BACK_WITHIN = 45.0


def _left(since: float) -> float:
    return max(1.0, since + DROP_WITHIN + 5 - time.monotonic())


async def test_relay_drops_a_frozen_agent(dead_peers: DeadPeers) -> None:
    relay, stopped = dead_peers.relay, dead_peers.agent_stopped
    relay.wait_line(r"agent_disconnected agent=sleepy", _left(stopped))
    took = relay.stamp(r"agent_disconnected agent=sleepy") - stopped
    print(f"\nthe relay dropped the frozen agent {took:.1f} s after SIGSTOP")
    assert DROP_NOT_BEFORE < took < DROP_WITHIN
    async with session() as http, http.get(dead_peers.sleepy.url + "echo") as resp:
        assert (resp.status, await relay_error(resp)) == (503, "agent_offline")
        assert int(resp.headers["retry-after"]) > 0

    dead_peers.sleepy.signal(signal.SIGCONT)
    relay.wait_count(r"agent_connected agent=sleepy", 2, BACK_WITHIN)
    async with session() as http, http.get(dead_peers.sleepy.url + "echo") as resp:
        assert resp.status == 200


async def test_agent_drops_a_frozen_relay(dead_peers: DeadPeers) -> None:
    watcher, stopped = dead_peers.watcher, dead_peers.relay_stopped
    watcher.wait_line(r"tunnel_disconnected", _left(stopped))
    took = watcher.stamp(r"tunnel_disconnected") - stopped
    print(f"\nthe agent dropped the frozen relay {took:.1f} s after SIGSTOP")
    assert DROP_NOT_BEFORE < took < DROP_WITHIN
    assert watcher.alive()  # transient: it keeps trying

    dead_peers.frozen_relay.signal(signal.SIGCONT)
    dead_peers.frozen_relay.wait_count(r"agent_connected agent=watcher", 2, BACK_WITHIN)
    async with session() as http, http.get(watcher.url + "echo") as resp:
        assert resp.status == 200
