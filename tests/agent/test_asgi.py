"""AsgiTarget: an in-process ASGI app behind the tunnel, without a socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edge_agent.asgi import AsgiTarget, load_app
from edge_agent.errors import ConfigError
from tests.agent.conftest import AgentRun, running_agent
from tests.agent.fake_relay import FakeRelay, StreamWasReset
from wire import ErrorCode

MiB = 1024 * 1024


class App:
    """A raw ASGI app with lifespan; records what it saw."""

    def __init__(self, lifespan: bool = True) -> None:
        self.lifespan = lifespan
        self.events: list[str] = []
        self.disconnected = asyncio.Event()
        self.sent = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await getattr(self, "_" + scope["path"].split("/")[-1])(scope, receive, send)

    async def _lifespan(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not self.lifespan:
            raise RuntimeError("no lifespan here")
        while True:
            message = await receive()
            self.events.append(message["type"])
            if message["type"] == "lifespan.startup":
                scope["state"]["db"] = "connected"
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _scope(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        chunks, size = 0, 0
        while True:
            message = await receive()
            chunks += 1
            size += len(message["body"])
            if not message["more_body"]:
                break
        seen = {k: scope[k] for k in ("path", "root_path", "scheme", "method", "http_version")}
        seen |= {
            "raw_path": scope["raw_path"].decode(),
            "query_string": scope["query_string"].decode(),
            "client": list(scope["client"]) if scope["client"] else None,
            "server": list(scope["server"]) if scope["server"] else None,
            "headers": [[n.decode(), v.decode()] for n, v in scope["headers"]],
            "state": scope.get("state", {}),
            "chunks": chunks,
            "size": size,
        }
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(seen).encode()})

    async def _ticks(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"tick %d\n" % i, "more_body": True})
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b""})

    async def _wait(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started\n", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected.set()

    async def _flood(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"z" * 65536
        for _ in range(512):  # 32 MiB
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            self.sent += len(chunk)
        await send({"type": "http.response.body", "body": b""})

    async def _crash(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom before start")

    async def _crashlater(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom after start")


@pytest.fixture
async def app() -> App:
    return App()


@pytest.fixture
async def asgi_agent(relay: FakeRelay, app: App) -> AsyncIterator[AgentRun]:
    target = AsgiTarget(app)
    await target.start()
    async with running_agent(relay.url, target) as run:
        yield run


async def test_scope_from_the_tunnelled_request(
    relay: FakeRelay, app: App, asgi_agent: AgentRun
) -> None:
    session = await relay.session()
    headers = [
        ("Host", "relay.test"),
        ("X-Forwarded-For", "10.9.8.7, 203.0.113.5"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "relay.test"),
        ("X-Forwarded-Prefix", "/a/demo"),
        ("Connection", "close"),
        ("X-Dup", "1"),
        ("X-Dup", "2"),
    ]

    async def body() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"b" * 100_000

    stream = await session.open("POST", "/api/caf%C3%A9/a%2Fb/scope?x=%20y", headers, body())
    await stream.response()
    seen = json.loads(await stream.body())
    assert seen["method"] == "POST" and seen["scheme"] == "https"
    assert seen["root_path"] == "/a/demo"
    assert seen["path"] == "/a/demo/api/café/a/b/scope"
    assert seen["raw_path"] == "/a/demo/api/caf%C3%A9/a%2Fb/scope"
    assert seen["query_string"] == "x=%20y"
    assert seen["client"] == ["203.0.113.5", 0]
    assert seen["server"] == ["relay.test", 443]
    assert [v for n, v in seen["headers"] if n == "x-dup"] == ["1", "2"]
    assert "connection" not in {n for n, _ in seen["headers"]}
    assert seen["state"] == {"db": "connected"}
    assert seen["size"] == 400_000 and seen["chunks"] >= 2  # streamed, not buffered


async def test_streaming_response_arrives_incrementally(
    relay: FakeRelay, asgi_agent: AgentRun
) -> None:
    session = await relay.session()
    stream = await session.open("GET", "/ticks")
    await stream.response()
    times = []
    while True:
        data, end, when = await stream.read()
        if data:
            times.append(when)
        if end:
            break
    assert len(times) == 3
    assert times[2] - times[0] > 0.3


async def test_relay_reset_delivers_http_disconnect(
    relay: FakeRelay, app: App, asgi_agent: AgentRun
) -> None:
    session = await relay.session()
    stream = await session.open("GET", "/wait")
    await stream.response()
    assert (await stream.read())[0] == b"started\n"
    await session.reset(stream)
    await asyncio.wait_for(app.disconnected.wait(), 5)
    await asyncio.sleep(0.1)
    assert asgi_agent.client.active_streams == 0


async def test_app_send_waits_for_the_caller(
    relay: FakeRelay, app: App, asgi_agent: AgentRun
) -> None:
    session = await relay.session()
    stream = await session.open("GET", "/flood")
    await stream.response()
    await asyncio.sleep(0.5)  # nothing consumed
    assert app.sent < 8 * MiB, app.sent
    total = 0
    while True:
        data, end, _ = await stream.read()
        total += len(data)
        if end:
            break
    assert total == app.sent == 32 * MiB


async def test_app_errors(relay: FakeRelay, asgi_agent: AgentRun) -> None:
    session = await relay.session()
    head, body = await session.request("GET", "/crash")
    assert head.status == 500 and body == b"Internal Server Error"
    stream = await session.open("GET", "/crashlater")
    assert (await stream.response()).status == 200
    with pytest.raises(StreamWasReset) as info:
        while not (await stream.read())[1]:
            pass
    assert info.value.code is ErrorCode.TARGET_ERROR


async def test_lifespan_runs_and_is_optional(relay: FakeRelay) -> None:
    app = App()
    target = AsgiTarget(app)
    await target.start()
    assert app.events == ["lifespan.startup"]
    await target.aclose()
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]

    plain = App(lifespan=False)
    async with running_agent(relay.url, AsgiTarget(plain)):
        session = await relay.session()
        head, body = await session.request("GET", "/scope")
        assert head.status == 200 and json.loads(body)["state"] == {}


def test_load_app_import_string() -> None:
    assert callable(load_app("tests.agent.test_asgi:App"))
    with pytest.raises(ConfigError):
        load_app("tests.agent.test_asgi:Nope")
    with pytest.raises(ConfigError):
        load_app("no_colon_here")
