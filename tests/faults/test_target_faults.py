"""The local target fails; the tunnel does not.

* down (connection refused): 502 ``target_unreachable`` from the relay, and the same
  session serves again as soon as the target listens (no reconnect);
* slow (30 s to the first byte): 504 ``response_timeout`` from a relay whose response
  timeout is shorter (and the local request is cancelled), a complete answer through a
  relay whose timeout is longer;
* closing mid-body: the caller's response is cut (a definite error, not a clean end);

and all the while other streams on the same tunnels succeed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.client import relay_error, session
from tests.e2e.procs import Procs
from tests.faults.stack import CountingOrigin, Outcome, Tunnel, call, open_tunnel

#: What the slow target makes the caller wait for its response head, in seconds.
SLOW_FIRST_BYTE = 30.0
#: The short response timeout of the "strict" relay, in seconds.
SHORT_TIMEOUT = 5.0
#: How often the parallel requests run while the faults are going on, in seconds.
PARALLEL_EVERY = 1.0


@pytest.fixture(scope="module")
def tunnels(
    origin: CountingOrigin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Tunnel, Tunnel]]:
    """Two relays in front of the same origin: the default response timeout (300 s) and
    a short one."""
    procs = Procs()
    try:
        patient = open_tunnel(
            procs, tmp_path_factory.mktemp("patient"), str(origin.port), name="patient"
        )
        strict = open_tunnel(
            procs,
            tmp_path_factory.mktemp("strict"),
            str(origin.port),
            "--response-timeout",
            str(SHORT_TIMEOUT),
            name="strict",
        )
        yield patient, strict
    finally:
        procs.stop_all()


async def _parallel(http: aiohttp.ClientSession, tunnels: tuple[Tunnel, ...]) -> list[Outcome]:
    """Small requests on every tunnel, once a second, until cancelled."""
    outcomes: list[Outcome] = []
    try:
        while True:
            for t in tunnels:
                outcomes.append(await call(http, "GET", t.at("echo"), within=5))
            await asyncio.sleep(PARALLEL_EVERY)
    except asyncio.CancelledError:
        return outcomes


async def test_slow_and_failing_target_leave_other_streams_alone(
    tunnels: tuple[Tunnel, Tunnel], origin: CountingOrigin
) -> None:
    patient, strict = tunnels
    slow = f"nohead?s={SLOW_FIRST_BYTE:g}&key="
    async with session(limit=50) as http:
        parallel = asyncio.create_task(_parallel(http, tunnels))
        timed_out = asyncio.create_task(call(http, "GET", strict.at(slow + "strict"), within=60))
        completes = asyncio.create_task(call(http, "GET", patient.at(slow + "patient"), within=60))
        await asyncio.sleep(1.0)
        cut = [
            await call(http, "GET", t.at(f"fail?mode={mode}"), within=10)
            for t in tunnels
            for mode in ("chunked", "length")
        ]
        short = await timed_out
        long = await completes
        parallel.cancel()
        others = await parallel

    print(
        f"\nslow target: 504 after {short.seconds:.1f} s (relay timeout {SHORT_TIMEOUT:g} s), "
        f"answer after {long.seconds:.1f} s through the patient relay; "
        f"{len(others)} parallel requests, slowest {max(o.seconds for o in others):.2f} s"
    )
    assert (short.status, json.loads(short.body)["error"]["code"]) == (504, "response_timeout")
    assert SHORT_TIMEOUT - 0.5 < short.seconds < SHORT_TIMEOUT + 5
    assert "strict" in origin.disconnected  # the relay's reset reached the local request
    assert (long.status, long.body) == (200, b"too late")
    assert SLOW_FIRST_BYTE - 1 < long.seconds < SLOW_FIRST_BYTE + 10
    for outcome in cut:  # the head arrived, the body was cut: a definite error
        assert outcome.error in ("ClientPayloadError", "ServerDisconnectedError"), outcome
    assert len(others) >= 20  # about 60 on a quiet machine
    assert all(o.status == 200 for o in others), [o for o in others if o.status != 200]
    for t in tunnels:  # one session each from start to end: the tunnels stayed up
        assert t.relay.count(r"agent_connected") == 1
        assert t.relay.count(r"agent_disconnected") == 0


async def _serve_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
    await writer.drain()
    writer.close()


async def test_target_down_is_502_and_the_same_session_serves_once_it_is_up(
    procs: Procs, tmp_path: Path
) -> None:
    # Bound but not listening: connections to it are refused, and the port stays ours.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    tunnel = open_tunnel(procs, tmp_path / "state", str(port), name="down")
    try:
        async with session() as http:
            async with http.get(tunnel.at("x")) as resp:
                assert (resp.status, await relay_error(resp)) == (502, "target_unreachable")
            server = await asyncio.start_server(_serve_ok, sock=sock)
            start = time.monotonic()
            async with server, http.get(tunnel.at("x")) as resp:
                assert (resp.status, await resp.read()) == (200, b"ok")
            print(f"\ntarget back: served {time.monotonic() - start:.2f} s after it listened")
    finally:
        sock.close()
    assert tunnel.relay.count(r"agent_connected") == 1
