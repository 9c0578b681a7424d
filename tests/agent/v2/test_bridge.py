"""ObjectBridge: v2 stream bytes served by object Targets (the in-process ASGI app and
the Molecule wrappers), driven through a FakeStream."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edge_agent.asgi import AsgiTarget
from edge_agent.bridge import ObjectBridge
from edge_agent.errors import (
    RequestAborted,
    TargetFailed,
    TargetTimeout,
    TargetUnreachable,
    Unavailable,
)
from edge_agent.molecule.dedup import DedupTarget
from edge_agent.molecule.inbound import InboundSecretTarget
from edge_agent.port import ExchangeRecord
from edge_agent.target import LocalRequest, LocalResponse
from tests.agent.v2.apps import Scope, V2Origin, pattern, respond
from tests.agent.v2.support import open_stream, parse_response, send
from wire import ErrorCode

MiB = 1024 * 1024


@pytest.fixture
def app() -> V2Origin:
    return V2Origin()


@pytest.fixture
def records() -> list[ExchangeRecord]:
    return []


@pytest.fixture
async def bridge(app: V2Origin, records: list[ExchangeRecord]) -> AsyncIterator[ObjectBridge]:
    bridge = ObjectBridge(AsgiTarget(app, lifespan="off"), on_done=records.append)
    yield bridge
    await bridge.aclose()


def request(method: str, path: str, *extra: str, version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: public.example", *extra, "", ""]
    return "\r\n".join(lines).encode()


async def test_get_through_the_asgi_app(
    bridge: ObjectBridge, records: list[ExchangeRecord]
) -> None:
    stream = open_stream(bridge.handler, sid=3)
    send(stream, request("GET", "/echo?q=1", "X-Forwarded-Prefix: /a/demo"))
    await stream.wait()
    response = parse_response(bytes(stream.out))
    assert response.status == 200 and stream.closed is False
    assert response.header(b"content-length") is None  # the app gave none: chunked
    assert response.header(b"transfer-encoding") == b"chunked"
    answer = json.loads(response.body)
    assert answer["path"] == "/a/demo/echo" and answer["query"] == "q=1"
    (record,) = records
    assert (record.sid, record.method, record.target, record.status) == (3, "GET", "/echo?q=1", 200)
    assert record.error is None and record.bytes_out == len(stream.out)


async def test_post_10_mib_with_bounded_buffer(bridge: ObjectBridge) -> None:
    body = pattern(0, 10 * MiB)
    stream = open_stream(bridge.handler)
    send(stream, request("POST", "/echo", f"Content-Length: {len(body)}"), end=False)
    assert stream.handler is not None
    for start in range(0, len(body), 64 * 1024):
        if stream.reading_paused:  # the relay would stop here, after at most one window
            await stream.wait_for(lambda: not stream.reading_paused)
        stream.handler.data(body[start : start + 64 * 1024])
    stream.handler.end(False)
    await stream.wait(30)
    answer = json.loads(parse_response(bytes(stream.out)).body)
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()
    assert stream.pauses > 0  # the buffer filled faster than the app read it


async def test_chunked_request_body(bridge: ObjectBridge) -> None:
    stream = open_stream(bridge.handler)
    send(stream, request("POST", "/echo", "Transfer-Encoding: chunked"), end=False)
    send(stream, b"5\r\nhello\r\n", b"6\r\n world\r\n0\r\n\r\n")
    await stream.wait()
    answer = json.loads(parse_response(bytes(stream.out)).body)
    assert answer["sha256"] == hashlib.sha256(b"hello world").hexdigest()


@pytest.mark.parametrize("chunked", ["0", "1"])
async def test_large_response_sha256_and_backpressure(bridge: ObjectBridge, chunked: str) -> None:
    total = 4 * MiB
    stream = open_stream(bridge.handler, high=256 * 1024)
    send(stream, request("GET", f"/bytes?n={total}&chunked={chunked}"))
    while not stream.finished.is_set():
        await stream.wait_for(lambda: stream.writing_paused or stream.finished.is_set())
        assert stream.buffered < 256 * 1024 + 2 * 65536 + 64  # one chunk past the mark
        stream.drain()
    response = parse_response(bytes(stream.out))
    assert response.body == pattern(0, total)
    framing = b"transfer-encoding" if chunked == "1" else b"content-length"
    assert response.header(framing) is not None


async def test_head_and_no_body_statuses(bridge: ObjectBridge) -> None:
    stream = open_stream(bridge.handler)
    send(stream, request("HEAD", "/bytes?n=100"))
    await stream.wait()
    raw = bytes(stream.out)
    assert raw.endswith(b"\r\n\r\n") and b"content-length: 100" in raw
    for code in (204, 304):
        stream = open_stream(bridge.handler)
        send(stream, request("GET", f"/status?code={code}"))
        await stream.wait()
        assert bytes(stream.out).endswith(b"\r\n\r\n") and b"chunked" not in stream.out
        assert parse_response(bytes(stream.out)).status == code


async def test_connection_close_and_http10(bridge: ObjectBridge) -> None:
    stream = open_stream(bridge.handler)
    send(stream, request("GET", "/bytes?n=10", "Connection: close"))
    await stream.wait()
    response = parse_response(bytes(stream.out))
    assert stream.closed is True and response.header(b"connection") == b"close"
    stream = open_stream(bridge.handler)
    send(stream, request("GET", "/bytes?n=10&chunked=1", version="1.0"))
    await stream.wait()
    raw = bytes(stream.out)
    assert stream.closed is True and b"chunked" not in raw  # close-delimited for 1.0
    assert parse_response(raw, eof=True).body == pattern(0, 10)


async def test_aborted_cancels_the_app(bridge: ObjectBridge, app: V2Origin) -> None:
    stream = open_stream(bridge.handler)
    send(stream, request("GET", "/wait"))
    await asyncio.wait_for(app.waiting.wait(), 10)
    assert stream.handler is not None
    stream.abort(ErrorCode.CANCEL, "caller left")
    await asyncio.wait_for(app.disconnected.wait(), 10)
    assert stream.closed is None and stream.reset_code is None


class Failing:
    def __init__(self, error: Exception, after_head: bool = False) -> None:
        self.error = error
        self.after_head = after_head

    async def handle(self, request: LocalRequest) -> LocalResponse:
        if not self.after_head:
            raise self.error

        async def body() -> AsyncIterator[bytes]:
            yield b"part"
            raise self.error

        return LocalResponse(200, [], body())

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize(
    ("error", "after_head", "code"),
    [
        (TargetUnreachable("refused"), False, ErrorCode.CONNECT_ERROR),
        (TargetTimeout("slow"), False, ErrorCode.TARGET_TIMEOUT),
        (Unavailable("paused"), False, ErrorCode.UNAVAILABLE),
        (RuntimeError("bug"), False, ErrorCode.TARGET_ERROR),
        (TargetUnreachable("late"), True, ErrorCode.TARGET_ERROR),
        (TargetFailed("cut"), True, ErrorCode.TARGET_ERROR),
    ],
)
async def test_errors_map_to_reset_codes(
    error: Exception, after_head: bool, code: ErrorCode, records: list[ExchangeRecord]
) -> None:
    bridge = ObjectBridge(Failing(error, after_head), on_done=records.append)
    stream = open_stream(bridge.handler)
    send(stream, request("GET", "/"))
    await stream.wait()
    assert stream.reset_code == code
    assert records[0].error is not None


@pytest.mark.parametrize(
    "headers", [[("Content-Length", "10")], [("X-Evil", "a\r\nSet-Cookie: b=c")]]
)
async def test_bad_responses_are_target_errors(headers: list[tuple[str, str]]) -> None:
    class Bad:
        async def handle(self, request: LocalRequest) -> LocalResponse:
            async def body() -> AsyncIterator[bytes]:
                yield b"abc"

            return LocalResponse(200, headers, body())

        async def aclose(self) -> None:
            pass

    stream = open_stream(ObjectBridge(Bad()).handler)
    send(stream, request("GET", "/"))
    await stream.wait()
    assert stream.reset_code == ErrorCode.TARGET_ERROR
    assert b"Set-Cookie" not in stream.out


async def test_fin_before_the_body_end_aborts_the_body() -> None:
    seen: list[BaseException] = []

    class Reader:
        async def handle(self, request: LocalRequest) -> LocalResponse:
            try:
                async for _ in request.body:
                    pass
            except RequestAborted as exc:
                seen.append(exc)
                raise
            raise AssertionError("a cut-off body looked complete")

        async def aclose(self) -> None:
            pass

    stream = open_stream(ObjectBridge(Reader()).handler)
    send(stream, request("POST", "/echo", "Content-Length: 100"), b"only some")
    await stream.wait()
    assert stream.reset_code == ErrorCode.CANCEL and len(seen) == 1


async def test_inbound_secret_wrapper(app: V2Origin) -> None:
    bridge = ObjectBridge(InboundSecretTarget(AsgiTarget(app, lifespan="off"), "s3cret"))
    stream = open_stream(bridge.handler)
    send(stream, request("GET", "/echo"))
    await stream.wait()
    assert parse_response(bytes(stream.out)).status == 401
    stream = open_stream(bridge.handler)
    send(stream, request("GET", "/echo", "Authorization: Bearer s3cret"))
    await stream.wait()
    assert parse_response(bytes(stream.out)).status == 200


async def test_dedup_wrapper_answers_a_resend_from_its_cache() -> None:
    calls: list[str] = []

    async def a2a(scope: Scope, receive: Any, send_: Any) -> None:
        message = await receive()
        calls.append(json.loads(message["body"])["params"]["message"]["messageId"])
        await respond(send_, 200, [(b"content-type", b"application/json")], b'{"ok":1}')

    bridge = ObjectBridge(DedupTarget(AsgiTarget(a2a, lifespan="off")))
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "message/send",
            "params": {"message": {"messageId": "m-1", "parts": []}},
        }
    ).encode()
    head = request("POST", "/", "Content-Type: application/json", f"Content-Length: {len(body)}")
    answers = []
    for _ in range(2):
        stream = open_stream(bridge.handler)
        send(stream, head, body)
        await stream.wait()
        answers.append(parse_response(bytes(stream.out)).body)
    assert answers == [b'{"ok":1}'] * 2 and calls == ["m-1"]
    await bridge.aclose()


async def test_abort_while_the_body_is_held_cancels_the_target() -> None:
    cancelled = asyncio.Event()

    class Stuck:
        async def handle(self, request: LocalRequest) -> LocalResponse:
            try:
                await asyncio.Event().wait()  # never reads the body
            except asyncio.CancelledError:
                cancelled.set()
                raise
            raise AssertionError("unreachable")

        async def aclose(self) -> None:
            pass

    stream = open_stream(ObjectBridge(Stuck()).handler)
    send(stream, request("POST", "/", f"Content-Length: {MiB}"), end=False)
    chunk = b"x" * 65536
    while not stream.reading_paused:
        send(stream, chunk, end=False)
    await asyncio.sleep(0)
    stream.abort()  # FakeStream asserts nothing touches the stream after this
    await asyncio.wait_for(cancelled.wait(), 5)
    await asyncio.sleep(0.01)
    assert stream.reset_code is None and stream.closed is None
