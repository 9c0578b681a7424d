"""DeliverySwitch: push -> poll after ``poll_after`` seconds without tunnel, and back,
with a real PlatformSession against the dev platform in-process (both generations) and
the tunnel's state played by a flag. The full story with real processes (relay stopped
and started again) is tests/molecule_e2e/test_poll.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from devplatform.app import start_server
from devplatform.config import Generation, PlatformConfig
from edge_agent.asgi import AsgiTarget
from edge_agent.molecule.client import PlatformClient
from edge_agent.molecule.dedup import DedupTarget
from edge_agent.molecule.delivery import DeliverySwitch
from edge_agent.molecule.poll import PollDelivery
from edge_agent.molecule.session import PlatformSession, SessionConfig, SessionEvents
from examples.a2a_agent import Settings, build_app
from tests.molecule.test_poll import ADMIN, ADMIN_TOKEN
from tests.molecule_e2e.origin import Recorder

FAST = SessionConfig(heartbeat_interval=0.2, backoff_initial=0.1, backoff_max=0.3, backoff_jitter=0)


class Rig:
    """A workspace's session, poller and switch; ``up`` is the tunnel."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http, self.url = http, url
        self.up = True
        self.modes: list[str] = []
        self.recorder = Recorder(build_app(Settings()))
        self.tasks: list[asyncio.Task[Any]] = []
        self.workspace_id = ""

    async def start(self) -> None:
        body = {"name": "edge", "runtime": "external", "external": True}
        created = (await self.http.post("/workspaces", json=body, headers=ADMIN)).json()
        self.workspace_id = created["id"]
        self.public_url = f"http://localhost:9/a/{self.workspace_id}/"
        self.client = PlatformClient(
            self.url, self.workspace_id, token=created["connection"]["auth_token"]
        )
        poller = PollDelivery(self.client, DedupTarget(AsgiTarget(self.recorder)), interval=0.05)
        events = SessionEvents(on_registered=lambda result: self.switch.registered(result))
        self.session = PlatformSession(
            self.client, public_url=self.public_url, agent_card={"name": "edge"},
            events=events, config=FAST,
        )  # fmt: skip
        self.switch = DeliverySwitch(
            self.session, poller, lambda: self.up, poll_after=0.3,
            on_mode=self.modes.append, tick=0.02, drain_grace=0.3,
        )  # fmt: skip
        self.tasks = [
            asyncio.create_task(self.session.run()),
            asyncio.create_task(self.switch.run()),
        ]
        await asyncio.wait_for(self.session.wait_registered(), 10)

    async def row(self) -> dict[str, Any]:
        resp = await self.http.get(f"/workspaces/{self.workspace_id}")
        row: dict[str, Any] = resp.json()
        return row

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture(params=["next", "current"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    cfg = PlatformConfig(admin_token=ADMIN_TOKEN, generation=Generation(request.param))
    server = await start_server(cfg, "127.0.0.1", 0)
    http = httpx.AsyncClient(base_url=server.url, timeout=10.0)
    rig = Rig(http, server.url)
    try:
        await rig.start()
        yield rig
    finally:
        await rig.stop()
        await http.aclose()
        await server.close()


async def test_the_switch_follows_the_tunnel(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    if rig.session.generation.value == "current":
        caplog.set_level(logging.WARNING, "edge_agent.molecule.delivery")
        rig.up = False
        await asyncio.sleep(1.0)  # more than three times poll_after
        said = [r for r in caplog.records if "poll_delivery_unavailable" in r.getMessage()]
        assert len(said) == 1 and rig.modes == []
        assert rig.session.delivery_mode == "push"
        assert (await rig.row())["url"] == rig.public_url
        return
    assert (await rig.row())["url"] == rig.public_url
    rig.up = False
    await asyncio.sleep(0.15)
    assert rig.modes == []  # not yet: poll_after is 0.3 s
    await until(lambda: rig.modes == ["poll"])
    assert not (await rig.row())["url"]  # poll mode: the platform dispatches nowhere
    caller = await _poll_mode_caller(rig)
    await _call(rig, caller, "during")
    await until(lambda: rig.recorder.completed.total() == 1)
    await _call(rig, caller, "just before the switch")
    rig.up = True
    await until(lambda: rig.modes == ["poll", "push"])
    assert (await rig.row())["url"] == rig.public_url
    await until(lambda: rig.recorder.completed.total() == 2)  # answered by the drain
    assert sorted(rig.recorder.deliveries.values()) == [1, 1]


async def _poll_mode_caller(rig: Rig) -> tuple[str, str]:
    body = {"name": "caller", "runtime": "external", "external": True}
    created = (await rig.http.post("/workspaces", json=body, headers=ADMIN)).json()
    caller = (created["id"], created["connection"]["auth_token"])
    payload = {"id": caller[0], "agent_card": {"name": "c"}, "delivery_mode": "poll"}
    headers = {"Authorization": f"Bearer {caller[1]}"}
    assert (
        await rig.http.post("/registry/register", json=payload, headers=headers)
    ).status_code == 200
    return caller


async def _call(rig: Rig, caller: tuple[str, str], text: str) -> None:
    message = {"role": "user", "messageId": text, "parts": [{"kind": "text", "text": text}]}
    body = {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": message}}
    headers = {"Authorization": f"Bearer {caller[1]}", "X-Workspace-ID": caller[0]}
    resp = await rig.http.post(f"/workspaces/{rig.workspace_id}/a2a", json=body, headers=headers)
    assert resp.json()["status"] == "queued", resp.text
