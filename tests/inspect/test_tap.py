"""The adapter on today's data path: what a Target sees is unchanged, the Recorder
sees the exchange as HTTP/1.1 bytes, and a de-duplicated re-send is marked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

import pytest

from edge_agent.errors import TargetFailed
from edge_agent.inspect import tap
from edge_agent.inspect.store import Exchange, Store
from edge_agent.molecule.dedup import DedupTarget
from edge_agent.target import EmptyBody, LocalRequest, LocalResponse


async def chunks(parts: Sequence[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class Echo:
    """Answers the request body back, in the chunks it came in, with ``headers``."""

    def __init__(self, headers: Sequence[tuple[str, str]] = (), fail_after: int = -1) -> None:
        self.headers = list(headers)
        self.fail_after = fail_after
        self.seen: list[bytes] = []
        self.closed = 0

    async def handle(self, request: LocalRequest) -> LocalResponse:
        self.seen = [chunk async for chunk in request.body]
        return LocalResponse(200, list(self.headers), self._body(self.seen), self._close)

    async def _body(self, parts: list[bytes]) -> AsyncIterator[bytes]:
        for i, part in enumerate(parts):
            if i == self.fail_after:
                raise TargetFailed("the target broke")
            yield part

    async def _close(self) -> None:
        self.closed += 1

    async def aclose(self) -> None:
        pass


async def forward(target: Echo | DedupTarget, request: LocalRequest) -> bytes:
    """What streams.Stream does with a request: handle, read the body, close."""
    response = await tap.handle(target, request)
    try:
        return b"".join([chunk async for chunk in response.body])
    finally:
        aclose = getattr(response.body, "aclose", None)
        if aclose is not None:
            await aclose()
        if response.close is not None:
            await response.close()


def only(store: Store) -> Exchange:
    (exchange,) = store.newest_first()
    return exchange


async def test_without_a_recorder_the_hook_is_the_target_call_itself() -> None:
    target = Echo()
    request = LocalRequest(1, "GET", "/", [], EmptyBody())
    call = tap.handle(target, request)
    assert getattr(call, "cr_code", None) is Echo.handle.__code__  # no wrapper
    await call


async def test_a_chunked_upload_and_its_answer_are_recorded_unchanged(store: Store) -> None:
    target = Echo(headers=[("Content-Type", "text/plain")])
    parts = [b"hello ", b"world"]
    request = LocalRequest(1, "POST", "/up?x=1", [("Host", "public")], chunks(parts))
    assert await forward(target, request) == b"hello world"
    assert target.seen == parts and target.closed == 1
    ex = only(store)
    assert (ex.method, ex.path, ex.status, ex.state) == ("POST", "/up?x=1", 200, "done")
    assert ex.request.headers[0] == ("Host", "public")
    assert bytes(ex.request.body) == b"hello world" and ex.request.complete
    assert bytes(ex.response.body) == b"hello world" and ex.response.complete


async def test_a_body_with_content_length_goes_raw(store: Store) -> None:
    request = LocalRequest(1, "PUT", "/", [("Content-Length", "3")], chunks([b"abc"]))
    await forward(Echo(headers=[("Content-Length", "3")]), request)
    ex = only(store)
    assert bytes(ex.request.body) == b"abc" and bytes(ex.response.body) == b"abc"


async def test_a_target_that_fails_mid_body_is_an_error_row(store: Store) -> None:
    request = LocalRequest(1, "POST", "/", [], chunks([b"a", b"b"]))
    with pytest.raises(TargetFailed):
        await forward(Echo(fail_after=1), request)
    ex = only(store)
    assert ex.state == "error" and ex.error is not None and "the target broke" in ex.error


async def test_a_cancelled_stream_is_an_error_row(store: Store) -> None:
    gate = asyncio.Event()

    class Slow(Echo):
        async def handle(self, request: LocalRequest) -> LocalResponse:
            await gate.wait()
            raise AssertionError("not reached")

    task = asyncio.ensure_future(forward(Slow(), LocalRequest(1, "GET", "/", [], EmptyBody())))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert only(store).state == "error"


def a2a_call(message_id: str) -> bytes:
    message = {"role": "ROLE_USER", "messageId": message_id, "parts": [{"text": "hi"}]}
    doc = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
    return json.dumps(doc).encode()


async def test_a_resend_answered_by_the_deduplication_is_marked(store: Store) -> None:
    inner = Echo(headers=[("Content-Type", "application/json")])
    dedup = DedupTarget(inner)
    headers = [("Content-Type", "application/json")]
    for _ in range(2):
        request = LocalRequest(1, "POST", "/", headers, chunks([a2a_call("m-1")]))
        await forward(dedup, request)
    resend, first = store.newest_first()
    assert not first.duplicate and resend.duplicate
    assert resend.a2a is not None and resend.a2a["messageId"] == "m-1"
    await dedup.aclose()
