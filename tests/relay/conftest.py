"""Fixtures: a real relay (its asyncio server on an ephemeral loopback port) in the test loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.app import RelayApp
from relay.config import Settings
from relay.server import RelayServer, build
from relay.state import RelayState
from relay.tokens import TokenStore


@dataclasses.dataclass
class RunningRelay:
    server: RelayServer
    settings: Settings
    url: str
    task: asyncio.Task[None]

    @property
    def app(self) -> RelayApp:
        return self.server.app

    @property
    def state(self) -> RelayState:
        return self.server.app.state

    def issue(self, name: str) -> str:
        return TokenStore(self.settings.state_dir).issue(name, replace=True)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        # httpx defaults written down: 5 s timeouts, 100 connections; tests set their own.
        kwargs.setdefault("timeout", httpx.Timeout(10.0))
        kwargs.setdefault("limits", httpx.Limits(max_connections=200))
        return httpx.AsyncClient(base_url=self.url, **kwargs)

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 30)


async def start_relay(settings: Settings) -> RunningRelay:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings.port = port
    server = build(settings, handle_signals=False)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    scheme = "https" if settings.tls else "http"
    return RunningRelay(server, settings, f"{scheme}://127.0.0.1:{port}", task)


RelayFactory = Callable[..., Any]


@pytest.fixture
async def relay_factory(tmp_path: Path) -> AsyncIterator[RelayFactory]:
    """Start relays with custom settings: ``await relay_factory(open_mode=True, ...)``."""
    running: list[RunningRelay] = []

    async def factory(**overrides: Any) -> RunningRelay:
        overrides.setdefault("state_dir", tmp_path / f"state{len(running)}")
        settings = Settings(host="127.0.0.1", port=0, **overrides)
        relay = await start_relay(settings)
        running.append(relay)
        return relay

    yield factory
    for relay in running:
        await relay.stop()


@pytest.fixture
async def relay(relay_factory: RelayFactory) -> RunningRelay:
    result: RunningRelay = await relay_factory()
    return result


async def eventually(predicate: Callable[[], object], within: float = 5.0) -> None:
    """Wait until ``predicate()`` is true (polling: the tests watch foreign state)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
