"""The relay process dies (SIGKILL) with 200 requests in flight: small POSTs waiting for
their answer, large uploads half sent, SSE streams half read.

* Every caller gets a definite outcome (its connection closed: the kernel of the dead
  process resets it) well within a bound that fails the test if hit: nobody hangs.
* No non-idempotent request reaches the local target twice: every POST carries a unique
  id and the origin counts arrivals by id, before it reads any body, through the relay's
  death, the agent's reconnect and new traffic after it.
* The agent is back within its reconnect backoff (``edge_agent.tunnel.ReconnectPolicy``:
  the n-th wait is at most ``initial * 2**(n-1) + jitter``) once the relay listens again,
  with the same URL.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import aiohttp

from edge_agent.tunnel import ReconnectPolicy
from tests.e2e.client import session, until
from tests.e2e.procs import Procs, RelayProc, free_port
from tests.faults.stack import MIB, CountingOrigin, Outcome, call, open_tunnel, trickle

SMALL_POSTS = 100
UPLOADS = 50  # 8 MiB each, sent at ~1.3 MiB/s: still going when the relay dies
STREAMS = 50  # SSE, an event every 50 ms for a minute
IN_FLIGHT = SMALL_POSTS + UPLOADS + STREAMS
#: Seconds a caller may take after the kill before it counts as hung (fails the test).
DEFINITE_WITHIN = 15.0
#: Slack for the WebSocket handshake, HELLO/WELCOME and a busy machine, in seconds.
HANDSHAKE_SLACK = 3.0

_DELAY = re.compile(r"reconnect_scheduled .*attempt=(\d+) delay=([\d.]+)")


def _mine(origin: CountingOrigin) -> dict[tuple[str, str], int]:
    """Arrivals of this test's requests (their ids start with "rk-")."""
    return {key: n for key, n in origin.arrivals.items() if key[1].startswith("rk-")}


async def _start_all(http: aiohttp.ClientSession, base: str) -> list[asyncio.Task[Outcome]]:
    within = 60.0  # the callers' own bound; the kill must end each one much sooner
    tasks = []
    for i in range(SMALL_POSTS):
        url = f"{base}nohead?s=60&key=rk-p{i}&id=rk-p{i}"
        tasks.append(asyncio.create_task(call(http, "POST", url, data=b"hi", within=within)))
    for i in range(UPLOADS):
        url = f"{base}sink?key=rk-u{i}&id=rk-u{i}"
        body = trickle(8 * MIB, 64 * 1024, 0.05)
        tasks.append(asyncio.create_task(call(http, "POST", url, data=body, within=within)))
    for i in range(STREAMS):
        url = f"{base}events?key=rk-e{i}&id=rk-e{i}&n=1200&gap=0.05"
        tasks.append(asyncio.create_task(call(http, "GET", url, within=within)))
    return tasks


async def test_relay_killed_with_200_requests_in_flight(
    origin: CountingOrigin, procs: Procs, tmp_path: Path
) -> None:
    state, port = tmp_path / "state", free_port()
    tunnel = open_tunnel(procs, state, str(origin.port), name="busy", port=port)
    async with session(limit=IN_FLIGHT + 10) as http:
        tasks = await _start_all(http, tunnel.url)
        await until(lambda: len(_mine(origin)) >= IN_FLIGHT, 30, "all requests at the origin")
        killed = time.monotonic()
        tunnel.relay.signal(signal.SIGKILL)
        done, pending = await asyncio.wait(tasks, timeout=DEFINITE_WITHIN)
        for task in pending:
            task.cancel()
        outcomes = [t.result() for t in done]
    last = max(o.ended for o in outcomes) - killed
    kinds = sorted({o.error or str(o.status) for o in outcomes})
    print(
        f"\nrelay SIGKILL with {IN_FLIGHT} in flight: {len(outcomes)} callers answered, "
        f"the last {last:.2f} s after the kill; outcomes {kinds}"
    )
    assert not pending, f"{len(pending)} callers hung after the relay died"
    assert all(o.definite for o in outcomes)

    restarted = time.monotonic()
    relay = procs.add(RelayProc(state, port=port, name="relay-again"))
    listening = time.monotonic()
    relay.wait_line(r"agent_connected agent=busy", 60)
    back = relay.stamp(r"agent_connected agent=busy") - listening
    async with session() as http:
        async with http.post(tunnel.at("echo?id=rk-after"), data=b"after") as resp:
            assert resp.status == 200
        await asyncio.sleep(1.0)  # time for any replay to show up at the origin

    # All lines: with resumption the aborted requests are logged after the reconnects.
    delays = [(int(a), float(d)) for a, d in _DELAY.findall("\n".join(tunnel.agent.lines))]
    policy = ReconnectPolicy()
    posts = {key: n for key, n in _mine(origin).items() if key[0] == "POST"}
    print(
        f"relay down {listening - killed:.1f} s (restart took {listening - restarted:.1f} s); "
        f"agent back {back:.2f} s after it listened; backoff waits {delays}; "
        f"{len(posts)} POSTs reached the origin, at most {max(posts.values())} time(s) each"
    )
    assert delays, "the agent logs each reconnect it schedules"
    for attempt, delay in delays:
        cap = min(policy.initial * 2 ** (attempt - 1) + policy.jitter, policy.max_delay)
        assert delay <= cap + 0.01, (attempt, delay)
    assert back <= delays[-1][1] + HANDSHAKE_SLACK
    assert len(posts) == SMALL_POSTS + UPLOADS + 1
    assert set(posts.values()) == {1}, {k: n for k, n in posts.items() if n != 1}
    assert tunnel.agent.alive() and tunnel.agent.count(r"^Forwarding .*/a/") == 1  # same URL
