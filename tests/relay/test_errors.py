"""Every relay-made error: status, stable code in the JSON body and in x-edge-error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

import wire
from relay.config import Settings
from tests.relay.conftest import RelayFactory, RunningRelay, eventually
from tests.relay.fake_agent import FakeAgent, FakeRequest
from tests.relay.rawhttp import error_code, exchange, status_of
from wire import ErrorCode


def assert_relay_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status
    assert r.headers["x-edge-error"] == code
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if status == 503:
        assert int(r.headers["retry-after"]) > 0


async def test_unknown_tunnel_is_404(relay: RunningRelay) -> None:
    async with relay.client() as client:
        for path in ("/a/nobody/", "/", "/elsewhere", "/a/"):
            assert_relay_error(await client.get(path), 404, "unknown_tunnel")


async def test_unknown_reserved_path_is_404(relay: RunningRelay) -> None:
    async with relay.client() as client:
        assert_relay_error(await client.get("/_edge/nothing"), 404, "not_found")
        assert_relay_error(await client.get("/_edge/connect"), 400, "bad_request")


async def test_agent_offline_is_503_for_a_name_with_a_token(relay: RunningRelay) -> None:
    relay.issue("demo")
    async with relay.client() as client:
        assert_relay_error(await client.get("/a/demo/"), 503, "agent_offline")


async def test_agent_offline_after_an_open_mode_agent_left(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(open_mode=True)
    async with FakeAgent(relay.url, name="laptop") as agent:
        await agent.wait_welcome()
    async with relay.client() as client:
        for _ in range(50):  # the session ends a moment after the agent closed
            r = await client.get("/a/laptop/")
            if r.status_code == 503:
                break
            await asyncio.sleep(0.05)
    assert_relay_error(r, 503, "agent_offline")


RESETS = [
    (ErrorCode.CONNECT_ERROR, 502, "target_unreachable"),
    (ErrorCode.TARGET_ERROR, 502, "target_failed"),
    (ErrorCode.INTERNAL_ERROR, 502, "target_failed"),
    (ErrorCode.TARGET_TIMEOUT, 504, "target_timeout"),
    (ErrorCode.UNAVAILABLE, 503, "agent_unavailable"),
    (ErrorCode.REFUSED_STREAM, 503, "agent_unavailable"),
    (ErrorCode.LIMIT_EXCEEDED, 429, "rate_limited"),
]


@pytest.mark.parametrize(("reset", "status", "code"), RESETS)
async def test_reset_before_head_maps_to_status(
    relay: RunningRelay, reset: ErrorCode, status: int, code: str
) -> None:
    async def handler(request: FakeRequest) -> None:
        request.reset(reset, "local failure")

    async with FakeAgent(relay.url, handler, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            assert_relay_error(await client.post("/a/demo/", content=b"x"), status, code)


async def test_reset_after_head_cuts_the_response(relay: RunningRelay) -> None:
    async def handler(request: FakeRequest) -> None:
        await request.respond(200, [("content-type", "text/plain")])
        await request.send(b"partial")
        await asyncio.sleep(0.1)
        request.reset(ErrorCode.TARGET_ERROR)

    async with FakeAgent(relay.url, handler, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/a/demo/")


async def test_short_body_against_content_length_cuts_the_response(relay: RunningRelay) -> None:
    async def handler(request: FakeRequest) -> None:
        await request.respond(200, [("content-length", "100")])
        await request.send(b"only ten..", end=True)

    async with FakeAgent(relay.url, handler, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/a/demo/")
            # The tunnel itself is fine.
            agent.handler = _ok
            assert (await client.get("/a/demo/")).status_code == 200


async def _ok(request: FakeRequest) -> None:
    await request.respond(200, end=True)


async def _never(request: FakeRequest) -> None:
    await asyncio.sleep(3600)


async def test_response_timeout_is_504_and_cancels(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(response_timeout=0.5)
    async with FakeAgent(relay.url, _never, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            assert_relay_error(await client.get("/a/demo/"), 504, "response_timeout")
        async with asyncio.timeout(5):
            await agent.reset_seen.wait()
    assert list(agent.resets.values()) == [ErrorCode.CANCEL]


async def test_too_many_streams_is_429(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(max_streams=2)
    async with FakeAgent(relay.url, _never, token=relay.issue("demo"), name="demo") as agent:
        welcome = await agent.wait_welcome()
        assert welcome.max_streams == 2
        async with relay.client() as client:
            held = [asyncio.create_task(client.get("/a/demo/")) for _ in range(2)]
            await eventually(lambda: len(agent.requests) == 2)
            assert_relay_error(await client.get("/a/demo/"), 429, "too_many_streams")
            for task in held:
                task.cancel()


async def test_body_over_limit_by_content_length_is_413_before_forwarding(
    relay_factory: RelayFactory,
) -> None:
    relay: RunningRelay = await relay_factory(max_request_body=1000)
    async with FakeAgent(relay.url, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        head = b"POST /a/demo/ HTTP/1.1\r\nhost: x\r\ncontent-length: 1001\r\n\r\n"
        response = await exchange(relay.settings.port, head)
    assert status_of(response) == 413 and error_code(response) == "body_too_large"
    assert b"connection: close" in response.lower()
    assert agent.requests == []


async def test_chunked_body_over_limit_is_413(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(max_request_body=100_000)

    async def reader(request: FakeRequest) -> None:
        await request.read_body()
        await request.respond(200, end=True)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 20_000

    async with FakeAgent(relay.url, reader, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            r = await client.post("/a/demo/", content=body())
            assert_relay_error(r, 413, "body_too_large")
            # The connection stays usable: the rest of the body was discarded.
            assert (await client.post("/a/demo/", content=b"small")).status_code == 200
        async with asyncio.timeout(5):
            await agent.reset_seen.wait()
    assert agent.requests[0].received <= 100_000


async def test_headers_too_large_is_431(relay: RunningRelay) -> None:
    async with FakeAgent(relay.url, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            # Over the relay's head limit (32 KiB), under the parser's hard cap.
            big = {f"x-h{i}": "v" * 1000 for i in range(40)}
            assert_relay_error(await client.get("/a/demo/", headers=big), 431, "headers_too_large")
            many = {f"x-h{i}": "v" for i in range(250)}
            assert_relay_error(await client.get("/a/demo/", headers=many), 431, "headers_too_large")
        # Over the parser's hard cap: refused before the app sees it.
        head = b"GET /a/demo/ HTTP/1.1\r\nhost: x\r\n" + b"x-big: " + b"v" * 70_000 + b"\r\n\r\n"
        response = await exchange(relay.settings.port, head)
    assert status_of(response) == 431 and error_code(response) == "headers_too_large"
    assert agent.requests == []


@pytest.mark.parametrize("path", ["/a/Demo/", "/a/%64emo/", "/a/../a/demo/", "/a/-x/", "/a/a_b/"])
async def test_invalid_tunnel_names_are_400(relay: RunningRelay, path: str) -> None:
    async with FakeAgent(relay.url, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        response = await exchange(
            relay.settings.port, f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode(), 2
        )
    assert status_of(response) == 400 and error_code(response) == "bad_request"
    assert agent.requests == []


async def test_stalled_request_body_is_408(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(body_idle_timeout=0.5)

    async def reader(request: FakeRequest) -> None:
        await request.read_body()

    async with FakeAgent(relay.url, reader, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        head = b"POST /a/demo/ HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc"
        response = await exchange(relay.settings.port, head, read_for=5)
        async with asyncio.timeout(5):
            await agent.reset_seen.wait()
    assert status_of(response) == 408 and error_code(response) == "request_timeout"
    assert list(agent.resets.values()) == [ErrorCode.CANCEL]


async def test_agent_goaway_makes_new_requests_503(relay: RunningRelay) -> None:
    async with FakeAgent(relay.url, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        agent.conn.send_goaway(ErrorCode.NO_ERROR, "pausing")
        agent.flush()
        async with relay.client() as client:
            for _ in range(50):
                r = await client.get("/a/demo/")
                if r.status_code == 503:
                    break
                await asyncio.sleep(0.02)
    assert_relay_error(r, 503, "agent_unavailable")


async def test_one_caller_address_cannot_hold_every_stream(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(max_client_streams=2)
    release = asyncio.Event()

    async def slow(request: FakeRequest) -> None:
        await release.wait()
        await request.respond(200, [("content-length", "2")])
        await request.send(b"ok", end=True)

    async with FakeAgent(relay.url, slow, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            held = [asyncio.create_task(client.get("/a/demo/")) for _ in range(2)]
            await eventually(lambda: len(agent.requests) == 2)
            third = await client.get("/a/demo/")
            assert (third.status_code, third.headers["x-edge-error"]) == (
                429,
                "too_many_client_streams",
            )
            release.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
            assert (await client.get("/a/demo/")).status_code == 200  # the slots came back
    assert relay.app.client_streams == {}


def test_by_default_one_address_holds_a_quarter_of_a_tunnels_streams() -> None:
    """Slow uploads from one address must not take a tunnel down with default settings."""
    settings = Settings(host="127.0.0.1", port=0)
    assert settings.max_client_streams == wire.DEFAULT_MAX_STREAMS // 4 == 256


async def test_a_body_slower_than_the_minimum_rate_is_408(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(min_body_rate=1000, body_rate_window=1.0)
    async with FakeAgent(relay.url, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.settings.port)
        writer.write(b"POST /a/demo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        loop = asyncio.get_running_loop()
        start = loop.time()
        answer = b""
        while loop.time() - start < 10 and b"\r\n\r\n" not in answer:
            writer.write(b"x")  # two bytes a second: far below a thousand
            await asyncio.sleep(0.5)
            with contextlib.suppress(TimeoutError):
                answer += await asyncio.wait_for(reader.read(4096), 0.01)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"too slow" in answer


async def test_a_browser_gets_a_page_and_a_program_gets_json(relay: RunningRelay) -> None:
    async with relay.client() as client:
        page = await client.get("/a/nobody/", headers={"accept": "text/html,*/*;q=0.8"})
        data = await client.get("/a/nobody/", headers={"accept": "application/json"})
    assert page.status_code == data.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["x-edge-error"] == data.headers["x-edge-error"] == "unknown_tunnel"
    assert "<h1>404 Not Found</h1>" in page.text and "Check the address" in page.text
    assert data.json()["error"]["code"] == "unknown_tunnel"
