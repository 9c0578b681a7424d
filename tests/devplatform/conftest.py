"""Fixtures: a real dev platform on 127.0.0.1 (in-process, port 0), an httpx
client, and a real aiohttp upstream standing in for an agent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web

from devplatform import ssrf
from devplatform.app import RunningServer, start_server
from devplatform.config import Generation, PlatformConfig, ProxyLimits

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fake_resolver(table: dict[str, list[str]]) -> ssrf.Resolver:
    """DNS is outside our control: names in ``table`` resolve as given, the rest
    go to the system resolver (which knows ``localhost``)."""

    async def resolve(host: str) -> list[str]:
        if host in table:
            return table[host]
        return await ssrf.system_resolver(host)

    return resolve


@dataclass
class Dev:
    """A running dev platform and a client for it."""

    server: RunningServer
    client: httpx.AsyncClient
    cfg: PlatformConfig

    @property
    def url(self) -> str:
        return self.server.url

    async def create(self, **payload: Any) -> httpx.Response:
        body = {"name": "edge-laptop", "runtime": "external", "external": True, **payload}
        return await self.client.post("/workspaces", json=body, headers=ADMIN)

    async def create_external(self, **payload: Any) -> tuple[str, str]:
        """Create a url-less external workspace: ``(id, token minted at create)``."""
        response = await self.create(**payload)
        assert response.status_code == 201, response.text
        data = response.json()
        return data["id"], data["connection"]["auth_token"]

    async def register(
        self, workspace_id: str, url: str | None, token: str | None = None, **extra: Any
    ) -> httpx.Response:
        body: dict[str, Any] = {"id": workspace_id, "agent_card": {"name": "edge"}, **extra}
        if url is not None:
            body["url"] = url
        headers = bearer(token) if token else {}
        return await self.client.post("/registry/register", json=body, headers=headers)

    async def heartbeat(
        self, workspace_id: str, token: str | None, **fields: Any
    ) -> httpx.Response:
        body = {"workspace_id": workspace_id, "active_tasks": 0, "uptime_seconds": 1, **fields}
        headers = bearer(token) if token else {}
        return await self.client.post("/registry/heartbeat", json=body, headers=headers)

    async def registered(self, url: str, **payload: Any) -> tuple[str, str]:
        """A workspace registered at ``url``; returns ``(id, token)``."""
        workspace_id, token = await self.create_external(**payload)
        extra = {"delivery_mode": "push"} if self.cfg.generation is Generation.NEXT else {}
        response = await self.register(workspace_id, url, token, **extra)
        assert response.status_code == 200, response.text
        return workspace_id, token


PlatformFactory = Callable[..., Awaitable[Dev]]


@pytest.fixture
async def make_platform() -> AsyncIterator[PlatformFactory]:
    running: list[Dev] = []

    async def start(
        generation: str = "current",
        db_path: str = ":memory:",
        resolver: ssrf.Resolver = ssrf.system_resolver,
        proxy: ProxyLimits | None = None,
        **options: Any,
    ) -> Dev:
        cfg = PlatformConfig(
            admin_token=ADMIN_TOKEN,
            generation=Generation(generation),
            db_path=db_path,
            proxy=proxy or ProxyLimits(),
            **options,
        )
        server = await start_server(cfg, "127.0.0.1", 0, resolver=resolver)
        # httpx defaults (5 s timeouts, 100 connections) are fine for these calls.
        client = httpx.AsyncClient(base_url=server.url, timeout=10.0)
        dev = Dev(server, client, cfg)
        running.append(dev)
        return dev

    try:
        yield start
    finally:
        for dev in running:
            await dev.client.aclose()
            await dev.server.close()


@pytest.fixture
async def dev(make_platform: PlatformFactory) -> Dev:
    return await make_platform()


@pytest.fixture
async def dev_next(make_platform: PlatformFactory) -> Dev:
    return await make_platform("next")


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


Behaviour = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


async def echo_jsonrpc(request: web.Request, body: bytes) -> web.StreamResponse:
    import json

    message = json.loads(body)
    result = {"kind": "message", "messageId": str(uuid.uuid4()), "role": "agent", "parts": []}
    return web.json_response({"jsonrpc": "2.0", "id": message.get("id"), "result": result})


@dataclass
class Upstream:
    """A real HTTP server on 127.0.0.1, reached by the platform as ``localhost``."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    behaviour: Behaviour = echo_jsonrpc

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}/a2a"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.path, dict(request.headers), body))
        return await self.behaviour(request, body)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    agent = Upstream()
    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", agent.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    agent.port = runner.addresses[0][1]
    try:
        yield agent
    finally:
        await runner.cleanup()
