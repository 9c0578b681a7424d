"""WebSocket through a tunnel: a public WebSocket client, the real relay and agent, and a
local WebSocket server (the websockets library at both ends). After the local server's
101 every byte passes through untouched: messages of every kind, subprotocol chosen by
the local server, close codes and reasons both ways."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.e2e.conftest import Tunnel, open_tunnel
from tests.e2e.procs import Procs

MIB = 1024 * 1024
#: The local server requires a subprotocol (and picks its favourite of those offered).
CHAT = [Subprotocol("chat.v1")]


async def _echo(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else "/"
    if path.startswith("/close-me"):
        await ws.close(4321, "closed by the local server")
        return
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            await ws.send(message)


@contextlib.asynccontextmanager
async def local_server() -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    async with serve(
        _echo,
        sock=sock,
        subprotocols=[Subprotocol("chat.v2"), Subprotocol("chat.v1")],
        max_size=4 * MIB,
    ):
        yield sock.getsockname()[1]


@pytest.fixture
def ws_tunnel(tmp_path: Path) -> Iterator[tuple[Procs, Path]]:
    with Procs() as procs:
        yield procs, tmp_path


def _ws_url(tunnel: Tunnel, path: str) -> str:
    return tunnel.url.replace("http://", "ws://") + path


async def test_websocket_messages_pass_through(ws_tunnel: tuple[Procs, Path]) -> None:
    procs, tmp = ws_tunnel
    async with local_server() as port:
        tunnel = open_tunnel(procs, tmp, str(port), name="ws")
        async with (
            asyncio.timeout(10),
            connect(
                _ws_url(tunnel, "echo"),
                subprotocols=[Subprotocol("chat.v1"), Subprotocol("chat.v2")],
                max_size=4 * MIB,
                ping_interval=None,  # no keepalive traffic that could unstick a stalled pipe
            ) as ws,
        ):
            assert ws.subprotocol == "chat.v2"  # the local server's choice
            await ws.send("hello, text")
            assert await ws.recv() == "hello, text"
            await ws.send(b"\x00\x01binary")
            assert await ws.recv() == b"\x00\x01binary"
            big = bytes(range(256)) * (MIB // 256)
            await ws.send(big)
            assert await ws.recv() == big
            await ws.send(["frag", "mented"])  # a fragmented message
            assert await ws.recv() == "fragmented"
            latency = await ws.ping()
            await asyncio.wait_for(latency, 5)
            await ws.close(4000, "the caller is done")
        assert ws.close_code == 4000 and ws.close_reason == "the caller is done"


async def test_close_code_from_the_local_server_reaches_the_caller(
    ws_tunnel: tuple[Procs, Path],
) -> None:
    procs, tmp = ws_tunnel
    async with local_server() as port:
        tunnel = open_tunnel(procs, tmp, str(port), name="ws")
        async with connect(_ws_url(tunnel, "close-me"), subprotocols=CHAT) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 4321 and ws.close_reason == "closed by the local server"
        # the pipe is over at both ends at once (no wait for a close timeout)
        tunnel.agent.wait_line(r"GET /close-me 101 \d+ ms", timeout=3)


async def test_many_sockets_share_one_tunnel(ws_tunnel: tuple[Procs, Path]) -> None:
    procs, tmp = ws_tunnel
    async with local_server() as port:
        tunnel = open_tunnel(procs, tmp, str(port), name="ws")

        async def one(i: int) -> None:
            async with connect(_ws_url(tunnel, f"echo/{i}"), subprotocols=CHAT) as ws:
                for j in range(3):
                    await ws.send(f"{i}:{j}")
                    assert await ws.recv() == f"{i}:{j}"

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(100))), 60)
        assert tunnel.relay.count("agent_connected") == 1
