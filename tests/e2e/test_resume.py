"""Session resumption with real processes: a network blip between agent and relay is a
pause, not an error.

The agent reaches the relay through :class:`tests.e2e.linkcut.LinkCutter` (the
"network"), which resets its connection or black-holes it while a download, an upload,
an SSE stream and 50 small requests are in flight; callers talk to the relay directly.
Every body must arrive whole (SHA-256), every event once and in order, every small
request reach the target exactly once. Sizes are scaled down for CI; EDGE_LONG_TESTS=1
runs the issue's (200 MiB down, 50 MiB up).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.e2e.client import session, until
from tests.e2e.linkcut import LinkCutter
from tests.e2e.origin import Origin, pattern, pattern_digest
from tests.e2e.procs import AgentProc, Procs, RelayProc, free_port, issue_token

MiB = 1024 * 1024
LONG = os.environ.get("EDGE_LONG_TESTS") == "1"
DOWNLOAD = (200 if LONG else 24) * MiB
UPLOAD = (50 if LONG else 16) * MiB
EVENTS = 100
SMALL = 50
RESUMED = r"session_resumed .*detail=resumed session after ([\d.]+) s, (\d+) streams, (.+) re-sent"


async def start(
    procs: Procs, origin: Origin, tmp: Path, cutter: LinkCutter, *flags: str, grace: int = 30
) -> AgentProc:
    """A relay, and an agent that reaches it through ``cutter`` (whose loop is this one:
    blocking waits run in a thread)."""
    grace_flag = ("--resume-grace", str(grace))
    relay = procs.add(RelayProc(tmp / "state", *grace_flag, name="relay-resume"))
    cutter.upstream_port = relay.port
    token = issue_token(relay.state_dir, "blip")
    argv = [str(origin.port), "--relay", cutter.url, "--token", token, *flags]
    agent = procs.add(AgentProc(*argv, name="agent-resume"))
    agent.url = await asyncio.to_thread(agent.wait_url)
    agent.relay = relay  # type: ignore[attr-defined]
    return agent


class Workload:
    """The four kinds of traffic of the issue, each held mid-way until :attr:`cut`
    (set just before the network breaks, so that bytes are moving when it does)."""

    def __init__(self, url: str, origin: Origin, tag: str) -> None:
        self.url, self.origin, self.tag = url, origin, tag
        self.cut = asyncio.Event()
        self.broken = asyncio.Event()  # the network broke (the small ones answer after)
        self.midway: dict[str, asyncio.Event] = {
            k: asyncio.Event() for k in ("down", "up", "sse", "small")
        }

    async def download(self, http: aiohttp.ClientSession) -> None:
        digest, got = hashlib.sha256(), 0
        async with http.get(self.url + f"bytes?n={DOWNLOAD}") as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(256 * 1024):
                digest.update(chunk)
                got += len(chunk)
                if got >= DOWNLOAD // 3 and not self.cut.is_set():
                    self.midway["down"].set()
                    await self.cut.wait()
        assert got == DOWNLOAD
        assert digest.hexdigest() == pattern_digest(DOWNLOAD)

    async def upload(self, http: aiohttp.ClientSession) -> None:
        async def body() -> AsyncIterator[bytes]:
            sent = 0
            for piece in pattern(UPLOAD):
                yield piece
                sent += len(piece)
                if sent >= UPLOAD // 3 and not self.cut.is_set():
                    self.midway["up"].set()
                    await self.cut.wait()

        key = f"{self.tag}-up"
        headers = {"content-length": str(UPLOAD)}
        async with http.post(self.url + f"sink?key={key}", data=body(), headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            answer = json.loads(await resp.read())
        assert answer == {"size": UPLOAD, "sha256": pattern_digest(UPLOAD)}

    async def sse(self, http: aiohttp.ClientSession) -> None:
        key = f"{self.tag}-sse"
        ids: list[int] = []
        async with http.get(self.url + f"events?key={key}&n={EVENTS}&gap=0.03") as resp:
            assert resp.status == 200
            async for line in resp.content:
                if line.startswith(b"id: "):
                    ids.append(int(line[4:]))
                    if len(ids) == EVENTS // 3:
                        self.midway["sse"].set()
        assert ids == list(range(EVENTS))  # each once, in order

    async def small(self, http: aiohttp.ClientSession) -> None:
        keys = [f"{self.tag}-small-{i}" for i in range(SMALL)]

        async def one(key: str) -> None:
            async with http.get(self.url + f"slow?key={key}") as resp:
                assert resp.status == 200 and await resp.read() == b"done"

        calls = [asyncio.ensure_future(one(k)) for k in keys]
        deadline = time.monotonic() + 30
        while not all(k in self.origin.started for k in keys):
            assert time.monotonic() < deadline, "the small requests did not all start"
            await asyncio.sleep(0.02)
        self.midway["small"].set()
        await self.broken.wait()
        for key in keys:
            self.origin.release(key)
        await asyncio.gather(*calls)
        assert [self.origin.hits[k] for k in keys] == [1] * SMALL  # exactly once each

    async def run(self, disturb: Callable[[], Awaitable[None]]) -> None:
        """Start all four, wait until each is mid-way, ``disturb()``, let them finish."""
        async with session(limit=SMALL + 10) as http:
            tasks = [
                asyncio.ensure_future(f(http))
                for f in (self.download, self.upload, self.sse, self.small)
            ]
            try:
                async with asyncio.timeout(120):
                    await asyncio.gather(*(e.wait() for e in self.midway.values()))
                    self.cut.set()  # bytes flow again...
                    await asyncio.sleep(0.05)
                    await disturb()  # ...when the network breaks
                    self.broken.set()
                    await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()


async def pause_of(agent: AgentProc, relay: RelayProc) -> tuple[float, str]:
    line = await asyncio.to_thread(agent.wait_line, RESUMED, 30)
    await asyncio.to_thread(relay.wait_line, RESUMED, 10)
    return float(line.group(1)), line.group(0).split("detail=")[1]


async def test_a_reset_of_the_tunnel_connection_loses_nothing(
    origin: Origin, procs: Procs, tmp_path: Path
) -> None:
    async with LinkCutter(0) as cutter:
        agent = await start(procs, origin, tmp_path, cutter)
        relay: RelayProc = agent.relay  # type: ignore[attr-defined]
        work = Workload(agent.url, origin, "reset")

        async def reset() -> None:
            cutter.reset()

        began = time.monotonic()
        await work.run(reset)
        pause, summary = await pause_of(agent, relay)
        print(f"\nreset: {summary}; all traffic done {time.monotonic() - began:.1f} s")
        assert pause < 5.0
        assert cutter.accepted == 2  # one reconnect, no more
        assert relay.count("agent_disconnected") == 0  # the session never ended
        assert "target_failed" not in relay.output()
        # The agent's own line log says so too (not "Reconnected": nothing was lost).
        assert re.search(
            r"\d\d:\d\d:\d\d Resumed session after [\d.]+ s, \d+ streams", agent.output()
        )
        assert "Reconnected" not in agent.output()


async def test_a_black_hole_longer_than_the_keepalive_is_a_pause(
    origin: Origin, procs: Procs, tmp_path: Path
) -> None:
    """Bytes stop for 3 s; the agent's keepalive (1 s + 1 s) gives up on the link and
    reconnects, and its new connection takes the session over from the old one, which
    the relay has not seen die."""
    async with LinkCutter(0) as cutter:
        flags = ("--ping-interval", "1", "--ping-timeout", "1")
        agent = await start(procs, origin, tmp_path, cutter, *flags)
        relay: RelayProc = agent.relay  # type: ignore[attr-defined]
        work = Workload(agent.url, origin, "hole")

        async def hole() -> None:
            cutter.blackhole(True)
            await asyncio.sleep(3.0)
            cutter.blackhole(False)

        try:
            await work.run(hole)
        except BaseException:
            print("AGENT", "\n".join(x for x in agent.lines if " GET /slow" not in x)[-5000:])
            print("RELAY", relay.output()[-5000:])
            raise
        pause, summary = await pause_of(agent, relay)
        print(f"\nblack hole 3 s: {summary}")
        assert pause < 10.0  # the hole, plus one reconnect wait and the handshake
        assert relay.count("agent_disconnected") == 0


async def test_a_killed_relay_cannot_resume_and_callers_get_definite_errors(
    origin: Origin, procs: Procs, tmp_path: Path
) -> None:
    state, port = tmp_path / "state", free_port()
    relay = procs.add(RelayProc(state, port=port, name="relay-killed"))
    token = issue_token(state, "gone")
    argv = [str(origin.port), "--relay", relay.url, "--token", token]
    agent = procs.add(AgentProc(*argv, name="agent-killed"))
    agent.url = agent.wait_url()
    async with session() as http:
        resp = await http.get(agent.url + "events?key=killed-sse&n=50&gap=0.05")
        assert resp.status == 200
        await resp.content.readline()
        relay.signal(signal.SIGKILL)
        relay.wait()
        try:
            body = await resp.read()
            complete = body.count(b"id: ") == 50
        except aiohttp.ClientError:
            complete = False
        assert not complete  # cut: a definite error, never a silent truncation
    again = procs.add(RelayProc(state, port=port, name="relay-again"))
    # The dead relay's kernel ended the connection (a FIN, or an RST if it held unread
    # bytes): either the agent does not park the session, or its resumption is refused
    # by a relay that never heard of it. Either way a fresh session serves the name.
    again.wait_line(r"agent_connected agent=gone", 30)
    assert again.count("session_resumed") == 0
    async with session() as http, http.get(agent.url + "echo") as resp:
        assert resp.status == 200


async def test_requests_wait_for_the_grace_then_fail_as_before(
    origin: Origin, procs: Procs, tmp_path: Path
) -> None:
    """The agent is frozen and its connection reset: the relay keeps the session for its
    grace (2 s here). A request that was in flight and one that arrives meanwhile wait;
    when the grace is over the first gets 502 (it reached the agent), the second 503
    (it never did: safe to retry); then the name is offline."""
    async with LinkCutter(0) as cutter:
        agent = await start(procs, origin, tmp_path, cutter, grace=2)
        relay: RelayProc = agent.relay  # type: ignore[attr-defined]
        async with session() as http:
            held = asyncio.ensure_future(http.get(agent.url + "slow?key=grace-held"))
            await until(lambda: "grace-held" in origin.started, 10, "the request at the origin")
            agent.signal(signal.SIGSTOP)
            try:
                cutter.reset()
                await asyncio.to_thread(relay.wait_line, "agent_link_lost agent=blip", 5)
                parked = time.monotonic()
                async with http.get(agent.url + "echo") as late:
                    waited = time.monotonic() - parked
                    assert late.status == 503
                    assert late.headers["x-edge-error"] == "agent_unavailable"
                first = await held
                assert first.status == 502
                first.release()
                print(f"\nrequest during a 2 s grace answered 503 after {waited:.2f} s")
                assert 1.5 < waited < 4.0
                async with http.get(agent.url + "echo") as after:
                    assert after.status == 503
                    assert after.headers["x-edge-error"] == "agent_offline"
            finally:
                agent.signal(signal.SIGCONT)
                origin.release("grace-held")
