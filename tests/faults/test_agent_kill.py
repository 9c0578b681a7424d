"""The agent process dies (SIGKILL): its kernel closes the tunnel's TCP connection, so
the relay learns of it at once (not after the ~40 s ping timeout, which is what a
silently vanished machine costs: see ``tests/e2e/test_keepalive.py`` and the NAT
half-open test). Requests in flight get a definite answer, the name answers 503
``agent_offline`` (with Retry-After), and a restarted agent takes the name back at once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from tests.e2e.client import session, until
from tests.e2e.procs import Procs, start_agent
from tests.faults.stack import CountingOrigin, Outcome, call, open_tunnel

#: The relay's keepalive bound (20 s pings + 20 s timeout): the 503 must come sooner.
PING_BOUND = 40.0


async def _first_503(url: str, start: float, within: float) -> tuple[float, str, str]:
    """Poll ``url`` until the relay answers 503; (seconds since ``start``, Retry-After,
    code)."""
    async with session() as http:
        while time.monotonic() - start < within:
            async with http.get(url) as resp:
                await resp.read()
                if resp.status == 503:
                    code = resp.headers.get("x-edge-error", "")
                    retry_after = resp.headers.get("retry-after", "")
                    return time.monotonic() - start, retry_after, code
            await asyncio.sleep(0.02)
    raise AssertionError(f"no 503 within {within} s")


async def test_killed_agent_is_503_at_once_and_a_new_one_takes_the_name(
    origin: CountingOrigin, procs: Procs, tmp_path: Path
) -> None:
    # Without resumption: a killed agent's kernel may end the connection with a reset,
    # which a relay that offers resumption cannot tell from a network failure (it then
    # keeps the session for its grace: tests/e2e/test_resume.py).
    state = tmp_path / "state"
    tunnel = open_tunnel(procs, state, str(origin.port), "--resume-grace", "0", name="victim")
    async with session() as http:
        in_flight = [
            asyncio.create_task(call(http, "GET", tunnel.at(f"nohead?s=60&key=v{i}"), within=20))
            for i in range(5)
        ]
        await until(lambda: all(f"v{i}" in origin.started for i in range(5)), 10, "requests in")
        killed = time.monotonic()
        tunnel.agent.signal(signal.SIGKILL)
        detected, retry_after, code = await _first_503(tunnel.at("echo"), killed, PING_BOUND)
        answers: list[Outcome] = await asyncio.gather(*in_flight)

    tunnel.relay.wait_line(r"agent_disconnected agent=victim", 5)
    print(
        f"\nagent SIGKILL: relay answered 503 {detected:.2f} s later "
        f"(TCP close seen at once; the ping bound is {PING_BOUND:g} s); "
        f"in-flight requests got {sorted({(o.status, o.error) for o in answers})} "
        f"within {max(o.seconds for o in answers):.2f} s"
    )
    assert code == "agent_offline" and int(retry_after) > 0
    assert detected < 2.0, "SIGKILL closes the socket: no keepalive wait expected"
    for outcome in answers:  # the stream died with its session: 502 from the relay
        assert outcome.definite and outcome.status == 502, outcome

    start = time.monotonic()
    again = procs.add(start_agent(tunnel.relay, tunnel.token, str(origin.port), name="again"))
    async with session() as http, http.get(again.url + "echo") as resp:
        assert resp.status == 200
    took = time.monotonic() - start
    print(f"restarted agent served its old URL {took:.2f} s after it was started")
    assert again.url == tunnel.url
    assert took < 10.0
