"""Graceful shutdown: SIGTERM lets requests in flight finish and turns new ones away
with 503, on the relay (GOAWAY to agents, drain up to a deadline) and on the agent
(GOAWAY to the relay, drain, exit 0). Also the relay's health endpoints."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp

from tests.e2e.client import relay_error, session, until
from tests.e2e.conftest import Tunnel, open_tunnel
from tests.e2e.origin import Origin, pattern
from tests.e2e.procs import Procs

DRAIN_TIMEOUT = 10.0


#: Response sizes of the requests in flight during a drain (0: the 4-byte ``done``).
SIZES = (0, 300_000, 2_000_000)


async def _slow_request(url: str) -> tuple[int, bytes]:
    async with session() as http, http.get(url) as resp:
        return resp.status, await resp.read()


def _expected(size: int) -> tuple[int, bytes]:
    return 200, b"".join(pattern(size)) if size else b"done"


async def _status(url: str) -> tuple[int, str | None]:
    async with session() as http, http.get(url) as resp:
        code = await relay_error(resp) if "x-edge-error" in resp.headers else None
        return resp.status, code


async def _start_slow(
    tunnel: Tunnel, origin: Origin, key: str
) -> list[asyncio.Task[tuple[int, bytes]]]:
    """Requests the origin holds until ``release(key/size)``, one per size in SIZES."""
    tasks = [
        asyncio.create_task(_slow_request(tunnel.at(f"slow?key={key}/{n}&n={n}"))) for n in SIZES
    ]
    keys = [f"{key}/{n}" for n in SIZES]
    await until(lambda: all(k in origin.started for k in keys), 20, "origin got the requests")
    return tasks


async def _finish_slow(
    origin: Origin, key: str, tasks: list[asyncio.Task[tuple[int, bytes]]]
) -> None:
    assert not any(task.done() for task in tasks)
    for n in SIZES:
        origin.release(f"{key}/{n}")
    results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    for n, (status, body) in zip(SIZES, results, strict=True):
        assert (status, len(body)) == (200, len(_expected(n)[1]))
        assert body == _expected(n)[1]


async def test_relay_sigterm_finishes_requests_in_flight(
    origin: Origin, procs: Procs, tmp_path: Path
) -> None:
    tunnel = open_tunnel(
        procs, tmp_path, str(origin.port), "--drain-timeout", str(DRAIN_TIMEOUT), name="rdrain"
    )
    key = "relay-drain"
    slow = await _start_slow(tunnel, origin, key)
    tunnel.relay.signal(signal.SIGTERM)
    stopped = time.monotonic()
    tunnel.relay.wait_line(rf"relay_draining agents=1 streams={len(SIZES)}")

    assert await _status(tunnel.at("echo")) == (503, "relay_draining")
    assert await _status(tunnel.relay.url + "/_edge/readyz") == (503, None)
    assert await _status(tunnel.relay.url + "/_edge/healthz") == (200, None)
    await _finish_slow(origin, key, slow)
    assert tunnel.relay.wait(DRAIN_TIMEOUT + 5) == 0
    print(f"\nrelay exited {time.monotonic() - stopped:.1f} s after SIGTERM")
    tunnel.relay.wait_line(r"relay_drained streams_left=0", 5)


async def test_relay_drain_has_a_deadline(origin: Origin, procs: Procs, tmp_path: Path) -> None:
    deadline = 2.0
    tunnel = open_tunnel(
        procs, tmp_path, str(origin.port), "--drain-timeout", str(deadline), name="rdeadline"
    )
    timeout = aiohttp.ClientTimeout(total=30)
    async with session(timeout=timeout) as http, http.get(tunnel.at("hold?key=never")) as resp:
        assert await resp.content.readexactly(8) == b"holding\n"
        tunnel.relay.signal(signal.SIGTERM)
        stopped = time.monotonic()
        try:
            rest = await resp.content.read()
        except aiohttp.ClientPayloadError:
            rest = None
    assert rest is None, "the unfinished response must be cut, not ended cleanly"
    assert tunnel.relay.wait(deadline + 10) == 0
    took = time.monotonic() - stopped
    print(f"\nrelay exited {took:.1f} s after SIGTERM (drain deadline {deadline} s)")
    assert deadline - 0.5 < took < deadline + 10
    await until(lambda: "never" in origin.disconnected, 10, "origin saw the cancel")


async def test_agent_sigterm_finishes_requests_in_flight(
    origin: Origin, procs: Procs, tmp_path: Path
) -> None:
    tunnel = open_tunnel(procs, tmp_path, str(origin.port), name="adrain")
    key = "agent-drain"
    slow = await _start_slow(tunnel, origin, key)
    tunnel.agent.signal(signal.SIGTERM)
    tunnel.agent.wait_line(r"^Draining: finishing requests in flight")
    await until(lambda: tunnel.relay.count("agent_goaway agent=adrain") > 0, 10, "GOAWAY")

    status, code = await _status(tunnel.at("echo"))
    assert status == 503 and code in ("agent_unavailable", "agent_offline")
    await _finish_slow(origin, key, slow)
    assert tunnel.agent.wait(15) == 0
    tunnel.agent.wait_count(rf"^\d\d:\d\d:\d\d GET /slow\?key={key}/\d+&n=\d+ 200 ", len(SIZES), 5)
    assert await _status(tunnel.at("echo")) == (503, "agent_offline")


async def test_health_endpoints_answer(tunnel: Tunnel) -> None:
    async with session() as http:
        async with http.get(tunnel.relay.url + "/_edge/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"
        async with http.get(tunnel.relay.url + "/_edge/readyz") as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["status"] == "ready" and body["agents"] >= 1
