"""Session controls: pause, drain, caller auth updates, the relay's GOAWAY, hooks."""

from __future__ import annotations

import asyncio

import pytest

from edge_agent import caller_auth
from edge_agent.errors import AuthError, ConfigError, NameTakenError
from edge_agent.forward import HttpForwarder
from tests.agent.conftest import AgentRun, make_agent, stop_agent
from tests.agent.fake_relay import FakeRelay, StreamWasReset, request_bytes
from tests.agent.origin import OriginApp
from wire import CallerCredential, ErrorCode, Welcome


async def test_public_urls_and_ready_hook(relay: FakeRelay, origin: str) -> None:
    welcomes: list[Welcome] = []
    target = HttpForwarder(origin)
    run = make_agent(relay.url, target, on_ready=welcomes.append).start()
    try:
        session = await relay.session()
        await asyncio.sleep(0.05)
        assert run.client.connected
        assert run.client.public_urls == ("https://relay.test/a/demo/",)
        assert [w.name for w in welcomes] == ["demo"]
        assert session.hellos[0].name == "demo"
        stream = await session.open("POST", "/echo", body=b"12345")
        await stream.response()
        await stream.body()
        await asyncio.sleep(0.05)
        [record] = run.records
        assert (record.method, record.target, record.status) == ("POST", "/echo", 201)
        # Raw bytes each way, heads included: what crossed the tunnel.
        assert record.bytes_out == len(stream.raw) and record.reset is None
        head = request_bytes("POST", "/echo", [("content-length", "5")], chunked=False)
        assert record.bytes_in == len(head) + 5
    finally:
        await stop_agent(run)
        await target.aclose()


async def test_paused_agent_answers_unavailable(relay: FakeRelay, agent: AgentRun) -> None:
    session = await relay.session()
    agent.client.set_paused(True)
    stream = await session.open("GET", "/echo")
    with pytest.raises(StreamWasReset) as info:
        await stream.response()
    assert info.value.code is ErrorCode.UNAVAILABLE
    agent.client.set_paused(False)
    head, _ = await session.request("GET", "/echo")
    assert head.status == 201


async def test_drain_finishes_in_flight_and_refuses_new(
    relay: FakeRelay, agent: AgentRun, origin_app: OriginApp
) -> None:
    session = await relay.session()
    slow = await session.open("POST", "/slow-upload", body=b"first part")
    await asyncio.wait_for(origin_app.state.started.wait(), 5)
    assert agent.client.active_streams == 1
    drain = asyncio.create_task(agent.client.drain(deadline=10))
    for _ in range(100):
        if session.goaways:
            break
        await asyncio.sleep(0.01)
    assert [g.code for g in session.goaways] == [ErrorCode.NO_ERROR]
    # wire refuses to open streams after GOAWAY; a relay that raced it past us gets
    # REFUSED_STREAM. Simulate the race by forgetting that GOAWAY arrived.
    session.conn.goaway_received = False
    late = await session.open("GET", "/echo")
    with pytest.raises(StreamWasReset) as info:
        await late.response()
    assert info.value.code is ErrorCode.REFUSED_STREAM
    assert not drain.done()
    origin_app.state.release.set()
    head = await slow.response()
    assert head.status == 200 and b'"size": 10' in await slow.body()
    await asyncio.wait_for(drain, 5)
    await agent.finish(5)  # run() returns after the drain
    await asyncio.wait_for(session.closed.wait(), 5)


async def test_drain_deadline_cancels_stragglers(
    relay: FakeRelay, agent: AgentRun, origin_app: OriginApp
) -> None:
    session = await relay.session()
    stream = await session.open("GET", "/hang")
    await stream.response()
    await agent.client.drain(deadline=0.3)
    await agent.finish(5)
    await asyncio.wait_for(origin_app.state.disconnected.wait(), 5)


async def test_caller_auth_is_sent_and_replaced(relay: FakeRelay, origin: str) -> None:
    first = caller_auth.parse("bearer:s3cret-token")
    target = HttpForwarder(origin)
    run = make_agent(relay.url, target, caller_auth=[first]).start()
    try:
        session = await relay.session()
        assert session.hellos[0].caller_auth == (first,)
        second = caller_auth.parse("basic:alice:pa:ss")
        run.client.set_caller_auth([second])
        await asyncio.sleep(0.1)
        assert [h.caller_auth for h in session.hellos] == [(first,), (second,)]
        assert session.hellos[1].name == "demo"
        head, _ = await session.request("GET", "/echo")  # the session is still fine
        assert head.status == 201
        with pytest.raises(ConfigError):
            run.client.set_caller_auth([second] * 9)
    finally:
        await stop_agent(run)
        await target.aclose()


def test_caller_auth_hashes() -> None:
    assert caller_auth.parse("bearer:abc") == CallerCredential(
        "bearer", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert caller_auth.parse("basic:u:p:q") == caller_auth.basic("u", "p:q")
    for bad in ("bearer:", "basic:nopass", "digest:x", "basic::p"):
        with pytest.raises(ConfigError):
            caller_auth.parse(bad)


@pytest.mark.parametrize(
    ("code", "error"),
    [(ErrorCode.REPLACED, NameTakenError), (ErrorCode.UNAUTHORIZED, AuthError)],
)
async def test_fatal_goaway_ends_the_run(
    relay: FakeRelay, agent: AgentRun, code: ErrorCode, error: type[Exception]
) -> None:
    session = await relay.session()
    await session.goaway(code)
    assert agent.task is not None
    with pytest.raises(error):
        await asyncio.wait_for(agent.task, 5)
    assert len(relay.attempts) == 1  # no reconnect


async def test_graceful_goaway_reconnects(relay: FakeRelay, agent: AgentRun) -> None:
    session = await relay.session()
    await session.goaway(ErrorCode.NO_ERROR)
    second = await relay.session(index=1)
    head, _ = await second.request("GET", "/echo")
    assert head.status == 201
    assert session.closed.is_set()
