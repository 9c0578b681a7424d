"""HttpForwarder through the tunnel: bytes pass through unchanged, errors become RESETs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator

import pytest

from edge_agent.errors import ConfigError, TargetFailed, TargetTimeout, Unavailable
from edge_agent.forward import HttpForwarder
from edge_agent.target import LocalRequest, LocalResponse, target_url
from tests.agent.conftest import AgentRun, make_agent, running_agent, stop_agent
from tests.agent.fake_relay import FakeRelay, StreamWasReset
from tests.agent.origin import GZIPPED, OriginApp, canned_server, free_port
from wire import ErrorCode


async def test_methods_bodies_duplicate_headers_and_raw_path(
    relay: FakeRelay, agent: AgentRun
) -> None:
    session = await relay.session()
    body = os.urandom(300_000)
    headers = [
        ("Content-Length", str(len(body))),
        ("X-Dup", "first"),
        ("X-Dup", "second"),
        ("Cookie", "k=v"),
    ]
    target = "/echo/a%2Fb/%7Euser/caf%C3%A9?q=a%20b&q=%2F&x"
    head, raw = await session.request("PUT", target, headers, body)
    answer = json.loads(raw)
    assert head.status == 201
    assert answer["method"] == "PUT"
    assert answer["raw_path"] == "/echo/a%2Fb/%7Euser/caf%C3%A9"  # not re-quoted
    assert answer["query_string"] == "q=a%20b&q=%2F&x"
    assert answer["size"] == len(body)
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()
    assert [v for n, v in answer["headers"] if n == "x-dup"] == ["first", "second"]
    set_cookies = [v for n, v in head.headers if n.lower() == "set-cookie"]
    assert set_cookies == ["a=1; Path=/", "b=2; Path=/"]
    assert [v for n, v in head.headers if n.lower() == "x-multi"] == ["one", "two"]

    for method in ("GET", "DELETE", "PATCH", "OPTIONS"):
        head, raw = await session.request(method, "/echo")
        assert head.status == 201 and json.loads(raw)["method"] == method
    head, raw = await session.request("HEAD", "/echo")
    assert head.status == 201 and raw == b""


async def test_request_bytes_pass_through_untouched(
    relay: FakeRelay, agent: AgentRun, origin: str
) -> None:
    session = await relay.session()
    headers = [
        ("Host", "demo.relay.test"),
        ("X-Forwarded-Host", "demo.relay.test"),
        ("Connection", "x-drop-me"),
        ("X-Drop-Me", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("X-Keep", "yes"),
    ]
    _head, raw = await session.request("POST", "/echo", headers, b"{}")
    seen = {n for n, _v in json.loads(raw)["headers"]}
    got = dict((n, v) for n, v in json.loads(raw)["headers"])
    # The relay already made the head what the origin should see (hop-by-hop headers
    # are its business): the agent adds, drops and rewrites nothing, Host included.
    assert got["host"] == "demo.relay.test"
    assert got["x-forwarded-host"] == "demo.relay.test"
    assert got["x-keep"] == "yes"
    for name in ("user-agent", "accept", "accept-encoding", "content-type", "cookie"):
        assert name not in seen, f"the forwarder added {name}"


async def test_response_bytes_are_not_decompressed(relay: FakeRelay, agent: AgentRun) -> None:
    session = await relay.session()
    head, raw = await session.request("GET", "/gzip", [("Accept-Encoding", "gzip")])
    assert ("content-encoding", "gzip") in head.headers
    assert raw == GZIPPED


async def test_response_bytes_pass_through_with_their_framing(relay: FakeRelay) -> None:
    canned = (
        b"HTTP/1.1 200 OK\r\nConnection: close, x-secret\r\nX-Secret: 1\r\n"
        b"Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-Fine: 2\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    async with canned_server(canned) as url:
        async with running_agent(relay.url, HttpForwarder(url)):
            session = await relay.session()
            _head, raw = await session.request("GET", "/")
    assert raw == b"hello"
    stream = session.streams[max(session.streams)]
    assert bytes(stream.raw) == canned  # byte for byte, framing and Connection included
    assert stream.close_flag  # "Connection: close": the relay must close after it


async def test_refused_target_resets_connect_error(relay: FakeRelay) -> None:
    async with running_agent(relay.url, HttpForwarder(str(free_port()))) as run:
        session = await relay.session()
        stream = await session.open("GET", "/")
        try:
            await stream.response()
            raise AssertionError("expected a RESET")
        except StreamWasReset as exc:
            assert exc.code is ErrorCode.CONNECT_ERROR
        # The tunnel stays up for the next stream.
        again = await session.open("GET", "/")
        try:
            await again.response()
        except StreamWasReset as exc:
            assert exc.code is ErrorCode.CONNECT_ERROR
    assert [r.reset for r in run.records] == [ErrorCode.CONNECT_ERROR] * 2


async def test_target_failing_mid_body_resets_target_error(relay: FakeRelay) -> None:
    canned = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"y" * 100
    async with canned_server(canned) as url:
        async with running_agent(relay.url, HttpForwarder(url)):
            session = await relay.session()
            stream = await session.open("GET", "/")
            head = await stream.response()
            assert head.status == 200
            got = b""
            try:
                while True:
                    data, end, _ = await stream.read()
                    got += data
                    assert not end, "a cut body must not end cleanly"
            except StreamWasReset as exc:
                assert exc.code is ErrorCode.TARGET_ERROR
            assert got == b"y" * 100


async def test_relay_reset_cancels_the_local_request(
    relay: FakeRelay, agent: AgentRun, origin_app: OriginApp
) -> None:
    session = await relay.session()
    stream = await session.open("GET", "/hang")
    assert (await stream.response()).status == 200
    assert (await stream.read())[0] == b"waiting\n"
    await session.reset(stream, ErrorCode.CANCEL)
    # uvicorn reports the dropped connection to the origin app as http.disconnect.
    await asyncio.wait_for(origin_app.state.disconnected.wait(), 5)
    assert origin_app.state.disconnects == ["/hang"]
    for _ in range(50):
        if agent.records:
            break
        await asyncio.sleep(0.02)
    assert agent.records[-1].reset is ErrorCode.CANCEL
    assert agent.client.active_streams == 0


class _Failing:
    """A Target that fails the way it is told (stand-in for wrappers such as a pause gate)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def handle(self, request: LocalRequest) -> LocalResponse:
        raise self.error

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (TargetTimeout("slow"), ErrorCode.TARGET_TIMEOUT),
        (Unavailable("paused"), ErrorCode.UNAVAILABLE),
        (TargetFailed("broken"), ErrorCode.TARGET_ERROR),
        (ValueError("a bug in a wrapper"), ErrorCode.TARGET_ERROR),
    ],
)
async def test_target_errors_map_to_reset_codes(
    relay: FakeRelay, error: Exception, code: ErrorCode
) -> None:
    run = make_agent(relay.url, _Failing(error)).start()
    try:
        session = await relay.session()
        stream = await session.open("GET", "/")
        with pytest.raises(StreamWasReset) as info:
            await stream.response()
        assert info.value.code is code
    finally:
        await stop_agent(run)


