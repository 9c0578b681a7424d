"""The relay's half of session resumption (relay.grace), against a real relay in the
test loop and an agent session driven by hand on the shared runtime: what WELCOME
offers, what proves a session, what a parked session does with requests, and what a
wrong secret or a second agent gets."""

from __future__ import annotations

import asyncio

import httpx

import tunnel
import wire
from relay import grace
from relay.tokens import TokenStore
from tests.relay.conftest import RelayFactory, RunningRelay, eventually
from tests.tunnel.pair import Recorder
from tunnel import resume as runtime
from wire.resume import ResumeTicket

NAME = "demo"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Agent(tunnel.SessionHooks):
    """One agent connection: asks for resumption, or resumes ``ticket``'s session."""

    def __init__(self, parked: Agent | None = None) -> None:
        self.parked = parked  # carried on by this connection if the relay resumes it
        self.session = tunnel.Session(wire.Connection(wire.Role.AGENT), self)
        self.link: tunnel.WsLink | None = None
        self.welcome: wire.Welcome | None = None
        self.streams: list[tunnel.Stream] = []
        self.recorders: list[Recorder] = []

    async def connect(
        self,
        relay: RunningRelay,
        token: str,
        ticket: ResumeTicket,
        pool: bool = False,
        tunnels: tuple[wire.TunnelRequest, ...] = (),
    ) -> wire.Welcome:
        url = relay.url.replace("http://", "ws://") + "/_edge/connect"
        self.link, _ = await tunnel.connect_link(
            url, headers=[("Authorization", f"Bearer {token}")]
        )
        self.link.attach(self.session)
        runtime.enable(self.session)
        self.session.send_hello(wire.Hello(NAME, pool=pool, tunnels=tunnels, resume=ticket))
        await eventually(lambda: self.welcome is not None or self.session.is_closed)
        assert self.welcome is not None
        return self.welcome

    def fail(self) -> None:
        """The network fails under this connection (the relay sees a reset)."""
        assert self.link is not None
        self.link._reset()

    def on_welcome(self, session: tunnel.Session, welcome: wire.Welcome) -> None:
        self.welcome = welcome
        if welcome.resume is not None and welcome.resume.received is not None:
            # At once, as the agent does: the relay's re-sent frames follow the WELCOME.
            assert self.parked is not None
            link = session.handover()
            assert isinstance(link, tunnel.WsLink)
            runtime.carry_on(self.parked.session, link, welcome.resume.received, None)

    def on_opened(self, session: tunnel.Session, stream: tunnel.Stream) -> None:
        recorder = Recorder()
        recorder.stream = stream
        stream.handler = recorder
        self.streams.append(stream)
        self.recorders.append(recorder)

    def on_link_lost(self, session: tunnel.Session) -> bool:
        return True  # kept: the test resumes it or not


def agent_entry(relay: RunningRelay) -> object:
    entry = relay.state.registry.lookup(NAME)
    assert entry is not None
    return entry


async def parked_relay(relay_factory: RelayFactory, seconds: int = 30) -> RunningRelay:
    relay: RunningRelay = await relay_factory(resume_grace=seconds)
    return relay


async def test_a_resumed_session_answers_the_requests_of_before_and_of_the_grace(
    relay_factory: RelayFactory,
) -> None:
    relay = await parked_relay(relay_factory)
    token = relay.issue(NAME)
    first = Agent()
    welcome = await first.connect(relay, token, ResumeTicket())
    offer = welcome.resume
    assert offer is not None and offer.secret and offer.grace == 30 and offer.received is None
    async with relay.client() as http:
        before = asyncio.ensure_future(http.get(f"/a/{NAME}/before"))
        await eventually(lambda: len(first.streams) == 1)
        first.fail()
        await eventually(lambda: grace.is_parked(agent_entry(relay)))  # type: ignore[arg-type]
        during = asyncio.ensure_future(http.get(f"/a/{NAME}/during"))
        await asyncio.sleep(0.3)
        assert not during.done()  # it waits for the agent instead of 503
        second = Agent(parked=first)
        ticket = ResumeTicket(offer.session, offer.secret, first.session.received)
        resumed = await second.connect(relay, token, ticket)
        assert resumed.resume is not None and resumed.resume.received is not None
        assert resumed.urls == welcome.urls
        await eventually(lambda: len(first.streams) == 2)
        assert [r.received.split(b" ")[1] for r in first.recorders] == [
            b"/before",
            b"/during",
        ]
        for stream in first.streams:
            stream.write(OK)
            stream.end()
        answers = await asyncio.gather(before, during)
    assert [(a.status_code, a.text) for a in answers] == [(200, "ok"), (200, "ok")]


