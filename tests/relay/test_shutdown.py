"""Graceful shutdown of a real ``edge-relay serve`` process on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.relay.conftest import eventually
from tests.relay.fake_agent import FakeAgent, FakeRequest
from wire import ErrorCode


class RelayProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, object]] = []
        self.port_known = asyncio.Event()
        self.port = 0
        self._reader = asyncio.create_task(self._read())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            with contextlib.suppress(ValueError):
                event = json.loads(raw)
                self.events.append(event)
                if event.get("event") == "relay_listening":
                    self.port = int(str(event["port"]))
                    self.port_known.set()

    def saw(self, name: str) -> bool:
        return any(e.get("event") == name for e in self.events)


@pytest.fixture
async def relay_process(tmp_path: Path) -> AsyncIterator[RelayProcess]:
    """``edge-relay serve --open`` on an ephemeral port, always killed at the end."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.cli", "--log-format", "json", "serve", "--open",
        "--port", "0", "--state-dir", str(tmp_path / "state"), "--drain-timeout", "3",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    relay = RelayProcess(proc)
    try:
        async with asyncio.timeout(20):
            await relay.port_known.wait()
        yield relay
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        relay._reader.cancel()


async def test_sigterm_drains_in_flight_streams(relay_process: RelayProcess) -> None:
    release = asyncio.Event()

    async def slow(request: FakeRequest) -> None:
        await release.wait()
        await request.respond(200)
        await request.send(b"finished", end=True)

    async with FakeAgent(relay_process.url, slow, name="demo") as agent:
        await agent.wait_welcome()
        async with httpx.AsyncClient(base_url=relay_process.url, timeout=10) as client:
            in_flight = asyncio.create_task(client.get("/a/demo/"))
            async with asyncio.timeout(5):
                await agent.request_seen.wait()
            relay_process.proc.send_signal(signal.SIGTERM)
            await eventually(lambda: agent.goaways)
            assert agent.goaways[0].code == ErrorCode.NO_ERROR
            # While draining: new requests are refused, readiness says so.
            async with httpx.AsyncClient(base_url=relay_process.url, timeout=5) as fresh:
                refused = await fresh.get("/a/demo/")
                assert refused.status_code == 503
                assert refused.headers["x-edge-error"] == "relay_draining"
                assert (await fresh.get("/_edge/readyz")).status_code == 503
            release.set()
            response = await in_flight
        assert response.status_code == 200 and response.text == "finished"
        async with asyncio.timeout(10):
            assert await relay_process.proc.wait() == 0
    assert relay_process.saw("relay_drained")


async def test_drain_deadline_ends_stuck_streams(relay_process: RelayProcess) -> None:
    async def stuck(request: FakeRequest) -> None:
        await asyncio.sleep(3600)

    async with FakeAgent(relay_process.url, stuck, name="demo") as agent:
        await agent.wait_welcome()
        async with httpx.AsyncClient(base_url=relay_process.url, timeout=15) as client:
            in_flight = asyncio.create_task(client.get("/a/demo/"))
            async with asyncio.timeout(5):
                await agent.request_seen.wait()
            loop = asyncio.get_running_loop()
            start = loop.time()
            relay_process.proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(15):
                assert await relay_process.proc.wait() == 0
            elapsed = loop.time() - start
            try:
                answer: object = (await in_flight).status_code
            except httpx.HTTPError as exc:
                answer = exc
    assert 2.5 < elapsed < 12  # the 3 s drain deadline, then a quick exit
    assert answer == 502 or isinstance(answer, httpx.HTTPError)  # definite, never a hang
    assert agent.closed.is_set()
