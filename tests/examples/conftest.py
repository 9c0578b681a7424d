"""Serve the example A2A agent on 127.0.0.1 with a real uvicorn, and a2a-sdk clients."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import uvicorn

from examples.a2a_agent import Settings, build_app
from tests.support.a2a_clients import MakeClient, a2a_clients

Serve = Callable[[Settings], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start the example app with the given settings; returns its base URL."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(settings: Settings) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        # Lifespan on: its shutdown closes the runners of tasks left waiting for input.
        config = uvicorn.Config(build_app(settings), lifespan="on", log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        servers.append((server, task))
        for _ in range(1000):  # uvicorn offers no started event; give it up to 10 s
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        return f"http://127.0.0.1:{port}/"

    try:
        yield start
    finally:
        for server, task in servers:
            server.should_exit = True
            await asyncio.wait_for(task, 10)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # The SDK client's own httpx default is a 5 s timeout, also between SSE events.
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:
        yield client


@pytest.fixture
async def make_client(http: httpx.AsyncClient) -> AsyncIterator[MakeClient]:
    async with a2a_clients(http) as make:
        yield make
