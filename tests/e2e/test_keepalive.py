"""Dead peers are dropped by WebSocket keepalive (ping every 20 s, 20 s to answer) on
both ends, within about 40 s, and the tunnel serves again once the peer is back.

The peers were frozen (SIGSTOP) when the suite started and thawed as soon as each drop
showed (``deadpeers.py``); these tests run last and check what happened.
"""

from __future__ import annotations

from tests.e2e.client import session
from tests.e2e.deadpeers import AGENT_DROPPED, RELAY_DROPPED, WATCH_FOR, DeadPeers

#: Pings every 20 s with a 20 s timeout give up to ~40 s; a busy machine adds a little.
DROP_WITHIN = 60.0
#: Never sooner than one ping timeout: proves it was keepalive, not something else.
DROP_NOT_BEFORE = 15.0
#: After SIGCONT: reconnect backoff (1 s + up to 5 s jitter, doubling) plus handshakes.
BACK_WITHIN = 45.0


async def test_relay_drops_a_frozen_agent(dead_peers: DeadPeers) -> None:
    assert dead_peers.done.wait(WATCH_FOR + 5)
    relay = dead_peers.relay
    took = relay.stamp(RELAY_DROPPED) - dead_peers.agent_stopped
    print(f"\nthe relay dropped the frozen agent {took:.1f} s after SIGSTOP")
    assert DROP_NOT_BEFORE < took < DROP_WITHIN
    # Asked while the agent was still frozen:
    assert dead_peers.offline_answer is not None
    status, code, retry_after = dead_peers.offline_answer
    assert (status, code) == (503, "agent_offline")
    assert retry_after is not None and int(retry_after) > 0

    relay.wait_count(r"agent_connected agent=sleepy", 2, BACK_WITHIN)
    async with session() as http, http.get(dead_peers.sleepy.url + "echo") as resp:
        assert resp.status == 200


async def test_agent_drops_a_frozen_relay(dead_peers: DeadPeers) -> None:
    assert dead_peers.done.wait(WATCH_FOR + 5)
    watcher = dead_peers.watcher
    took = watcher.stamp(AGENT_DROPPED) - dead_peers.relay_stopped
    print(f"\nthe agent dropped the frozen relay {took:.1f} s after SIGSTOP")
    assert DROP_NOT_BEFORE < took < DROP_WITHIN
    assert watcher.alive()  # transient: it keeps trying

    dead_peers.frozen_relay.wait_count(r"agent_connected agent=watcher", 2, BACK_WITHIN)
    async with session() as http, http.get(watcher.url + "echo") as resp:
        assert resp.status == 200
