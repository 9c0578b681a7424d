"""``Session.reached_link``: whether a stream's OPEN was handed to a live link (the
relay's pools open a stream again elsewhere only when it was not), over a real loopback
WebSocket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.tunnel.pair import Pair, Recorder, close_pair, make_pair
from wire import StreamKind


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    made = await make_pair()
    yield made
    await close_pair(made)


async def test_a_sent_open_reached_the_link(pair: Pair) -> None:
    stream, _, theirs = await pair.open(b"GET / HTTP/1.1\r\n\r\n")
    assert pair.relay.reached_link(stream.sid)
    assert theirs.received == b"GET / HTTP/1.1\r\n\r\n"


async def test_an_open_queued_when_the_link_dies_never_reached_it(pair: Pair) -> None:
    sent, _, _ = await pair.open(b"first")
    mine = Recorder("late")
    late = pair.relay.open(StreamKind.HTTP, mine, b"POST / HTTP/1.1\r\n\r\n")
    transport = pair.relay_link.transport
    assert transport is not None
    transport.abort()  # before the loop turn ends: the OPEN is still queued
    await mine.wait(lambda: bool(mine.aborts))
    assert not pair.relay.reached_link(late.sid)
    assert pair.relay.reached_link(sent.sid)
    await asyncio.sleep(0.05)
    assert len(pair.agent_hooks.opened) == 1  # the agent never saw the late stream
