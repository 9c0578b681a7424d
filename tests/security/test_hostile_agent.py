"""A malicious agent against the real relay process: the relay closes that agent's
session with a protocol error code (GOAWAY, then WebSocket close 1002) and logs it,
while a real ``edge-agent`` on the same relay keeps serving, its stream in flight
included.

The same attacks are run in-process against a fake relay setup in
``tests/relay/test_hostile.py`` (with more variants); here the relay is the shipped
``edge-relay`` command and the bystander is the shipped ``edge-agent``. The hostile
agent is the relay tests' wire-level fake (:mod:`tests.relay.fake_agent`), whose
``send_raw`` puts arbitrary frames on the WebSocket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest

import wire
from relay.agents import HELLO_FRAME_ALLOWANCE
from tests.e2e.client import session
from tests.e2e.procs import run_cli
from tests.relay.attacks import (
    Attack,
    attack_behind_silent_caller,
    beyond_the_window,
    data,
    frame,
    window_flood,
)
from tests.relay.fake_agent import FakeAgent, FakeRequest
from tests.security.conftest import Edge
from wire import ErrorCode, FrameType
from wire.frames import encode_hello

pytestmark = pytest.mark.timeout(120)


def _hello_flood(agent: FakeAgent, request: FakeRequest | None) -> None:
    # HELLO again is legal (it replaces the caller auth, and the relay logs it), so a
    # flood of them would fill the relay's log unless it is cut off.
    hello = frame(FrameType.HELLO, 0, encode_hello(wire.Hello("evil")))
    for _ in range(5000):
        agent.send_raw(hello)


def _on_request(payload: Callable[[int], bytes]) -> Attack:
    def attack(agent: FakeAgent, request: FakeRequest | None) -> None:
        assert request is not None
        agent.send_raw(payload(request.sid))

    return attack


def _at_once(message: bytes) -> Attack:
    return lambda agent, request: agent.send_raw(message)


# name: (attack, needs a request on the evil tunnel first, GOAWAY code)
ATTACKS: dict[str, tuple[Attack, bool, ErrorCode]] = {
    "flood of WINDOW frames": (window_flood(5000), False, ErrorCode.ENHANCE_YOUR_CALM),
    "flood of HELLO frames": (_hello_flood, False, ErrorCode.PROTOCOL_ERROR),
    "flood of empty DATA frames": (
        lambda agent, r: [agent.send_raw(data(r.sid, b"")) for _ in range(5000)],
        True,
        ErrorCode.ENHANCE_YOUR_CALM,
    ),
    "flood of GOAWAY frames": (
        lambda agent, r: [agent.send_raw(frame(FrameType.GOAWAY, 0, bytes(8))) for _ in range(3)],
        False,
        ErrorCode.PROTOCOL_ERROR,
    ),
    "DATA beyond the window": (beyond_the_window, True, ErrorCode.FLOW_CONTROL_ERROR),
    "CLOSE without FIN": (
        _on_request(lambda sid: frame(FrameType.DATA, sid, b"x", wire.Flag.CLOSE)),
        True,
        ErrorCode.FRAME_ERROR,
    ),
    "DATA for a stream it never got": (
        _at_once(frame(FrameType.DATA, 1001, b"HTTP/1.1 200 OK\r\n\r\n")),
        False,
        ErrorCode.PROTOCOL_ERROR,
    ),
    "reset for a stream it never got": (
        _at_once(frame(FrameType.RESET, 77, (0).to_bytes(4, "big"))),
        False,
        ErrorCode.PROTOCOL_ERROR,
    ),
    "stream id of the relay's kind": (
        _at_once(frame(FrameType.OPEN, 3, b"\x01GET / HTTP/1.1\r\n\r\n")),
        False,
        ErrorCode.PROTOCOL_ERROR,
    ),
    "DATA without a stream id": (
        _at_once(frame(FrameType.DATA, 0, b"x")),
        False,
        ErrorCode.FRAME_ERROR,
    ),
    "an unknown stream kind": (
        _at_once(frame(FrameType.OPEN, 5, b"\x09")),
        False,
        ErrorCode.PROTOCOL_ERROR,
    ),
}


@pytest.fixture
def evil_token(edge: Edge) -> str:
    """A fresh token for each attack: a token cut off for a protocol error waits before
    it may connect again (relay.penalty), and each attack here is a new agent."""
    done = run_cli(
        "edge-relay", "token", "issue", "evil", "--replace", "--state-dir", str(edge.state_dir)
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _events(key: str, n: int) -> bytes:
    return b"".join(f"id: {i}\ndata: event {i} of {key}\n\n".encode() for i in range(n))


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_hostile_agent_is_cut_off_and_others_keep_serving(
    edge: Edge, evil_token: str, name: str
) -> None:
    attack, needs_request, code = ATTACKS[name]
    errors_before = edge.relay.count(rf"protocol_error agent=evil code={code.name}")
    key = f"sse-{abs(hash(name))}"

    async def handler(request: FakeRequest) -> None:
        attack(evil, request)
        await asyncio.sleep(3600)  # never answers properly

    evil = FakeAgent(edge.relay.url, handler, token=evil_token, name="evil")
    async with session() as http:
        # A real agent's stream in flight, on the same relay, during the attack.
        sse = asyncio.create_task(_read(http, edge.url("beta", f"events?key={key}&n=8&gap=0.1")))
        async with evil:
            answer = await attack_behind_silent_caller(
                evil, edge.relay.port, "relay.test", attack, needs_request
            )
        async with http.get(edge.url("beta", "echo")) as resp:
            assert resp.status == 200
        assert await asyncio.wait_for(sse, 15) == _events(key, 8)
    assert [g.code for g in evil.goaways] == [code]
    assert evil.close_code == 1002
    edge.relay.wait_count(rf"protocol_error agent=evil code={code.name}", errors_before + 1, 5)
    status = int(answer.split(b" ", 2)[1])
    assert status in (502, 503) or (status == 200 and not answer.endswith(b"0\r\n\r\n"))
    assert edge.agents["beta"].alive() and edge.relay.count(r"agent_disconnected agent=beta") == 0
    assert edge.relay.count(r"caller_auth_updated agent=evil") <= HELLO_FRAME_ALLOWANCE


async def _read(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url) as resp:
        return await resp.read()


async def test_oversized_message_is_refused_by_the_websocket_layer(
    edge: Edge, evil_token: str
) -> None:
    async with FakeAgent(edge.relay.url, token=evil_token, name="evil") as evil:
        await evil.wait_welcome()
        evil.send_raw(frame(FrameType.WINDOW, 0, b"\0" * (wire.MAX_FRAME_SIZE + 1)))
        async with asyncio.timeout(10):
            await evil.closed.wait()
    assert evil.close_code == 1009  # message too big: the frame is never decoded
    async with session() as http, http.get(edge.url("beta", "echo")) as resp:
        assert resp.status == 200
