"""WebSocket through ``edge-agent run --to URL``: a public client, the real relay and
agent, and a local WebSocket server (the websockets library at both ends), in both
platform generations. The upgrade is checked for the "next" platform's inbound secret
like any call (without it: 401), then piped as bytes: messages of both kinds and close
codes both ways pass through, and the request line is printed when the socket closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

from tests.molecule_e2e.conftest import Stack
from tests.molecule_e2e.stack import RunAgent

MIB = 1024 * 1024
CHAT_V1, CHAT_V2 = Subprotocol("chat.v1"), Subprotocol("chat.v2")
#: The local server requires a subprotocol (and picks its favourite of those offered).
CHAT = [CHAT_V1]


@dataclasses.dataclass
class Seen:
    """What the local server saw: the Host of each upgrade, the close codes it got."""

    hosts: list[str] = dataclasses.field(default_factory=list)
    closes: list[int | None] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class WsAgent:
    agent: RunAgent
    url: str  # the public ws:// URL of the workspace
    secret: str | None  # the platform's inbound secret ("next" only)
    local_port: int
    seen: Seen


def _echo(seen: Seen) -> Callable[[ServerConnection], None]:
    def handler(ws: ServerConnection) -> None:
        seen.hosts.append(ws.request.headers["Host"] if ws.request is not None else "")
        path = ws.request.path if ws.request is not None else "/"
        if path.startswith("/close-me"):
            ws.close(4321, "closed by the local server")
            return
        with contextlib.suppress(ConnectionClosed):
            for message in ws:
                ws.send(message)
        seen.closes.append(ws.close_code)

    return handler


@contextlib.contextmanager
def local_ws_server(seen: Seen) -> Iterator[int]:
    """A websockets server in a thread of its own (the agent's startup blocks the test)."""
    server: Server = serve(
        _echo(seen), "127.0.0.1", 0, subprotocols=[CHAT_V2, CHAT_V1], max_size=4 * MIB
    )
    thread = threading.Thread(target=server.serve_forever, name="local-ws", daemon=True)
    thread.start()
    try:
        yield server.socket.getsockname()[1]
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture(scope="module")
def ws_agent(stack: Stack) -> Iterator[WsAgent]:
    seen = Seen()
    with local_ws_server(seen) as port:
        ws = stack.workspace("websocket")
        agent = stack.start_agent(ws, "--to", f"http://127.0.0.1:{port}", name="ws")
        url = agent.wait_url()
        agent.wait_line(r"^Registered: ", 30)
        path = ws.token_dir / ws.id / ".platform_inbound_secret"
        secret = path.read_text() if path.exists() else None
        assert (secret is not None) == stack.is_next
        yield WsAgent(agent, url.replace("http://", "ws://"), secret, port, seen)


def _auth(secret: str | None) -> dict[str, str]:
    return {} if secret is None else {"Authorization": f"Bearer {secret}"}


def _close_code(seen: Seen, after: int, within: float = 5.0) -> int | None:
    """The close code of the next socket the local server saw end (the n-th + 1)."""
    deadline = time.monotonic() + within
    while len(seen.closes) <= after and time.monotonic() < deadline:
        time.sleep(0.02)
    return seen.closes[after] if len(seen.closes) > after else -1


async def test_messages_and_close_codes_pass_through(ws_agent: WsAgent) -> None:
    closes = len(ws_agent.seen.closes)
    async with (
        asyncio.timeout(10),
        connect(
            ws_agent.url + "echo",
            additional_headers=_auth(ws_agent.secret),
            subprotocols=[CHAT_V1, CHAT_V2],
            max_size=4 * MIB,
        ) as ws,
    ):
        assert ws.subprotocol == CHAT_V2  # the local server's choice
        await ws.send("hello, text")
        assert await ws.recv() == "hello, text"
        await ws.send(b"\x00\x01binary\xff")
        assert await ws.recv() == b"\x00\x01binary\xff"
        big = bytes(range(256)) * (MIB // 256)
        await ws.send(big)
        assert await ws.recv() == big
        await asyncio.wait_for(await ws.ping(), 5)
        await ws.close(4000, "the caller is done")
    assert ws.close_code == 4000 and ws.close_reason == "the caller is done"
    # The request line is printed when the socket closes; the local server saw the
    # caller's close code, and its own Host (as every request to a URL target does).
    ws_agent.agent.wait_line(r"GET /echo 101 \d+ ms", timeout=5)
    assert await asyncio.to_thread(_close_code, ws_agent.seen, closes) == 4000
    assert ws_agent.seen.hosts[-1] == f"127.0.0.1:{ws_agent.local_port}"


async def test_a_close_code_from_the_local_server_reaches_the_caller(ws_agent: WsAgent) -> None:
    async with (
        asyncio.timeout(10),
        connect(
            ws_agent.url + "close-me", additional_headers=_auth(ws_agent.secret), subprotocols=CHAT
        ) as ws,
    ):
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 4321 and ws.close_reason == "closed by the local server"


async def test_an_upgrade_without_the_inbound_secret_is_refused(ws_agent: WsAgent) -> None:
    before = len(ws_agent.seen.hosts)
    if ws_agent.secret is None:
        # "current" sends no credential: the tunnel stays open to upgrades too.
        async with asyncio.timeout(10), connect(ws_agent.url + "echo", subprotocols=CHAT) as ws:
            await ws.send("open")
            assert await ws.recv() == "open"
        return
    for headers in ({}, {"Authorization": "Bearer not-the-secret"}):
        with pytest.raises(InvalidStatus) as refused:
            async with (
                asyncio.timeout(10),
                connect(ws_agent.url + "echo", additional_headers=headers, subprotocols=CHAT),
            ):
                pass
        assert refused.value.response.status_code == 401
    assert len(ws_agent.seen.hosts) == before  # the local server never saw them
