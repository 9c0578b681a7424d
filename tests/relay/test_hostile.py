"""Hostile input: a malicious agent, abusive public callers, secrets kept out of logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

import tunnel
import wire
from relay.penalty import OFFENCE_LIMIT
from tests.relay.attacks import (
    BAD_RESPONSES,
    Attack,
    attack_behind_silent_caller,
    beyond_the_window,
    data,
    frame,
    window_flood,
)
from tests.relay.conftest import RelayFactory, RunningRelay
from tests.relay.fake_agent import FakeAgent, FakeRequest
from tests.relay.rawhttp import error_code, exchange, status_of
from tunnel import logs
from wire import ErrorCode, FrameType

# (attack, needs a request first, expected GOAWAY code)
ATTACKS: dict[str, tuple[Attack, bool, ErrorCode]] = {
    "short frame": (lambda a, r: a.send_raw(b"\x05\x00"), False, ErrorCode.FRAME_ERROR),
    "unknown type": (
        lambda a, r: a.send_raw(bytes([0x7F, 0, 0, 0, 0, 0, 0, 1])),
        False,
        ErrorCode.FRAME_ERROR,
    ),
    "reset for a stream never opened": (
        lambda a, r: a.send_raw(frame(FrameType.RESET, 99, b"\0\0\0\6")),
        False,
        ErrorCode.PROTOCOL_ERROR,
    ),
    "data for a stream never opened": (
        lambda a, r: a.send_raw(frame(FrameType.DATA, 7, b"x")),
        False,
        ErrorCode.PROTOCOL_ERROR,
    ),
    "agent opens a stream": (
        lambda a, r: a.send_raw(frame(FrameType.OPEN, 2, b"\x01GET / HTTP/1.1\r\n\r\n")),
        False,
        ErrorCode.PROTOCOL_ERROR,
    ),
    "hello with another name": (
        lambda a, r: a.send_raw(frame(FrameType.HELLO, 0, b'{"name":"other"}')),
        False,
        ErrorCode.PROTOCOL_ERROR,
    ),
    "text message": (
        lambda a, r: a.send_raw("hello"),  # type: ignore[arg-type]
        False,
        ErrorCode.PROTOCOL_ERROR,
    ),
    "window flood": (window_flood(2000), False, ErrorCode.ENHANCE_YOUR_CALM),
    "empty DATA flood": (
        lambda a, r: [a.send_raw(data(r.sid, b"")) for _ in range(2000)],
        True,
        ErrorCode.ENHANCE_YOUR_CALM,
    ),
    "second GOAWAY": (
        lambda a, r: [a.send_raw(frame(FrameType.GOAWAY, 0, bytes(8))) for _ in range(2)],
        False,
        ErrorCode.PROTOCOL_ERROR,
    ),
    "data beyond the window": (beyond_the_window, True, ErrorCode.FLOW_CONTROL_ERROR),
}


@pytest.fixture
async def good_stream(relay: RunningRelay) -> AsyncIterator[Callable[[], asyncio.Task[bytes]]]:
    """Another agent, "good", with a slow SSE response in flight during the attack."""

    async def sse(request: FakeRequest) -> None:
        await request.respond(200, [("content-type", "text/event-stream")])
        for i in range(6):
            await request.send(f"data: {i}\n\n".encode())
            await asyncio.sleep(0.08)
        await request.send(b"", end=True)

    agent = FakeAgent(relay.url, sse, token=relay.issue("good"), name="good")
    await agent.start()
    await agent.wait_welcome()
    client = relay.client()

    async def read() -> bytes:
        r = await client.get("/a/good/events")
        return r.content

    def start() -> asyncio.Task[bytes]:
        return asyncio.create_task(read())

    yield start
    await client.aclose()
    await agent.stop()


@pytest.mark.parametrize("attack_name", list(ATTACKS))
async def test_malicious_agent_is_cut_off_alone(
    relay: RunningRelay, good_stream: Callable[[], asyncio.Task[bytes]], attack_name: str
) -> None:
    attack, needs_request, code = ATTACKS[attack_name]

    async def handler(request: FakeRequest) -> None:
        attack(evil, request)
        await asyncio.sleep(3600)

    evil = FakeAgent(relay.url, handler, token=relay.issue("evil"), name="evil")
    good_task = good_stream()
    async with evil, relay.client() as client:
        # The caller reads nothing, so the relay cannot return credit faster than the
        # attack spends it. Its answer is an error, or (when its response had started)
        # a response cut before its end.
        answer = await attack_behind_silent_caller(
            evil, relay.settings.port, "x", attack, needs_request
        )
        if status_of(answer) == 200:
            assert needs_request and not answer.endswith(b"0\r\n\r\n")
        else:
            assert status_of(answer) in (502, 503)
        assert (await client.get("/a/good/")).status_code == 200
    assert [g.code for g in evil.goaways] == [code]
    assert evil.close_code == 1002
    assert await asyncio.wait_for(good_task, 10) == b"".join(
        f"data: {i}\n\n".encode() for i in range(6)
    )
    assert relay.state.metrics.sample("edge_protocol_errors_total") == 1


@pytest.mark.parametrize("name", list(BAD_RESPONSES))
async def test_bad_response_bytes_fail_that_request_only(relay: RunningRelay, name: str) -> None:
    bad = BAD_RESPONSES[name]

    async def handler(request: FakeRequest) -> None:
        if request.target == "/ok":
            await request.respond(200, [("content-length", "2")])
            await request.send(b"ok", end=True)
            return
        request.stream.write(bad)
        request.stream.end()

    evil = FakeAgent(relay.url, handler, token=relay.issue("evil"), name="evil")
    async with evil, relay.client() as client:
        await evil.wait_welcome()
        try:
            r = await client.get("/a/evil/")
        except httpx.HTTPError:
            # Bytes that looked right reached the caller first: the response is cut,
            # a definite error, never a clean end.
            assert name == "ends before its body"
        else:
            assert r.status_code == 502 and r.headers["x-edge-error"] == "target_failed"
            assert b"evil" not in r.content
        # The tunnel itself broke no rule: the session stays, the next request works.
        assert (await client.get("/a/evil/ok")).content == b"ok"
    assert evil.goaways == []


async def test_oversized_message_closes_only_that_session(
    relay: RunningRelay, good_stream: Callable[[], asyncio.Task[bytes]]
) -> None:
    good_task = good_stream()
    async with FakeAgent(relay.url, token=relay.issue("evil"), name="evil") as evil:
        await evil.wait_welcome()
        evil.send_raw(frame(FrameType.WINDOW, 0, b"\0" * (wire.MAX_FRAME_SIZE + 1)))
        async with asyncio.timeout(10):
            await evil.closed.wait()
    assert evil.close_code == 1009  # message too big, enforced by the WebSocket layer
    assert len(await asyncio.wait_for(good_task, 10)) > 0
    async with relay.client() as client:
        assert (await client.get("/a/good/")).status_code == 200


async def test_slow_request_head_is_cut_and_relay_stays_responsive(
    relay_factory: RelayFactory,
) -> None:
    relay: RunningRelay = await relay_factory(header_timeout=0.5)
    async with FakeAgent(relay.url, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        loop = asyncio.get_running_loop()
        start = loop.time()
        slow = asyncio.create_task(exchange(relay.settings.port, b"GET /a/demo/ HTTP/1.1\r\nho", 5))
        idle = asyncio.create_task(exchange(relay.settings.port, b"", 5))
        async with relay.client() as client:
            assert (await client.get("/a/demo/")).status_code == 200
        response = await slow
        assert loop.time() - start < 3
        assert status_of(response) == 408 and error_code(response) == "request_timeout"
        assert await idle == b""  # nothing sent, nothing answered: just closed
    assert len(agent.requests) == 1


async def test_conflicting_length_and_chunked_is_400(relay: RunningRelay) -> None:
    async with FakeAgent(relay.url, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        request = (
            b"POST /a/demo/ HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
            b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        response = await exchange(relay.settings.port, request, 2)
    assert status_of(response) == 400 and error_code(response) == "bad_request"
    assert agent.requests == []


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.json = logs.JsonFormatter()
        self.text = logs.TextFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("websockets"):  # the fake agent's own client logs
            self.lines += [self.json.format(record), self.text.format(record)]


async def test_secrets_never_reach_the_logs(relay: RunningRelay) -> None:
    collect = _Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(collect)
    root.setLevel(logging.DEBUG)
    logging.getLogger("uvicorn.error").setLevel(logging.INFO)  # as `edge-relay -vv` does
    try:
        token = relay.issue("demo")
        async with FakeAgent(relay.url, token=token, name="demo") as agent:
            await agent.wait_welcome()
            async with relay.client() as client:
                r = await client.get("/a/demo/", headers={"authorization": "Bearer caller-secret"})
                assert r.status_code == 200
            assert (await relay.client().get("/a/demo/?x")).status_code == 200
        wrong = FakeAgent(relay.url, token=token + "x", name="demo")
        with pytest.raises(tunnel.HandshakeRefused):
            await wrong.start()
    finally:
        root.removeHandler(collect)
        root.setLevel(old_level)
    text = "\n".join(collect.lines)
    assert "agent_connected" in text  # the events are there...
    assert token not in text and token[4:20] not in text  # ...the secrets are not
    assert "caller-secret" not in text
    assert token not in relay.settings.state_dir.joinpath("tokens.json").read_text()


async def _send(port: int, request: bytes, source: str = "127.0.0.1") -> bytes:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    except ConnectionResetError:
        return b""
    return answer


async def test_malformed_requests_do_not_fill_the_log(
    relay: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay answers a malformed request (400/431) without a log line: a caller
    cannot turn its own garbage into the relay's disk writes. Past OFFENCE_LIMIT of them
    the address is cut at once on accept (one line says so), other addresses are not."""
    caplog.set_level(logging.DEBUG)
    bad = [
        b"GET /a/x/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000,
        b"POST /a/x/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
    ]
    port = relay.settings.port
    for i in range(OFFENCE_LIMIT):
        answer = await _send(port, bad[i % len(bad)])
        assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 431 ")), answer[:60]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("relay")] == []
    for i in range(150):
        answer = await _send(port, bad[i % len(bad)])
        assert answer == b"" or i == 0, answer[:60]  # the first over the limit is answered
    blocked = [r.getMessage() for r in caplog.records if r.name.startswith("relay")]
    assert blocked == ["public_address_blocked"]
    assert (
        await _send(port, b"GET /_edge/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    ) == b""
    healthy = await _send(
        port, b"GET /_edge/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "127.0.0.2"
    )
    assert healthy.startswith(b"HTTP/1.1 200 ")
    assert relay.state.metrics.sample("edge_public_blocked_connections_total") >= 149
