"""Hostile-agent attacks shared by the relay's in-process tests and the security suite's
process-level tests: raw frames a :class:`FakeAgent` sends, and the run of one attack
while the evil tunnel's caller reads nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import wire
from tests.relay.fake_agent import FakeAgent, FakeRequest
from wire import Flag, FrameType
from wire.frames import encode_parts

Attack = Callable[[FakeAgent, Any], object]  # (agent, its request or None)

#: Seconds each step of an attack may take before the test fails (wide: a busy machine).
STEP_WITHIN = 10.0


def frame(ftype: FrameType, sid: int, payload: bytes = b"", flags: Flag = Flag.NONE) -> bytes:
    return encode_parts(ftype, sid, payload, flags)


def head(headers: list[list[str]], status: int = 200) -> bytes:
    return json.dumps({"status": status, "headers": headers}).encode()


def beyond_the_window(agent: FakeAgent, request: FakeRequest | None) -> None:
    assert request is not None
    agent.send_raw(frame(FrameType.RESPONSE, request.sid, head([])))
    for _ in range(400):  # 25 MiB with no credit: past every window the relay granted
        agent.send_raw(frame(FrameType.DATA, request.sid, b"\0" * wire.MAX_PAYLOAD))


def two_responses(agent: FakeAgent, request: FakeRequest | None) -> None:
    assert request is not None
    for _ in range(2):
        agent.send_raw(frame(FrameType.RESPONSE, request.sid, head([])))


def window_flood(count: int) -> Attack:
    """``count`` WINDOW frames of one byte each on the connection."""

    def attack(agent: FakeAgent, request: FakeRequest | None) -> None:
        for _ in range(count):
            agent.send_raw(frame(FrameType.WINDOW, 0, (1).to_bytes(4, "big")))

    return attack


async def attack_behind_silent_caller(
    evil: FakeAgent, port: int, host: str, attack: Attack, needs_request: bool
) -> bytes:
    """Send a request to the evil tunnel from a caller that reads nothing (so "beyond
    the window" is certain), attack, wait for the relay to close the evil agent, and
    return what the caller got: a definite answer, never a hang."""
    await evil.wait_welcome()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /a/evil/ HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
    await writer.drain()
    if needs_request:
        async with asyncio.timeout(STEP_WITHIN):
            await evil.request_seen.wait()
    else:
        attack(evil, None)
    async with asyncio.timeout(STEP_WITHIN):
        await evil.closed.wait()
    async with asyncio.timeout(STEP_WITHIN):
        answer = await reader.read()
    writer.close()
    return answer
