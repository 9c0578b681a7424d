"""a2a-sdk clients for tests, all on one caller-supplied httpx client and all closed when
the block ends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from a2a.client import Client, ClientConfig, create_client

#: ``await make(base_url_or_card, streaming=True)``: a new a2a-sdk client.
MakeClient = Callable[..., Awaitable[Client]]


@contextlib.asynccontextmanager
async def a2a_clients(http: httpx.AsyncClient) -> AsyncIterator[MakeClient]:
    """Yield a client maker; every client it made is closed on the way out."""
    clients: list[Client] = []

    async def make(target: Any, streaming: bool = True) -> Client:
        config = ClientConfig(httpx_client=http, streaming=streaming)
        client = await create_client(target, client_config=config)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.close()
