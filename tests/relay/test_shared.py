"""Extra tunnels on one agent connection (relay.shared): each granted or refused alone,
routed with its tunnel index, with its own caller auth; dropped alone when revoked."""

from __future__ import annotations

import hashlib

import wire
from tests.relay.conftest import RelayFactory, RunningRelay, eventually
from tests.relay.fake_agent import FakeAgent, FakeRequest
from wire import TunnelRequest


def cred(secret: str) -> wire.CallerCredential:
    return wire.CallerCredential("bearer", hashlib.sha256(secret.encode()).hexdigest())


async def test_each_extra_is_granted_or_refused_alone(relay: RunningRelay) -> None:
    seen: list[tuple[int, str]] = []

    async def handler(request: FakeRequest) -> None:
        seen.append((request.stream.tunnel, request.target))
        await request.respond(200, end=True)

    one, two, three = relay.issue("one"), relay.issue("two"), relay.issue("three")
    relay.app.state.store.revoke("three")
    extras = (
        TunnelRequest("two", two, (cred("s3cret"),)),
        TunnelRequest("Bad_Name", two),
        TunnelRequest("four", two),
        TunnelRequest("five"),
        TunnelRequest("one", one),
        TunnelRequest(None, three),
        TunnelRequest("admin"),
    )
    agent = FakeAgent(relay.url, handler, token=one, name="one", tunnels=extras)
    async with agent, relay.client() as client:
        welcome = await agent.wait_welcome()
        assert welcome.tunnels is not None
        answers = [(g.name, g.refused) for g in welcome.tunnels]
        assert answers == [
            ("two", None),
            ("Bad_Name", "the name 'Bad_Name' is not a lowercase DNS label (a-z, 0-9, -)"),
            ("four", "the relay token is for the name two, not four"),
            ("five", "a relay token is required for five"),
            ("one", "the name one is already served by this connection"),
            (None, "the relay token for this tunnel is invalid or was revoked"),
            ("admin", "a relay token is required for admin"),
        ]
        assert welcome.tunnels[0].urls[0] == f"{relay.url}/a/two/"
        assert (await client.get("/a/one/x")).status_code == 200
        assert (await client.get("/a/two/y")).status_code == 401  # two's own caller auth
        ok = await client.get("/a/two/y", headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert seen == [(0, "/x"), (1, "/y")]
        for name in ("four", "five"):
            assert (await client.get(f"/a/{name}/")).status_code == 404
        assert relay.app.agents() == 1 and relay.app.names() == 2
        # HELLO again replaces each extra's caller auth too.
        again = (TunnelRequest("two", two), *extras[1:])
        agent.session.send_hello(wire.Hello("one", (), "fake-agent", tunnels=again))
        registry = relay.app.state.registry
        await eventually(lambda: not getattr(registry.lookup("two"), "caller_auth", True))
        assert (await client.get("/a/two/z")).status_code == 200

        # two's token revoked: only two goes; the connection and one stay.
        relay.app.state.store.revoke("two")
        assert relay.app.state.store.refresh()
        relay.app.enforce_tokens()
        assert relay.app.state.registry.lookup("two") is None
        assert (await client.get("/a/one/still")).status_code == 200
        assert not agent.closed.is_set() and agent.goaways == []
    await eventually(lambda: relay.app.names() == 0)


async def test_open_mode_extras(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(open_mode=True)
    key = ("X-Edge-Agent-Key", "machine-a")
    async with FakeAgent(relay.url, name="held", headers=(("X-Edge-Agent-Key", "machine-b"),)):
        extras = (TunnelRequest("free"), TunnelRequest(None), TunnelRequest("held"))
        agent = FakeAgent(relay.url, name="main", headers=(key,), tunnels=extras)
        async with agent, relay.client() as client:
            welcome = await agent.wait_welcome()
            assert welcome.tunnels is not None
            free, chosen, held = welcome.tunnels
            assert free.granted and chosen.granted and chosen.name and chosen.name != "free"
            assert held.refused == "the name held is in use by an agent on another machine"
            assert (await client.get(f"/a/{chosen.name}/")).status_code == 200
        # The connection ended: its names with it.
        await eventually(lambda: relay.app.state.registry.lookup("free") is None)
