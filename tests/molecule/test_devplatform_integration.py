"""PlatformSession against the real dev platform (``edge-devplatform serve``), both
generations, as a separate process on 127.0.0.1.

The registered URL is ``http://localhost:<port>/a/<id>/`` (the platform's SSRF rules
allow ``localhost`` by name); nothing needs to listen there, since these tests look at
the session, not the A2A proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import stat
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest

from edge_agent.molecule.client import PlatformClient
from edge_agent.molecule.errors import PlatformRejected, TokenRejected, WorkspaceDeleted
from edge_agent.molecule.session import (
    Generation,
    PlatformSession,
    SessionConfig,
    SessionEvents,
    StopKind,
    StopReason,
)
from edge_agent.molecule.tokens import TokenStore

ADMIN_TOKEN = "integration-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FAST = SessionConfig(heartbeat_interval=0.1, backoff_initial=0.1, backoff_max=0.3, backoff_jitter=0)
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:(\d+))")

COMMAND = shutil.which("edge-devplatform", path=os.path.dirname(sys.executable))
pytestmark = pytest.mark.skipif(COMMAND is None, reason="edge-devplatform is not installed")


class DevPlatform:
    """``edge-devplatform serve`` in a subprocess, with its SQLite file in ``tmp_path``."""

    def __init__(self, tmp_path: Path, generation: str) -> None:
        self.tmp_path = tmp_path
        self.generation = generation
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""
        self.port = 0

    async def start(self) -> None:
        assert COMMAND is not None
        log = self._log_file()
        self.process = await asyncio.create_subprocess_exec(
            COMMAND, "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--admin-token", ADMIN_TOKEN, "--generation", self.generation,
            "--db", str(self.tmp_path / "platform.db"),
            stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
        log.close()
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 20)
        match = LISTENING.search(line.decode())
        assert match, line
        self.url, self.port = match.group(1), int(match.group(2))

    def _log_file(self) -> BinaryIO:
        return (self.tmp_path / "devplatform.log").open("ab")

    async def stop(self, *, crash: bool = False) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            if crash:
                process.kill()
            else:
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


class Events:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.secrets: list[str] = []
        self.stopped: list[StopReason] = []

    def events(self) -> SessionEvents:
        return SessionEvents(
            on_registered=lambda result: self.log.append("registered"),
            on_paused=lambda: self.log.append("paused"),
            on_resumed=lambda: self.log.append("resumed"),
            on_stopped=self.stopped.append,
            on_inbound_secret=self.secrets.append,
        )


@pytest.fixture(params=["current", "next"])
async def platform(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DevPlatform]:
    dev = DevPlatform(tmp_path, request.param)
    await dev.start()
    try:
        yield dev
    finally:
        await dev.stop()


@contextlib.asynccontextmanager
async def admin(dev: DevPlatform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=dev.url, headers=ADMIN, timeout=10) as client:
        yield client


async def create_workspace(dev: DevPlatform, **payload: Any) -> tuple[str, str | None]:
    body = {"name": "edge-laptop", "runtime": "external", "external": True, **payload}
    async with admin(dev) as client:
        response = await client.post("/workspaces", json=body)
    assert response.status_code == 201, response.text
    data = response.json()
    return data["id"], data.get("connection", {}).get("auth_token")


async def workspace_row(dev: DevPlatform, workspace_id: str) -> dict[str, Any]:
    async with admin(dev) as client:
        response = await client.get(f"/workspaces/{workspace_id}")
    assert response.status_code == 200, response.text
    row: dict[str, Any] = response.json()
    return row


def public_url(workspace_id: str) -> str:
    return f"http://localhost:9/a/{workspace_id}/"


def make_session(
    dev: DevPlatform, tmp_path: Path, workspace_id: str, events: Events, token: str | None
) -> tuple[PlatformSession, PlatformClient]:
    store = TokenStore(workspace_id, tmp_path / "molecule")
    client = PlatformClient(dev.url, workspace_id, token_store=store, token=token)
    session = PlatformSession(
        client,
        public_url=public_url(workspace_id),
        agent_card={"name": "edge", "url": public_url(workspace_id)},
        events=events.events(),
        config=FAST,
    )
    return session, client


@contextlib.asynccontextmanager
async def running(
    dev: DevPlatform, tmp_path: Path, workspace_id: str, events: Events, token: str | None
) -> AsyncIterator[tuple[PlatformSession, asyncio.Task[None]]]:
    """A session running in a task, once registered; the task is cancelled on the way out."""
    session, client = make_session(dev, tmp_path, workspace_id, events, token)
    async with client:
        task = asyncio.create_task(session.run())
        try:
            await asyncio.wait_for(session.wait_registered(), 10)
            yield session, task
        finally:
            task.cancel()


async def eventually(check: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not check():  # noqa: ASYNC110 - watching callbacks' records
            await asyncio.sleep(0.05)


async def test_lifecycle_register_pause_resume_secrets_delete(
    platform: DevPlatform, tmp_path: Path
) -> None:
    workspace_id, token = await create_workspace(platform)  # token minted at create
    events = Events()
    async with running(platform, tmp_path, workspace_id, events, token) as (session, task):
        row = await workspace_row(platform, workspace_id)
        assert row["url"] == public_url(workspace_id) and row["status"] == "online"
        assert row["agent_card"]["url"] == public_url(workspace_id)
        await check_generation(platform, session, events, tmp_path, workspace_id)

        async with admin(platform) as api:
            assert (await api.post(f"/workspaces/{workspace_id}/pause")).status_code == 200
            await eventually(lambda: events.log[-1:] == ["paused"])
            assert (await api.post(f"/workspaces/{workspace_id}/resume")).status_code == 200
            await eventually(lambda: events.log[-2:] == ["resumed", "registered"])
            row = await workspace_row(platform, workspace_id)
            assert row["url"] == public_url(workspace_id) and row["status"] == "online"

            secret = {"key": "API_KEY", "value": "from-the-platform"}
            assert (await api.post(f"/workspaces/{workspace_id}/secrets", json=secret)).is_success
            assert dict(await session.pull_secrets())["API_KEY"] == "from-the-platform"

            assert (await api.delete(f"/workspaces/{workspace_id}")).is_success
        error = await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
    assert isinstance(error[0], TokenRejected | WorkspaceDeleted), error
    assert [r.kind for r in events.stopped] in ([StopKind.TOKEN_REJECTED], [StopKind.DELETED])


async def check_generation(
    dev: DevPlatform, session: PlatformSession, events: Events, tmp_path: Path, ws: str
) -> None:
    if dev.generation == "current":
        assert session.generation is Generation.CURRENT and events.secrets == []
        return
    assert session.generation is Generation.NEXT
    assert len(events.secrets) == 1 and len(events.secrets[0]) == 43
    store = TokenStore(ws, tmp_path / "molecule")
    assert store.load_inbound_secret() == events.secrets[0]
    row = await workspace_row(dev, ws)
    assert row["url"] == public_url(ws)  # push mode: the URL was kept


async def test_bootstrap_registration_caches_the_issued_token(
    platform: DevPlatform, tmp_path: Path
) -> None:
    # Created with a URL: no token exists, so the first registration mints one.
    workspace_id, token = await create_workspace(platform, url="http://localhost:9/old")
    assert token is None
    events = Events()
    async with running(platform, tmp_path, workspace_id, events, None) as (_, task):
        await asyncio.sleep(0.3)  # a few heartbeats and state polls with the new token
        assert not task.done()
    store = TokenStore(workspace_id, tmp_path / "molecule")
    cached = store.load_token()
    assert cached is not None and len(cached) == 43
    if sys.platform != "win32":
        assert stat.S_IMODE(store.token_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert (await workspace_row(platform, workspace_id))["url"] == public_url(workspace_id)


async def test_token_revocation_stops_the_run(platform: DevPlatform, tmp_path: Path) -> None:
    workspace_id, token = await create_workspace(platform)
    events = Events()
    async with running(platform, tmp_path, workspace_id, events, token) as (_, task):
        async with admin(platform) as api:
            [live] = (await api.get(f"/workspaces/{workspace_id}/tokens")).json()["tokens"]
            revoked = await api.delete(f"/workspaces/{workspace_id}/tokens/{live['id']}")
            assert revoked.is_success
        [error] = await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
    assert isinstance(error, TokenRejected)
    assert events.stopped[0].kind is StopKind.TOKEN_REJECTED


async def test_platform_restart_is_survived_with_a_reregistration(
    platform: DevPlatform, tmp_path: Path
) -> None:
    workspace_id, token = await create_workspace(platform)
    events = Events()
    async with running(platform, tmp_path, workspace_id, events, token) as (_, task):
        # A crash (SIGKILL): a graceful stop of the dev platform can take up to its
        # shutdown timeout while our heartbeats keep a connection busy.
        await platform.stop(crash=True)
        await asyncio.sleep(0.5)  # several failed cycles
        assert not task.done()
        await platform.start()  # same port, same database
        await eventually(lambda: events.log.count("registered") >= 2)
        assert not task.done()
    row = await workspace_row(platform, workspace_id)
    assert row["status"] == "online" and row["url"] == public_url(workspace_id)


async def test_wrong_token_is_refused_at_registration(
    platform: DevPlatform, tmp_path: Path
) -> None:
    workspace_id, _ = await create_workspace(platform)
    events = Events()
    session, client = make_session(platform, tmp_path, workspace_id, events, "W" * 43)
    async with client:
        with pytest.raises(PlatformRejected) as info:
            await asyncio.wait_for(session.run(), 10)
    assert isinstance(info.value, TokenRejected)
    assert "refused the workspace token" in events.stopped[0].message


async def test_the_sdks_token_folder_is_picked_up(platform: DevPlatform, tmp_path: Path) -> None:
    # What RemoteAgentClient(token_dir=D).register() leaves behind: a workspace whose
    # token was issued by its first registration, kept in D/.auth_token.
    workspace_id = "5dc1f9b0-0000-4000-8000-00000000abcd"
    async with httpx.AsyncClient(base_url=platform.url, timeout=10) as sdk:
        body = {"id": workspace_id, "url": public_url(workspace_id), "agent_card": {"name": "x"}}
        answer = await sdk.post("/registry/register", json=body)
    assert answer.status_code == 200, answer.text
    sdk_dir = tmp_path / "sdk-token-dir"
    sdk_dir.mkdir(mode=0o700)
    (sdk_dir / ".auth_token").write_text(answer.json()["auth_token"])
    store = TokenStore(workspace_id, sdk_dir)
    async with PlatformClient(platform.url, workspace_id, token_store=store) as client:
        await client.register(public_url(workspace_id), {"name": "edge"})
        assert (await client.get_state()).status == "online"


async def test_a_missing_token_names_where_it_was_looked_for(
    platform: DevPlatform, tmp_path: Path
) -> None:
    workspace_id, _ = await create_workspace(platform)  # token minted at create
    store = TokenStore(workspace_id, tmp_path / "empty")
    async with PlatformClient(platform.url, workspace_id, token_store=store) as client:
        with pytest.raises(TokenRejected) as info:
            await client.register(public_url(workspace_id), {"name": "edge"})
    message = str(info.value)
    assert str(store.token_path) in message and "--token-dir" in message
    assert "shown once" not in message


async def test_the_default_origin_passes_cors_and_a_foreign_one_does_not(
    platform: DevPlatform, tmp_path: Path
) -> None:
    workspace_id, token = await create_workspace(platform)
    store = TokenStore(workspace_id, tmp_path / "molecule")
    async with PlatformClient(
        platform.url + "/", workspace_id, token_store=store, token=token
    ) as ok:
        assert (await ok.get_state()).status in ("provisioning", "awaiting_agent")
    foreign = PlatformClient(
        platform.url, workspace_id, token_store=store, origin="https://elsewhere.example"
    )
    async with foreign:
        with pytest.raises(PlatformRejected) as info:
            await foreign.get_state()
    assert info.value.status == 403


async def test_a_card_source_is_registered_then_pushed_when_it_changes(
    platform: DevPlatform, tmp_path: Path
) -> None:
    workspace_id, token = await create_workspace(platform)
    store = TokenStore(workspace_id, tmp_path / "molecule")
    cards: list[dict[str, Any] | None] = [{"name": "from the local server", "url": "x"}]

    async def source() -> dict[str, Any] | None:
        return cards[0]

    client = PlatformClient(platform.url, workspace_id, token_store=store, token=token)
    session = PlatformSession(
        client,
        public_url=public_url(workspace_id),
        agent_card={"name": "built"},
        card_source=source,
        config=FAST,
    )
    async with client:
        task = asyncio.create_task(session.run())
        try:
            await asyncio.wait_for(session.wait_registered(), 10)
            row = await workspace_row(platform, workspace_id)
            assert row["agent_card"]["name"] == "from the local server"  # at registration
            cards[0] = None  # the server went away: the card stays
            await asyncio.sleep(0.3)
            assert (await workspace_row(platform, workspace_id))["agent_card"]["name"] == (
                "from the local server"
            )
            cards[0] = {"name": "new skills", "url": "x"}

            async def pushed() -> bool:
                row = await workspace_row(platform, workspace_id)
                return bool(row["agent_card"]["name"] == "new skills")

            async with asyncio.timeout(10):
                while not await pushed():  # noqa: ASYNC110 - polling the platform
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