async def test_a_wrong_secret_starts_a_fresh_session_and_the_parked_one_fails(
    relay_factory: RelayFactory,
) -> None:
    relay = await parked_relay(relay_factory)
    token = relay.issue(NAME)
    first = Agent()
    offer = (await first.connect(relay, token, ResumeTicket())).resume
    assert offer is not None
    async with relay.client() as http:
        before = asyncio.ensure_future(http.get(f"/a/{NAME}/before"))
        await eventually(lambda: len(first.streams) == 1)
        first.fail()
        await eventually(lambda: grace.is_parked(agent_entry(relay)))  # type: ignore[arg-type]
        other = Agent()
        forged = ResumeTicket(offer.session, "B" * 43, first.session.received)
        fresh = (await other.connect(relay, token, forged)).resume
        assert fresh is not None and fresh.received is None and fresh.session != offer.session
        answer = await before
    assert answer.status_code == 502  # the parked session failed as on a drop
    assert len(relay.state.resumes) == 1


async def test_the_grace_running_out_refuses_what_waited_and_fails_the_rest(
    relay_factory: RelayFactory,
) -> None:
    relay = await parked_relay(relay_factory, seconds=1)
    first = Agent()
    await first.connect(relay, relay.issue(NAME), ResumeTicket())
    async with relay.client() as http:
        before = asyncio.ensure_future(http.get(f"/a/{NAME}/before"))
        await eventually(lambda: len(first.streams) == 1)
        first.fail()
        await eventually(lambda: grace.is_parked(agent_entry(relay)))  # type: ignore[arg-type]
        during: httpx.Response = await http.get(f"/a/{NAME}/during")
        answer = await before
        after = await http.get(f"/a/{NAME}/after")
    assert answer.status_code == 502
    assert (during.status_code, during.headers["x-edge-error"]) == (503, "agent_unavailable")
    assert (after.status_code, after.headers["x-edge-error"]) == (503, "agent_offline")
    assert len(relay.state.resumes) == 0


