"""WebSocket to an in-process ASGI app: ``edge-agent http --app tests.e2e.ws_app:app`` (a
Starlette app), the real relay, and the websockets library as the public client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from tests.e2e.conftest import Tunnel
from tests.e2e.procs import Procs, RelayProc, issue_token, start_agent

MIB = 1024 * 1024
APP = "tests.e2e.ws_app:app"


@pytest.fixture(scope="module")
def app_tunnel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tunnel]:
    state = tmp_path_factory.mktemp("wsapp")
    with Procs() as procs:
        relay = procs.add(RelayProc(state, name="relay-wsapp"))
        token = issue_token(state, "wsapp")
        agent = procs.add(start_agent(relay, token, "--app", APP, name="agent-wsapp"))
        yield Tunnel(relay, agent, token, agent.url)


def _ws(tunnel: Tunnel, path: str) -> str:
    return tunnel.url.replace("http://", "ws://") + path


async def _seen(tunnel: Tunnel, n: int) -> list[list[object]]:
    """What the app's echo sockets saw when their callers closed (at least ``n`` of them)."""
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(100):
            seen: list[list[object]] = (await client.get(tunnel.at("seen"))).json()
            if len(seen) >= n:
                return seen
            await asyncio.sleep(0.05)
    return seen


async def test_messages_of_every_kind_reach_the_app_and_back(app_tunnel: Tunnel) -> None:
    async with connect(
        _ws(app_tunnel, "echo"),
        subprotocols=[Subprotocol("chat.v1"), Subprotocol("chat.v2")],
        max_size=2 * MIB,
        compression=None,
    ) as ws:
        assert ws.subprotocol == "chat.v2"  # the app's choice, not the first offered
        await ws.send("hello, text ✓")
        assert await ws.recv() == "hello, text ✓"
        await ws.send(b"\x00\x01binary")
        assert await ws.recv() == b"\x00\x01binary"
        big = bytes(range(256)) * (MIB // 256)
        await ws.send(big)
        assert await ws.recv() == big
        await ws.send(["frag", "mented ", "text"])  # one message in three frames
        assert await ws.recv() == "fragmented text"
        await ws.send([b"\x01", b"\x02\x03"])
        assert await ws.recv() == b"\x01\x02\x03"
        await asyncio.wait_for(await ws.ping(b"are you there"), 5)  # answered by the agent
    start = len(await _seen(app_tunnel, 0))
    for code, reason in ((1000, ""), (1001, "going away"), (4000, "the caller is done")):
        async with connect(_ws(app_tunnel, "echo")) as ws:
            await ws.send("x")
            await ws.recv()
            await ws.close(code, reason)
        assert ws.close_code == code  # the app's echo of our close frame
    seen = await _seen(app_tunnel, start + 3)
    assert seen[start:] == [[1000, ""], [1001, "going away"], [4000, "the caller is done"]]


@pytest.mark.parametrize("code", [1000, 1001, 4321])
async def test_close_code_and_reason_from_the_app(app_tunnel: Tunnel, code: int) -> None:
    async with connect(_ws(app_tunnel, f"close-me?code={code}")) as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == code
    assert ws.close_reason == f"closed by the app with {code}"


async def test_close_before_accept_is_403(app_tunnel: Tunnel) -> None:
    with pytest.raises(InvalidStatus) as raised:
        async with connect(_ws(app_tunnel, "deny")):
            pass
    assert raised.value.response.status_code == 403


async def test_denial_response_of_the_app(app_tunnel: Tunnel) -> None:
    with pytest.raises(InvalidStatus) as raised:
        async with connect(_ws(app_tunnel, "teapot")):
            pass
    assert raised.value.response.status_code == 418
    assert raised.value.response.body == b"no sockets here"


async def test_app_failure_after_accept_closes_with_1011(app_tunnel: Tunnel) -> None:
    async with connect(_ws(app_tunnel, "raises")) as ws:
        await ws.send("boom")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1011


async def test_unknown_route_is_refused_and_plain_http_still_works(app_tunnel: Tunnel) -> None:
    with pytest.raises(InvalidStatus) as raised:
        async with connect(_ws(app_tunnel, "nowhere")):
            pass
    assert raised.value.response.status_code == 403  # Starlette closes unknown sockets
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(app_tunnel.at(""))).status_code == 200


async def test_many_sockets_on_one_tunnel(app_tunnel: Tunnel) -> None:
    async def one(i: int) -> None:
        async with connect(_ws(app_tunnel, "echo")) as ws:
            for j in range(3):
                await ws.send(f"{i}:{j}")
                assert await ws.recv() == f"{i}:{j}"

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 60)


async def test_request_line_logged_with_its_duration_when_the_socket_closes(
    app_tunnel: Tunnel,
) -> None:
    async with connect(_ws(app_tunnel, "echo?line=1")) as ws:
        await ws.send("x")
        await ws.recv()
        await asyncio.sleep(0.3)
        assert app_tunnel.agent.count(r"GET /echo\?line=1") == 0  # not while it is open
    line = app_tunnel.agent.wait_line(r"GET /echo\?line=1 101 (\d+) ms", timeout=10)
    assert int(line.group(1)) >= 300
