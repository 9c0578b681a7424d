"""Public requests through a real relay to the fake agent: what passes, what is added."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest

import wire
from relay.config import DEFAULT_MAX_STREAMS, Settings
from tests.relay.conftest import RelayFactory, RunningRelay, eventually
from tests.relay.fake_agent import FakeAgent, FakeRequest
from wire import ErrorCode, FrameType
from wire.frames import encode_parts


def frame(ftype: FrameType, sid: int, payload: bytes) -> bytes:
    return encode_parts(ftype, sid, payload, wire.Flag.NONE)


async def echo(request: FakeRequest) -> None:
    """Answers with the request as the agent saw it, as JSON-ish text headers."""
    body = await request.read_body()
    status = int(request.header("x-want-status")[0]) if request.header("x-want-status") else 200
    headers = [
        ("x-method", request.method),
        ("x-target", request.target),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("set-cookie", "c=3"),
        ("connection", "x-hop"),
        ("x-hop", "dropped"),
        ("keep-alive", "timeout=5"),
    ]
    if status in (204, 304):
        await request.respond(status, headers, end=True)
        return
    await request.respond(status, headers)
    await request.send(body, end=True)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_methods_and_bodies_pass_through(relay: RunningRelay, method: str) -> None:
    async with FakeAgent(relay.url, echo, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        body = b"" if method in ("GET", "OPTIONS") else b"payload \x00\xff" * 100
        async with relay.client() as client:
            r = await client.request(method, "/a/demo/items/7?x=1&y=%20", content=body)
    assert r.status_code == 200
    assert r.headers["x-method"] == method
    assert r.headers["x-target"] == "/items/7?x=1&y=%20"
    assert r.content == body


@pytest.mark.parametrize("status", [201, 204, 301, 404, 418, 500, 503])
async def test_status_codes_pass_through(relay: RunningRelay, status: int) -> None:
    async with FakeAgent(relay.url, echo, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            r = await client.get("/a/demo/", headers={"x-want-status": str(status)})
    assert r.status_code == status
    assert "x-edge-error" not in r.headers  # the agent's answer, not the relay's


async def test_duplicate_headers_keep_order_both_ways(relay: RunningRelay) -> None:
    seen: list[tuple[str, str]] = []

    async def handler(request: FakeRequest) -> None:
        seen.extend(request.headers)
        await echo(request)

    async with FakeAgent(relay.url, handler, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            headers = [("x-dup", "one"), ("x-other", "z"), ("x-dup", "two"), ("x-dup", "three")]
            r = await client.get("/a/demo/", headers=headers)
    assert r.headers.get_list("set-cookie") == ["a=1", "b=2", "c=3"]
    assert [v for n, v in seen if n == "x-dup"] == ["one", "two", "three"]
    # The response's bytes pass through as the agent sent them (a tunnel, like ssh -R):
    # its Connection header and the names it lists reach the caller.
    assert r.headers["x-hop"] == "dropped" and r.headers["keep-alive"] == "timeout=5"


async def test_hop_by_hop_dropped_and_forwarded_headers_added(relay: RunningRelay) -> None:
    seen: list[FakeRequest] = []

    async def handler(request: FakeRequest) -> None:
        seen.append(request)
        await echo(request)

    async with FakeAgent(relay.url, handler, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            r = await client.get(
                "/a/demo/deep/path",
                headers={
                    "connection": "keep-alive, x-secret-hop",
                    "x-secret-hop": "1",
                    "keep-alive": "timeout=5",
                    "te": "trailers",
                    "proxy-authorization": "Basic Zm9vOmJhcg==",
                    "x-forwarded-for": "203.0.113.9",
                    "x-forwarded-proto": "gopher",
                    "x-forwarded-host": "evil.example",
                    "x-forwarded-prefix": "/evil",
                    "x-end-to-end": "kept",
                },
            )
    assert r.status_code == 200
    request = seen[0]
    names = {n for n, _ in request.headers}
    for hop in ("connection", "x-secret-hop", "keep-alive", "te", "proxy-authorization"):
        assert hop not in names
    assert request.header("x-end-to-end") == ["kept"]
    # The caller's own forwarding headers are not believed (no trusted proxy in front).
    assert request.header("x-forwarded-for") == ["127.0.0.1"]
    assert request.header("x-forwarded-proto") == ["http"]
    assert request.header("x-forwarded-host") == [relay.url.removeprefix("http://")]
    assert request.header("x-forwarded-prefix") == ["/a/demo"]
    assert request.target == "/deep/path"


async def test_prefix_alone_is_root_and_target_is_raw(relay: RunningRelay) -> None:
    async with FakeAgent(relay.url, echo, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            bare = await client.get("/a/demo?q=1")
            raw = await client.get(httpx.URL(relay.url + "/a/demo/%2Fx%20y/..%2F?a=%41"))
    assert bare.headers["x-target"] == "/?q=1"
    assert raw.headers["x-target"] == "/%2Fx%20y/..%2F?a=%41"


async def test_host_based_routing(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(domain="tunnels.test")
    seen: list[FakeRequest] = []

    async def handler(request: FakeRequest) -> None:
        seen.append(request)
        await echo(request)

    token = relay.issue("demo")
    async with FakeAgent(relay.url, handler, token=token, name="demo") as agent:
        welcome = await agent.wait_welcome()
        port = relay.url.rsplit(":", 1)[1]
        assert welcome.urls == (f"{relay.url}/a/demo/", f"http://demo.tunnels.test:{port}/")
        async with relay.client() as client:
            by_host = await client.get("/some/path?x=1", headers={"host": "demo.tunnels.test:443"})
            # A Host naming a tunnel wins over a path naming another one.
            other = await client.get("/a/other/", headers={"host": "demo.tunnels.test"})
            unknown = await client.get("/", headers={"host": "nobody.tunnels.test"})
            # A reserved label is the relay's own host name: path routing applies.
            own = await client.get("/a/demo/x", headers={"host": "relay.tunnels.test"})
    assert by_host.headers["x-target"] == "/some/path?x=1"
    assert seen[0].header("x-forwarded-prefix") == []
    assert seen[0].header("x-forwarded-host") == ["demo.tunnels.test:443"]
    assert other.headers["x-target"] == "/a/other/"
    assert own.headers["x-target"] == "/x"
    assert unknown.status_code == 404
    assert unknown.headers["x-edge-error"] == "unknown_tunnel"


async def test_sse_events_arrive_as_they_are_sent(relay: RunningRelay) -> None:
    gap = 0.25

    async def sse(request: FakeRequest) -> None:
        await request.read_body()
        await request.respond(200, [("content-type", "text/event-stream")])
        for i in range(5):
            await request.send(f"data: {i}\n\n".encode())
            await asyncio.sleep(gap)
        await request.send(b"", end=True)

    async with FakeAgent(relay.url, sse, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        arrivals: list[tuple[float, bytes]] = []
        async with relay.client() as client:
            start = time.monotonic()
            async with client.stream("POST", "/a/demo/stream", content=b"{}") as r:
                async for chunk in r.aiter_raw():
                    arrivals.append((time.monotonic() - start, chunk))
    events = b"".join(c for _, c in arrivals).split(b"\n\n")
    assert events[:5] == [f"data: {i}".encode() for i in range(5)]
    # Each event comes as it is written, not at the end (wide margins: shared machine).
    assert len(arrivals) >= 4
    assert arrivals[0][0] < 4 * gap
    assert arrivals[-1][0] - arrivals[0][0] >= 3 * gap


async def test_request_body_is_read_only_as_fast_as_credit_allows(relay: RunningRelay) -> None:
    total = 64 * 1024 * 1024
    sent = 0
    digest = hashlib.sha256()
    got = hashlib.sha256()

    async def upload() -> AsyncIterator[bytes]:
        nonlocal sent
        block = bytes(range(256)) * 256  # 64 KiB
        while sent < total:
            digest.update(block)
            sent += len(block)
            yield block

    async def handler(request: FakeRequest) -> None:
        async for chunk in request.body_chunks():
            got.update(chunk)
        await request.respond(200, end=True)

    agent = FakeAgent(
        relay.url, handler, token=relay.issue("demo"), name="demo", grant_credit=False
    )
    async with agent:
        await agent.wait_welcome()
        async with relay.client(timeout=httpx.Timeout(60.0)) as client:
            task = asyncio.create_task(client.post("/a/demo/upload", content=upload()))
            await asyncio.sleep(1.0)
            request = agent.requests[0]
            # Without credit the agent gets exactly one initial window (head and body),
            # and the relay does not keep reading the caller: only socket buffers and
            # one chunk are in flight.
            assert len(request.raw) == wire.INITIAL_STREAM_WINDOW
            stalled_at = sent
            await asyncio.sleep(0.5)
            assert sent == stalled_at
            assert sent < total // 2
            agent.release_credit()
            r = await task
    assert r.status_code == 200
    assert sent == total and got.hexdigest() == digest.hexdigest()


async def test_agent_that_stops_reading_slows_the_caller_down(relay: RunningRelay) -> None:
    """An agent that grants huge windows and then stops reading its WebSocket must not
    make the relay buffer the caller's upload: the session's outbox is bounded."""
    total = 96 * 1024 * 1024
    sent = 0

    async def upload() -> AsyncIterator[bytes]:
        nonlocal sent
        block = b"u" * 65536
        while sent < total:
            sent += len(block)
            yield block

    async def greedy(request: FakeRequest) -> None:
        agent.pause_reading()  # deaf from now on (the WINDOW frames still go out)
        for sid in (0, request.sid):
            agent.send_raw(frame(FrameType.WINDOW, sid, (1 << 30).to_bytes(4, "big")))
        await asyncio.sleep(3600)

    agent = FakeAgent(relay.url, greedy, token=relay.issue("demo"), name="demo")
    async with agent:
        await agent.wait_welcome()
        async with relay.client(timeout=httpx.Timeout(60.0)) as client:
            task = asyncio.create_task(client.post("/a/demo/upload", content=upload()))
            await asyncio.sleep(1.5)
            stalled_at = sent
            await asyncio.sleep(0.5)
            assert sent == stalled_at
            assert sent < total // 2
            task.cancel()
            agent.resume_reading()  # so that the close handshake can complete


async def test_large_download_streams_intact(relay: RunningRelay) -> None:
    blob = hashlib.sha256(b"seed").digest() * (32 * 1024 * 1024 // 32)

    async def handler(request: FakeRequest) -> None:
        await request.read_body()
        await request.respond(200, [("content-length", str(len(blob)))])
        await request.send(blob, end=True)

    async with FakeAgent(relay.url, handler, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client(timeout=httpx.Timeout(60.0)) as client:
            r = await client.get("/a/demo/blob")
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(blob))
    assert hashlib.sha256(r.content).digest() == hashlib.sha256(blob).digest()


async def test_caller_disconnect_mid_response_resets_stream(relay: RunningRelay) -> None:
    async def endless(request: FakeRequest) -> None:
        await request.respond(200, [("content-type", "text/event-stream")])
        while True:
            await request.send(b"data: tick\n\n")
            await asyncio.sleep(0.05)

    async with FakeAgent(relay.url, endless, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            async with client.stream("GET", "/a/demo/events") as r:
                async for _ in r.aiter_raw():
                    break
        async with asyncio.timeout(5):
            await agent.reset_seen.wait()
    assert agent.resets == {agent.requests[0].sid: ErrorCode.CANCEL}
    await eventually(lambda: relay.app.streams() == 0)


async def test_caller_disconnect_before_response_resets_stream(relay: RunningRelay) -> None:
    async def never(request: FakeRequest) -> None:
        await asyncio.sleep(3600)

    async with FakeAgent(relay.url, never, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client(timeout=httpx.Timeout(0.5)) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/a/demo/slow")
        async with asyncio.timeout(5):
            await agent.reset_seen.wait()
    assert list(agent.resets.values()) == [ErrorCode.CANCEL]


async def test_many_concurrent_requests_on_one_tunnel(relay_factory: RelayFactory) -> None:
    concurrent = 1000
    assert Settings().max_streams == DEFAULT_MAX_STREAMS >= concurrent
    # Every request comes from 127.0.0.1: lift the per-address cap (--max-client-streams).
    relay = await relay_factory(max_client_streams=concurrent)
    arrived = 0
    all_in = asyncio.Event()

    async def held(request: FakeRequest) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == concurrent:
            all_in.set()
        await all_in.wait()  # every request is in flight at once before any is answered
        await request.respond(200)
        await request.send(request.target.encode(), end=True)

    async with FakeAgent(relay.url, held, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        # aiohttp's client: httpx is too slow to open 1,000 connections quickly.
        connector = aiohttp.TCPConnector(limit=concurrent, force_close=True)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(i: int) -> tuple[int, str]:
                async with session.get(f"{relay.url}/a/demo/{i}") as r:
                    return r.status, await r.text()

            results = await asyncio.gather(*(one(i) for i in range(concurrent)))
    assert all_in.is_set()
    assert results == [(200, f"/{i}") for i in range(concurrent)]


async def test_a_trusted_front_proxy_keeps_its_forwarding_headers(
    relay_factory: RelayFactory,
) -> None:
    relay: RunningRelay = await relay_factory(trusted_proxies=("127.0.0.0/8",))
    seen: list[FakeRequest] = []

    async def handler(request: FakeRequest) -> None:
        seen.append(request)
        await echo(request)

    async with FakeAgent(relay.url, handler, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            headers = {"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https"}
            assert (await client.get("/a/demo/", headers=headers)).status_code == 200
    request = seen[0]
    assert request.header("x-forwarded-for") == ["203.0.113.9, 127.0.0.1"]
    assert request.header("x-forwarded-proto") == ["https"]
    # Forwarded gets the relay's own hop appended (the proxy sent none here).
    assert request.header("forwarded")[-1].split(",")[-1].strip().startswith("for=127.0.0.1")
