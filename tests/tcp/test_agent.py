"""The agent's side of a TCP tunnel against a relay that does not know the kind (the
agent tests' fake relay, which welcomes every session as HTTP, as a relay from before
``tunnel`` existed would)."""

from __future__ import annotations

import asyncio

import pytest

from edge_agent.errors import ConfigError
from edge_agent.raw import RawForwarder
from edge_agent.tunnel import ReconnectPolicy, TunnelClient
from tests.agent.fake_relay import FakeRelay
from wire import CallerCredential, StreamKind
from wire.rules import credential_sha256


async def test_a_relay_that_ignores_the_tunnel_kind_stops_the_agent() -> None:
    relay = await FakeRelay(tokens={"t": "ssh"}).start()
    try:
        client = TunnelClient(
            relay.url,
            "t",
            "ssh",
            RawForwarder("127.0.0.1", 9, StreamKind.TCP),
            policy=ReconnectPolicy(initial=0.01, jitter=0.0),
            tunnel=StreamKind.TCP,
        )
        with pytest.raises(ConfigError, match="the relay does not serve TCP tunnels"):
            await asyncio.wait_for(client.run(), 10)
        assert relay.sessions[0].hellos[0].tunnel is StreamKind.TCP
    finally:
        await relay.stop()


def test_caller_auth_is_refused_on_a_tcp_tunnel_before_any_connection() -> None:
    bearer = CallerCredential("bearer", credential_sha256("s3cret"))
    forwarder = RawForwarder("127.0.0.1", 9, StreamKind.TCP)
    with pytest.raises(ConfigError, match="caller auth works on HTTP tunnels only"):
        TunnelClient(
            "http://127.0.0.1:9",
            None,
            "ssh",
            forwarder,
            caller_auth=[bearer],
            tunnel=StreamKind.TCP,
        )