async def test_no_grace_no_offer(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(resume_grace=0)
    welcome = await Agent().connect(relay, relay.issue(NAME), ResumeTicket())
    assert welcome.resume is None


async def test_a_shared_session_keeps_its_extra_names_and_gets_them_back(
    relay_factory: RelayFactory,
) -> None:
    """While parked, the second name's requests wait; the resuming WELCOME re-grants it
    at the same index, and the streams of before and of the grace carry that index."""
    relay = await parked_relay(relay_factory)
    token = relay.issue(NAME)
    tunnels = (wire.TunnelRequest("backend", relay.issue("backend")),)
    first = Agent()
    welcome = await first.connect(relay, token, ResumeTicket(), tunnels=tunnels)
    offer = welcome.resume
    assert offer is not None and offer.secret and welcome.tunnels is not None
    assert [g.name for g in welcome.tunnels] == ["backend"]
    async with relay.client() as http:
        before = asyncio.ensure_future(http.get("/a/backend/before"))
        await eventually(lambda: len(first.streams) == 1)
        first.fail()
        await eventually(lambda: grace.is_parked(agent_entry(relay)))  # type: ignore[arg-type]
        during = asyncio.ensure_future(http.get("/a/backend/during"))
        await asyncio.sleep(0.3)
        assert not during.done()  # it waits for the agent instead of 503
        second = Agent(parked=first)
        ticket = ResumeTicket(offer.session, offer.secret, first.session.received)
        resumed = await second.connect(relay, token, ticket, tunnels=tunnels)
        assert resumed.resume is not None and resumed.resume.received is not None
        assert resumed.tunnels == welcome.tunnels  # the same name, URLs and index
        await eventually(lambda: len(first.streams) == 2)
        assert [s.tunnel for s in first.streams] == [1, 1]
        assert [r.received.split(b" ")[1] for r in first.recorders] == [
            b"/before",
            b"/during",
        ]
        for stream in first.streams:
            stream.write(OK)
            stream.end()
        answers = await asyncio.gather(before, during)
    assert [(a.status_code, a.text) for a in answers] == [(200, "ok"), (200, "ok")]
    assert len(relay.state.resumes) == 1


async def test_a_shared_session_resumed_with_other_tunnels_starts_fresh(
    relay_factory: RelayFactory,
) -> None:
    relay = await parked_relay(relay_factory)
    token = relay.issue(NAME)
    tunnels = (wire.TunnelRequest("backend", relay.issue("backend")),)
    first = Agent()
    offer = (await first.connect(relay, token, ResumeTicket(), tunnels=tunnels)).resume
    assert offer is not None
    first.fail()
    await eventually(lambda: grace.is_parked(agent_entry(relay)))  # type: ignore[arg-type]
    ticket = ResumeTicket(offer.session, offer.secret, first.session.received)
    fresh = (await Agent().connect(relay, token, ticket)).resume  # no tunnels this time
    assert fresh is not None and fresh.received is None and fresh.session != offer.session
    assert relay.state.registry.lookup("backend") is None  # the old session went, with its name


async def test_an_extra_token_revoked_during_the_grace_loses_its_name_only(
    relay_factory: RelayFactory,
) -> None:
    relay = await parked_relay(relay_factory)
    token = relay.issue(NAME)
    tunnels = (wire.TunnelRequest("backend", relay.issue("backend")),)
    first = Agent()
    offer = (await first.connect(relay, token, ResumeTicket(), tunnels=tunnels)).resume
    assert offer is not None
    first.fail()
    await eventually(lambda: grace.is_parked(agent_entry(relay)))  # type: ignore[arg-type]
    relay.issue("backend")  # a new token: the one the agent holds no longer works
    second = Agent(parked=first)
    ticket = ResumeTicket(offer.session, offer.secret, first.session.received)
    resumed = await second.connect(relay, token, ticket, tunnels=tunnels)
    assert resumed.resume is not None and resumed.resume.received is not None
    assert resumed.tunnels is not None and resumed.tunnels[0].refused
    assert relay.state.registry.lookup("backend") is None
    async with relay.client() as http:
        answer = asyncio.ensure_future(http.get(f"/a/{NAME}/still"))
        await eventually(lambda: len(first.streams) == 1)
        first.streams[0].write(OK)
        first.streams[0].end()
        assert (await answer).status_code == 200


async def test_after_the_grace_every_name_of_a_shared_session_is_released(
    relay_factory: RelayFactory,
) -> None:
    relay = await parked_relay(relay_factory, seconds=1)
    tunnels = (wire.TunnelRequest("backend", relay.issue("backend")),)
    first = Agent()
    await first.connect(relay, relay.issue(NAME), ResumeTicket(), tunnels=tunnels)
    first.fail()
    await eventually(lambda: grace.is_parked(agent_entry(relay)))  # type: ignore[arg-type]
    assert relay.state.registry.lookup("backend") is not None  # still routed to it
    await eventually(lambda: relay.state.registry.lookup("backend") is None, within=5)
    assert relay.state.registry.lookup(NAME) is None


async def pool_relay(relay_factory: RelayFactory) -> tuple[RunningRelay, str]:
    relay = await parked_relay(relay_factory)
    return relay, TokenStore(relay.settings.state_dir).issue(NAME, replace=True, pool=True)


async def test_a_parked_pool_member_takes_no_new_exchange_and_resumes_its_own(
    relay_factory: RelayFactory,
) -> None:
    relay, token = await pool_relay(relay_factory)
    first, other = Agent(), Agent()
    welcome = await first.connect(relay, token, ResumeTicket(), pool=True)
    await other.connect(relay, token, ResumeTicket(), pool=True)
    offer = welcome.resume
    assert offer is not None and offer.secret
    async with relay.client() as http:
        held = [asyncio.ensure_future(http.get(f"/a/{NAME}/held{i}")) for i in range(2)]
        await eventually(lambda: len(first.streams) == 1 and len(other.streams) == 1)
        first.fail()
        members = relay.state.registry.members(NAME)
        await eventually(lambda: any(grace.is_parked(m) for m in members))
        member = next(m for m in members if grace.is_parked(m))
        assert member.live and not member.accepting  # in the pool, serving nothing new
        new = [asyncio.ensure_future(http.get(f"/a/{NAME}/new{i}")) for i in range(3)]
        await eventually(lambda: len(other.streams) == 4)
        for stream in other.streams:
            stream.write(OK)
            stream.end()
        assert [a.status_code for a in await asyncio.gather(*new)] == [200] * 3
        second = Agent(parked=first)
        ticket = ResumeTicket(offer.session, offer.secret, first.session.received)
        resumed = await second.connect(relay, token, ticket, pool=True)
        assert resumed.resume is not None and resumed.resume.received is not None
        assert resumed.pool == 2 and member.accepting
        first.streams[0].write(OK)
        first.streams[0].end()
        answers = await asyncio.gather(*held)
    assert [(a.status_code, a.text) for a in answers] == [(200, "ok"), (200, "ok")]
    assert len(first.streams) == 1  # exactly once at its target


async def test_a_parked_pool_member_alone_makes_requests_wait(
    relay_factory: RelayFactory,
) -> None:
    relay, token = await pool_relay(relay_factory)
    first = Agent()
    offer = (await first.connect(relay, token, ResumeTicket(), pool=True)).resume
    assert offer is not None
    first.fail()
    await eventually(lambda: grace.is_parked(agent_entry(relay)))  # type: ignore[arg-type]
    async with relay.client() as http:
        during = asyncio.ensure_future(http.get(f"/a/{NAME}/during"))
        await asyncio.sleep(0.3)
        assert not during.done()  # no other member: it waits for this one
        second = Agent(parked=first)
        ticket = ResumeTicket(offer.session, offer.secret, first.session.received)
        await second.connect(relay, token, ticket, pool=True)
        await eventually(lambda: len(first.streams) == 1)
        first.streams[0].write(OK)
        first.streams[0].end()
        answer = await during
    assert (answer.status_code, answer.text) == (200, "ok")
