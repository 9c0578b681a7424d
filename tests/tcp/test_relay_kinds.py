"""The relay's checks on a TCP tunnel's HELLO, in one process, with the relay tests'
fake agent: caller credentials it could not enforce are refused, first or re-sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import tunnel
import wire
from relay.config import Settings
from relay.kinds import NO_CALLER_AUTH
from tests.relay.conftest import RunningRelay, start_relay
from tests.relay.fake_agent import FakeAgent
from tests.tcp.procs import free_range
from wire import ErrorCode, StreamKind

BEARER = wire.CallerCredential("bearer", wire.rules.credential_sha256("s3cret"))


class TcpAgent(FakeAgent):
    """The fake agent, asking for a TCP tunnel."""

    async def start(self, subprotocols: tuple[str, ...] = (wire.SUBPROTOCOL,)) -> None:
        self.link, _ = await tunnel.connect_link(
            self.connect_url(), open_timeout=5, subprotocols=subprotocols
        )
        self.link.attach(self.session)
        hello = wire.Hello(self.name, self.caller_auth, "fake-agent", StreamKind.TCP)
        self.session.send_hello(hello)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RunningRelay]:
    settings = Settings(
        host="127.0.0.1", port=0, state_dir=tmp_path, open_mode=True, tcp_ports=free_range(2)
    )
    running = await start_relay(settings)
    try:
        yield running
    finally:
        await running.stop()


async def goaway(agent: FakeAgent) -> wire.GoAwayReceived:
    await asyncio.wait_for(agent.closed.wait(), 5)  # GOAWAY, then the close
    return agent.goaways[0]


async def test_a_tcp_hello_with_caller_auth_is_refused(relay: RunningRelay) -> None:
    async with TcpAgent(relay.url, name="ssh", caller_auth=(BEARER,)) as agent:
        event = await goaway(agent)
        assert (event.code, event.reason) == (ErrorCode.UNAUTHORIZED, NO_CALLER_AUTH)
        assert agent.welcome is None


async def test_caller_auth_sent_later_on_a_tcp_tunnel_ends_it(relay: RunningRelay) -> None:
    async with TcpAgent(relay.url, name="ssh") as agent:
        welcome = await agent.wait_welcome()
        assert welcome.tunnel is StreamKind.TCP
        assert welcome.urls[0].startswith("tcp://127.0.0.1:")
        agent.session.send_hello(wire.Hello("ssh", (BEARER,), "fake-agent", StreamKind.TCP))
        event = await goaway(agent)
        assert (event.code, event.reason) == (ErrorCode.UNAUTHORIZED, NO_CALLER_AUTH)