@pytest.mark.parametrize("length", [None, 10_000_000])
async def test_reset_during_upload_is_a_disconnect_not_a_short_body(
    relay: FakeRelay, agent: AgentRun, origin_app: OriginApp, length: int | None
) -> None:
    session = await relay.session()
    more = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 100_000
        await more.wait()  # the caller stalls, then goes away

    headers = [("Content-Length", str(length))] if length else []
    stream = await session.open("PUT", "/upload-watch", headers, body())
    await asyncio.wait_for(origin_app.state.started.wait(), 5)
    await session.reset(stream, ErrorCode.CANCEL)
    await asyncio.wait_for(origin_app.state.disconnected.wait(), 5)
    assert origin_app.state.disconnects == ["upload"]
    more.set()


@pytest.mark.parametrize(
    ("spec", "url"),
    [
        ("8001", "http://127.0.0.1:8001"),
        (":8001", "http://127.0.0.1:8001"),
        ("8001/", "http://127.0.0.1:8001"),
        ("localhost:9000", "http://localhost:9000"),
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
    ],
)
def test_target_specs(spec: str, url: str) -> None:
    assert target_url(spec) == url


@pytest.mark.parametrize("spec", ["99999", "0", ":", "http://x:70000", "ftp://x", "http://"])
def test_bad_target_specs_are_one_clear_error(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        target_url(spec)
    assert spec in str(info.value) or "port" in str(info.value)
