"""An agent cut off for breaking the protocol waits before it may connect again."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from relay.penalty import (
    BLOCK_SECONDS,
    FIRST_WAIT,
    MAX_KEYS,
    MAX_WAIT,
    MEMORY,
    OFFENCE_LIMIT,
    OFFENCE_WINDOW,
    Offenders,
    Penalties,
    key_of,
)
from tests.relay.attacks import frame
from tests.relay.conftest import RunningRelay
from tests.relay.fake_agent import FakeAgent
from tunnel.client import HandshakeRefused
from wire import FrameType


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_strike_doubles_the_wait_up_to_the_cap_and_old_strikes_are_forgotten() -> None:
    clock = Clock()
    book = Penalties(clock)
    assert book.wait("k") == 0
    assert [book.strike("k") for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert book.wait("k") == MAX_WAIT and book.wait("other") == 0
    clock.now += MAX_WAIT
    assert book.wait("k") == 0
    clock.now += MEMORY + 1  # quiet for long enough: a new strike starts over
    assert book.strike("k") == FIRST_WAIT


def test_the_book_is_bounded_oldest_first() -> None:
    book = Penalties(Clock())
    for i in range(MAX_KEYS + 5):
        book.strike(f"k{i}")
    assert len(book) == MAX_KEYS
    assert book.wait("k0") == 0 and book.wait(f"k{MAX_KEYS + 4}") == FIRST_WAIT


def test_keys_are_the_token_else_the_address() -> None:
    assert key_of("abc", "10.0.0.1") == key_of("abc", "10.0.0.2")
    assert key_of(None, "10.0.0.1") != key_of(None, "10.0.0.2")
    assert key_of(None, "abc") != key_of("abc", "abc")


def test_an_address_is_blocked_past_the_offence_limit_and_let_in_after() -> None:
    clock = Clock()
    book = Offenders(clock)
    assert not any(book.offence("a") for _ in range(OFFENCE_LIMIT))
    assert not book.blocked("a")
    clock.now += OFFENCE_WINDOW + 1  # a new window: the count starts over
    assert not any(book.offence("a") for _ in range(OFFENCE_LIMIT))
    assert book.offence("a") and book.blocked("a") and not book.blocked("b")
    clock.now += BLOCK_SECONDS - 1
    assert book.blocked("a")  # trying again meanwhile extends the block
    clock.now += BLOCK_SECONDS - 1
    assert book.blocked("a")
    clock.now += BLOCK_SECONDS + 0.1
    assert not book.blocked("a")


async def _second_goaway(relay: RunningRelay, token: str) -> None:
    async with FakeAgent(relay.url, token=token, name="evil") as evil:
        await evil.wait_welcome()
        for _ in range(2):
            evil.send_raw(frame(FrameType.GOAWAY, 0, bytes(8)))
        deadline = time.monotonic() + 5
        while evil.close_code is None:
            assert time.monotonic() < deadline, "the relay did not cut the agent off"
            await asyncio.sleep(0.02)


async def test_a_cut_off_token_is_refused_for_a_while_then_accepted(relay: RunningRelay) -> None:
    token = relay.issue("evil")
    await _second_goaway(relay, token)
    with pytest.raises(HandshakeRefused) as refused:
        await FakeAgent(relay.url, token=token, name="evil").start()
    response = refused.value.response
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert json.loads(response.body or b"")["error"]["code"] == "agent_backoff"
    async with FakeAgent(relay.url, token=relay.issue("good"), name="good") as good:
        await good.wait_welcome()  # another token is not held back
    await asyncio.sleep(FIRST_WAIT + 0.2)
    await _second_goaway(relay, token)  # let in again; a second cut waits twice as long
    with pytest.raises(HandshakeRefused) as again:
        await FakeAgent(relay.url, token=token, name="evil").start()
    assert again.value.response.headers["Retry-After"] == "2"
