"""Hostile-agent attacks shared by the relay's in-process tests and the security suite's
process-level tests: raw frames a :class:`FakeAgent` sends, and the run of one attack
while the evil tunnel's caller reads nothing."""

from __future__ import annotations

import asyncio
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


def data(sid: int, payload: bytes, fin: bool = False) -> bytes:
    """A DATA frame: raw response bytes (protocol v2), FIN if ``fin``."""
    return frame(FrameType.DATA, sid, payload, Flag.FIN if fin else Flag.NONE)


def beyond_the_window(agent: FakeAgent, request: FakeRequest | None) -> None:
    assert request is not None
    agent.send_raw(data(request.sid, b"HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n"))
    for _ in range(100):  # 25 MiB with no credit: past every window the relay granted
        agent.send_raw(data(request.sid, b"\0" * wire.MAX_PAYLOAD))


#: Response bytes an agent may send that are not one well-formed HTTP/1.1 response:
#: the relay refuses them before the caller reads a byte of them (502), and the
#: session, which broke no rule of the tunnel protocol, stays up.
BAD_RESPONSES: dict[str, bytes] = {
    "NUL in a header name": b"HTTP/1.1 200 OK\r\nx\x00a: 1\r\ncontent-length: 0\r\n\r\n",
    "bare LF in a header": b"HTTP/1.1 200 OK\r\nx-a: 1\nx-b: 2\r\ncontent-length: 0\r\n\r\n",
    "two responses on one stream": (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"
        b"content-length: 4\r\n\r\nevil"
    ),
    "not HTTP at all": b"SSH-2.0-OpenSSH_9.2\r\n",
    "an unasked upgrade": b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
    "ends before its body": b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
}


def window_flood(count: int) -> Attack:
    """``count`` WINDOW frames of one byte each on the connection (frames that make no
    progress: the relay closes the session with ENHANCE_YOUR_CALM)."""

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
