from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from edge_agent.bridge import ObjectBridge
from edge_agent.forward import HttpForwarder
from edge_agent.port import ExchangeRecord
from edge_agent.session import StreamTarget
from edge_agent.target import Target
from edge_agent.tunnel import ReconnectPolicy, TunnelClient
from tests.agent.fake_relay import FakeRelay
from tests.agent.origin import OriginApp, run_uvicorn

TOKEN = "tok-demo-0123456789"

#: Test-scale backoff: same shape as production, milliseconds instead of seconds.
FAST = ReconnectPolicy(
    initial=0.05, max_delay=0.4, jitter=0.01, healthy_after=1.0, restart_delay=0.05
)


class AgentRun:
    """A TunnelClient running in a task, with what its hooks saw."""

    def __init__(self, client: TunnelClient) -> None:
        self.client = client
        self.records: list[ExchangeRecord] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> AgentRun:
        self.task = asyncio.create_task(self.client.run())
        return self

    async def finish(self, within: float = 10.0) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, within)


def as_stream_target(
    target: Target | HttpForwarder, on_done: Callable[[ExchangeRecord], None]
) -> StreamTarget:
    """A forwarder (records go to ``on_done``), or an object Target behind the bridge."""
    if isinstance(target, HttpForwarder):
        target.on_done = on_done
        return target
    return ObjectBridge(target, on_done=on_done)


def make_agent(relay_url: str, target: Target | HttpForwarder, **kwargs: Any) -> AgentRun:
    kwargs.setdefault("policy", FAST)
    records: list[ExchangeRecord] = []
    client = TunnelClient(
        relay_url,
        kwargs.pop("token", TOKEN),
        kwargs.pop("name", "demo"),
        as_stream_target(target, records.append),
        **kwargs,
    )
    run = AgentRun(client)
    run.records = records
    return run


@pytest.fixture
async def relay() -> AsyncIterator[FakeRelay]:
    fake = await FakeRelay(tokens={TOKEN: "demo"}).start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def origin_app() -> OriginApp:
    return OriginApp()


@pytest.fixture
async def origin(origin_app: OriginApp) -> AsyncIterator[str]:
    async with run_uvicorn(origin_app) as url:
        yield url


@pytest.fixture
async def agent(relay: FakeRelay, origin: str) -> AsyncIterator[AgentRun]:
    """An agent forwarding to the uvicorn origin, connected to the fake relay."""
    async with running_agent(relay.url, HttpForwarder(origin)) as run:
        yield run


@contextlib.asynccontextmanager
async def running_agent(
    relay_url: str, target: Target | HttpForwarder, **kwargs: Any
) -> AsyncIterator[AgentRun]:
    """An agent started on ``target``; on the way out it is stopped and ``target`` closed."""
    run = make_agent(relay_url, target, **kwargs).start()
    try:
        yield run
    finally:
        await stop_agent(run)
        await target.aclose()


async def stop_agent(run: AgentRun) -> None:
    run.client.stop()
    if run.task is not None:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(run.task, 10)
