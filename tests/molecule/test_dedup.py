"""DedupTarget with a tiny in-test Target standing in for the local A2A server."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from edge_agent.errors import TargetFailed
from edge_agent.molecule.dedup import DedupLimits, DedupTarget
from edge_agent.target import EmptyBody, LocalRequest, LocalResponse

_ids = itertools.count(1)


def rpc(method: str = "SendMessage", mid: str | None = "m-1", text: str = "hi") -> bytes:
    message: dict[str, Any] = {"role": "ROLE_USER", "parts": [{"text": text}]}
    if mid is not None:
        message["messageId"] = mid
    doc = {"jsonrpc": "2.0", "id": 7, "method": method, "params": {"message": message}}
    return json.dumps(doc).encode()


async def chunks_of(parts: Sequence[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def request(
    body: bytes | Sequence[bytes],
    method: str = "POST",
    target: str = "/",
    content_type: str = "application/json",
) -> LocalRequest:
    parts = [body] if isinstance(body, bytes) else list(body)
    headers = [("Content-Type", content_type)] if content_type else []
    return LocalRequest(next(_ids), method, target, headers, chunks_of(parts))


async def read(response: LocalResponse) -> bytes:
    data = b"".join([chunk async for chunk in response.body])
    if response.close is not None:
        await response.close()
    return data


class Agent:
    """A tiny Target: records what reaches it; answers after ``gate`` opens.

    The answer is ``parts`` (default: a JSON-RPC result naming the call number), sent as
    separate chunks; ``between`` can hold the body after its first chunk.
    """

    def __init__(self, parts: Sequence[bytes] | None = None, status: int = 200) -> None:
        self.calls = 0
        self.bodies: list[list[bytes]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.between = asyncio.Event()
        self.between.set()
        self.parts = parts
        self.status = status
        self.fail_next = False
        self.body_closed_early = False
        self.closed = False

    async def handle(self, req: LocalRequest) -> LocalResponse:
        self.calls += 1
        self.bodies.append([chunk async for chunk in req.body])
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise TargetFailed("local agent crashed")
        parts = self.parts or [b'{"jsonrpc":"2.0","id":7,', b'"result":%d}' % self.calls]
        headers = [("content-type", "application/json"), ("x-call", str(self.calls))]
        return LocalResponse(self.status, headers, self._body(parts))

    async def _body(self, parts: Sequence[bytes]) -> AsyncIterator[bytes]:
        finished = False
        try:
            for index, part in enumerate(parts):
                if index == 1:
                    await self.between.wait()
                yield part
            finished = True
        finally:
            self.body_closed_early = not finished

    async def aclose(self) -> None:
        self.closed = True


async def until(predicate: Any, limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - watching the test agent's counters
            await asyncio.sleep(0.001)


A2A_SEND_METHODS = ["SendMessage", "SendStreamingMessage", "message/send", "message/stream"]


@pytest.mark.parametrize("method", A2A_SEND_METHODS)
async def test_concurrent_duplicate_waits_and_gets_the_same_response(method: str) -> None:
    agent = Agent()
    agent.gate.clear()
    dedup = DedupTarget(agent)
    first = asyncio.create_task(dedup.handle(request(rpc(method))))
    await until(lambda: agent.calls == 1)
    second = asyncio.create_task(dedup.handle(request(rpc(method))))
    await asyncio.sleep(0.05)
    assert not second.done()  # held while the first runs
    agent.gate.set()
    one = await first
    body_one = await read(one)
    two = await asyncio.wait_for(second, 5)
    assert (two.status, two.headers, await read(two)) == (one.status, one.headers, body_one)
    assert agent.calls == 1 and body_one.endswith(b'"result":1}')


async def test_duplicate_after_completion_is_answered_from_the_cache() -> None:
    agent = Agent()
    dedup = DedupTarget(agent)
    first = await read(await dedup.handle(request(rpc())))
    again = await dedup.handle(request(rpc()))
    assert await read(again) == first and agent.calls == 1
    assert dedup.cached_entries == 1 and dedup.cached_bytes == len(first)


async def test_duplicate_waits_for_a_slow_streamed_body() -> None:
    agent = Agent(parts=[b"data: 1\n\n", b"data: 2\n\n"])
    agent.between.clear()
    dedup = DedupTarget(agent)
    first = await dedup.handle(request(rpc("SendStreamingMessage")))
    first_chunk = await anext(first.body)  # teed as it comes: before the stream ended
    assert first_chunk == b"data: 1\n\n"
    second = asyncio.create_task(dedup.handle(request(rpc("SendStreamingMessage"))))
    await asyncio.sleep(0.05)
    assert not second.done()
    agent.between.set()
    assert first_chunk + await read(first) == b"data: 1\n\ndata: 2\n\n"
    assert await read(await second) == b"data: 1\n\ndata: 2\n\n" and agent.calls == 1


async def test_keys_are_per_method_and_path() -> None:
    agent = Agent()
    dedup = DedupTarget(agent)
    await read(await dedup.handle(request(rpc("SendMessage"))))
    await read(await dedup.handle(request(rpc("message/send"))))
    await read(await dedup.handle(request(rpc("SendMessage"), target="/other")))
    assert agent.calls == 3


async def test_same_message_id_with_other_params_is_not_answered_from_the_cache() -> None:
    agent = Agent()
    dedup = DedupTarget(agent)
    await read(await dedup.handle(request(rpc(text="mine"))))
    other = await read(await dedup.handle(request(rpc(text="someone else's"))))
    assert other.endswith(b'"result":2}') and agent.calls == 2
    assert (await read(await dedup.handle(request(rpc(text="mine"))))).endswith(b'"result":1}')


async def test_key_order_and_whitespace_do_not_matter() -> None:
    agent = Agent()
    dedup = DedupTarget(agent)
    await read(await dedup.handle(request(rpc())))
    doc = json.loads(rpc())
    doc["params"]["message"] = dict(reversed(list(doc["params"]["message"].items())))
    await read(await dedup.handle(request(json.dumps(doc, indent=2).encode())))
    assert agent.calls == 1


@pytest.mark.parametrize(
    "parts",
    [
        [b"not json", b" at all"],
        [rpc(mid=None)],
        [b"[", rpc(), b"]"],
        [rpc()[:10], rpc()[10:]],  # a qualifying body in two chunks: re-fed as two chunks
        [b"\xff\xfe\x00garbage"],
    ],
)
async def test_bodies_reach_the_target_exactly(parts: list[bytes]) -> None:
    agent = Agent()
    dedup = DedupTarget(agent)
    await read(await dedup.handle(request(parts)))
    assert agent.bodies == [parts]


async def test_non_post_and_empty_bodies_pass_through() -> None:
    agent = Agent()
    dedup = DedupTarget(agent)
    await read(await dedup.handle(request(rpc(), method="GET")))
    await read(await dedup.handle(request(rpc(), method="GET")))
    empty = LocalRequest(1, "POST", "/", [], EmptyBody())
    await read(await dedup.handle(empty))
    assert agent.calls == 3 and agent.bodies[0] == [rpc()]


@pytest.mark.parametrize("content_type", ["text/plain", ""])
async def test_only_json_content_types_qualify(content_type: str) -> None:
    agent = Agent()
    dedup = DedupTarget(agent)
    for _ in range(2):
        await read(await dedup.handle(request(rpc(), content_type=content_type)))
    assert agent.calls == 2
    for _ in range(2):
        await read(
            await dedup.handle(request(rpc(), content_type="application/json; charset=utf-8"))
        )
    assert agent.calls == 3


async def test_oversized_request_passes_through_with_its_body_intact() -> None:
    agent = Agent()
    dedup = DedupTarget(agent, DedupLimits(max_request_bytes=20))
    parts = [rpc()[:15], rpc()[15:30], rpc()[30:]]
    for _ in range(2):
        await read(await dedup.handle(request(parts)))
    assert agent.bodies == [parts, parts] and agent.calls == 2


async def test_first_caller_gone_before_the_head_still_fills_the_cache() -> None:
    agent = Agent()
    agent.gate.clear()
    dedup = DedupTarget(agent)
    first = asyncio.create_task(dedup.handle(request(rpc())))
    await until(lambda: agent.calls == 1)
    first.cancel()  # the relay RESET the stream: the platform's request timed out
    with pytest.raises(asyncio.CancelledError):
        await first
    assert dedup.in_progress == 1  # still working on it, for the re-send
    agent.gate.set()
    resent = await dedup.handle(request(rpc()))  # the platform's re-send
    assert (await read(resent)).endswith(b'"result":1}') and agent.calls == 1
    assert not agent.body_closed_early


async def test_first_caller_gone_mid_body_still_fills_the_cache() -> None:
    agent = Agent(parts=[b"part1,", b"part2"])
    agent.between.clear()
    dedup = DedupTarget(agent)
    first = await dedup.handle(request(rpc()))
    assert await anext(first.body) == b"part1,"
    await first.body.aclose()  # type: ignore[attr-defined]
    assert first.close is not None
    await first.close()
    agent.between.set()
    assert await read(await dedup.handle(request(rpc()))) == b"part1,part2"
    assert agent.calls == 1


async def test_too_large_response_is_not_cached() -> None:
    agent = Agent(parts=[b"x" * 60, b"y" * 60])
    dedup = DedupTarget(agent, DedupLimits(max_response_bytes=100))
    assert await read(await dedup.handle(request(rpc()))) == b"x" * 60 + b"y" * 60
    await read(await dedup.handle(request(rpc())))
    assert agent.calls == 2 and dedup.cached_entries == 0


async def test_too_large_response_with_its_caller_gone_is_aborted() -> None:
    agent = Agent(parts=[b"x" * 60, b"y" * 60, b"z"])
    agent.between.clear()
    dedup = DedupTarget(agent, DedupLimits(max_response_bytes=100))
    first = await dedup.handle(request(rpc()))
    await anext(first.body)
    await first.body.aclose()  # type: ignore[attr-defined]
    agent.between.set()
    await until(lambda: agent.body_closed_early)


async def test_error_responses_are_not_cached() -> None:
    agent = Agent(status=500)
    dedup = DedupTarget(agent)
    await read(await dedup.handle(request(rpc())))
    await read(await dedup.handle(request(rpc())))
    assert agent.calls == 2


async def test_failed_first_lets_the_waiting_duplicate_through() -> None:
    agent = Agent()
    agent.gate.clear()
    agent.fail_next = True
    dedup = DedupTarget(agent)
    first = asyncio.create_task(dedup.handle(request(rpc())))
    await until(lambda: agent.calls == 1)
    second = asyncio.create_task(dedup.handle(request(rpc())))
    await asyncio.sleep(0.02)
    agent.gate.set()
    with pytest.raises(TargetFailed):
        await first
    assert (await read(await second)).endswith(b'"result":2}')
    assert agent.calls == 2 and agent.bodies[1] == [rpc()]


async def test_entry_and_byte_bounds_evict_least_recently_used() -> None:
    agent = Agent(parts=[b"0123456789"])
    dedup = DedupTarget(agent, DedupLimits(max_entries=2, max_bytes=25))
    for mid in ("a", "b"):
        await read(await dedup.handle(request(rpc(mid=mid))))
    await read(await dedup.handle(request(rpc(mid="a"))))  # a is now the most recent
    await read(await dedup.handle(request(rpc(mid="c"))))  # evicts b
    assert dedup.cached_entries == 2 and dedup.cached_bytes == 20
    calls = agent.calls
    await read(await dedup.handle(request(rpc(mid="a"))))
    assert agent.calls == calls
    await read(await dedup.handle(request(rpc(mid="b"))))
    assert agent.calls == calls + 1

    small = DedupTarget(Agent(parts=[b"0123456789"]), DedupLimits(max_bytes=25))
    for mid in "abcd":
        await read(await small.handle(request(rpc(mid=mid))))
    assert small.cached_entries == 2 and small.cached_bytes == 20


async def test_entries_expire() -> None:
    now = [0.0]
    agent = Agent()
    dedup = DedupTarget(agent, DedupLimits(ttl=10), clock=lambda: now[0])
    await read(await dedup.handle(request(rpc())))
    now[0] = 9
    await read(await dedup.handle(request(rpc())))
    now[0] = 20
    await read(await dedup.handle(request(rpc())))
    assert agent.calls == 2 and dedup.cached_entries == 1


async def test_pending_bound_passes_extra_requests_through() -> None:
    agent = Agent()
    agent.gate.clear()
    dedup = DedupTarget(agent, DedupLimits(max_pending=1))
    first = asyncio.create_task(dedup.handle(request(rpc(mid="a"))))
    await until(lambda: agent.calls == 1)
    other = asyncio.create_task(dedup.handle(request(rpc(mid="b"))))
    await until(lambda: agent.calls == 2)  # not tracked, but not held back either
    agent.gate.set()
    await read(await first)
    await read(await other)


async def test_aclose_stops_forwarding_and_closes_the_inner_target() -> None:
    agent = Agent()
    agent.gate.clear()
    dedup = DedupTarget(agent)
    first = asyncio.create_task(dedup.handle(request(rpc())))
    await until(lambda: agent.calls == 1)
    await dedup.aclose()
    with pytest.raises(TargetFailed):
        await first
    assert agent.closed
