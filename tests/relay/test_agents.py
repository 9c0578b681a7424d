"""Agent sessions: refusals before the upgrade, open mode, replacement, revocation."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import tunnel
import wire
from relay.tokens import TokenStore
from tests.relay.conftest import RelayFactory, RunningRelay, eventually
from tests.relay.fake_agent import FakeAgent, FakeRequest
from wire import ErrorCode
from wire.rules import AGENT_KEY_HEADER


async def refused(
    agent: FakeAgent, subprotocols: tuple[str, ...] = (wire.SUBPROTOCOL,)
) -> tuple[int, str]:
    """Start ``agent`` expecting a plain-HTTP refusal: (status, relay error code)."""
    with pytest.raises(tunnel.HandshakeRefused) as info:
        await agent.start(subprotocols)
    response = info.value.response
    assert response.headers["x-edge-error"]
    return response.status_code, json.loads(response.body)["error"]["code"]


async def test_missing_token_is_401(relay: RunningRelay) -> None:
    relay.issue("demo")
    assert await refused(FakeAgent(relay.url, name="demo")) == (401, "agent_unauthorized")


async def test_wrong_token_is_401(relay: RunningRelay) -> None:
    relay.issue("demo")
    agent = FakeAgent(relay.url, token="mer_not-a-real-token", name="demo")
    assert await refused(agent) == (401, "agent_unauthorized")


async def test_revoked_token_is_401(relay: RunningRelay) -> None:
    token = relay.issue("demo")
    assert TokenStore(relay.settings.state_dir).revoke("demo")
    assert await refused(FakeAgent(relay.url, token=token, name="demo")) == (
        401,
        "agent_unauthorized",
    )


async def test_token_for_another_name_is_403(relay: RunningRelay) -> None:
    token = relay.issue("alice")
    relay.issue("bob")
    agent = FakeAgent(relay.url, token=token, name="bob")
    assert await refused(agent) == (403, "name_forbidden")
    assert relay.state.metrics.sample("edge_agent_refusals_total", status="403") == 1


async def test_bad_name_and_missing_subprotocol_are_400(relay: RunningRelay) -> None:
    token = relay.issue("demo")
    assert await refused(FakeAgent(relay.url, token=token, name="Bad_Name")) == (400, "bad_name")
    agent = FakeAgent(relay.url, token=token, name="demo")
    assert await refused(agent, subprotocols=()) == (400, "subprotocol_required")
    agent = FakeAgent(relay.url, token=token, name="demo")
    v1 = (wire.SUBPROTOCOL_V1,)
    assert await refused(agent, subprotocols=v1) == (400, "protocol_version")


async def test_token_names_its_tunnel_without_a_query(relay: RunningRelay) -> None:
    token = relay.issue("demo")
    async with FakeAgent(relay.url, token=token, name="demo", query_name=False) as agent:
        welcome = await agent.wait_welcome()
    assert welcome.name == "demo"
    # A relay on loopback routes <name>.localhost too (no --domain needed in development).
    host_url = relay.url.replace("127.0.0.1", "demo.localhost") + "/"
    assert welcome.urls == (f"{relay.url}/a/demo/", host_url)
    assert welcome.max_request_body == relay.settings.max_request_body


async def test_hello_naming_another_tunnel_is_refused(relay: RunningRelay) -> None:
    token = relay.issue("demo")
    agent = FakeAgent(relay.url, token=token, name="demo", query_name=False, hello_name="other")
    async with agent:
        async with asyncio.timeout(5):
            await agent.closed.wait()
    assert [g.code for g in agent.goaways] == [ErrorCode.UNAUTHORIZED]
    assert agent.welcome is None


async def test_open_mode_claims_free_names(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(open_mode=True)
    relay.issue("owned")
    async with FakeAgent(relay.url, name="laptop") as named, FakeAgent(relay.url) as anonymous:
        assert (await named.wait_welcome()).name == "laptop"
        random_name = (await anonymous.wait_welcome()).name
        assert random_name and random_name != "laptop"
        async with relay.client() as client:
            assert (await client.get(f"/a/{random_name}/")).status_code == 200
            assert (await client.get("/a/laptop/")).status_code == 200
    # A name owned by a token is not free, and a bad token is not waved through.
    assert await refused(FakeAgent(relay.url, name="owned")) == (403, "name_forbidden")
    agent = FakeAgent(relay.url, name="laptop", token="mer_wrong")
    assert await refused(agent) == (401, "agent_unauthorized")


async def test_new_session_replaces_the_stale_one(relay: RunningRelay) -> None:
    token = relay.issue("demo")
    release = asyncio.Event()

    async def slow(request: FakeRequest) -> None:
        await release.wait()
        await request.respond(200)
        await request.send(b"from old", end=True)

    async def fresh(request: FakeRequest) -> None:
        await request.respond(200)
        await request.send(b"from new", end=True)

    old = FakeAgent(relay.url, slow, token=token, name="demo")
    new = FakeAgent(relay.url, fresh, token=token, name="demo")
    async with old, relay.client() as client:
        await old.wait_welcome()
        in_flight = asyncio.create_task(client.get("/a/demo/"))
        async with asyncio.timeout(5):
            await old.request_seen.wait()
        async with new:
            await new.wait_welcome()
            assert (await client.get("/a/demo/")).text == "from new"
            assert [g.code for g in old.goaways] == [ErrorCode.REPLACED]
            assert not old.closed.is_set()  # its in-flight stream may finish
            release.set()
            assert (await in_flight).text == "from old"
            async with asyncio.timeout(5):
                await old.closed.wait()
            assert (await client.get("/a/demo/")).text == "from new"
    assert relay.state.metrics.sample("edge_sessions_replaced_total") == 1
    # Both were told: the old one from where the new one came, the new one what it took.
    assert old.goaways[0].reason == "replaced by a new session for demo from 127.0.0.1"
    assert new.welcome is not None and new.welcome.replaced == "127.0.0.1"
    assert old.welcome is not None and old.welcome.replaced is None


def _key(value: str) -> tuple[tuple[str, str], ...]:
    return ((AGENT_KEY_HEADER, value),)


async def test_open_mode_gives_a_live_name_only_to_its_key(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(open_mode=True)
    async with FakeAgent(relay.url, name="laptop", headers=_key("k1")) as holder:
        await holder.wait_welcome()
        assert await refused(FakeAgent(relay.url, name="laptop")) == (409, "name_in_use")
        other = FakeAgent(relay.url, name="laptop", headers=_key("k2"))
        assert await refused(other) == (409, "name_in_use")
        # Named in HELLO only (no query name to refuse before the upgrade): GOAWAY.
        sneaky = FakeAgent(relay.url, name="laptop", query_name=False, headers=_key("k2"))
        async with sneaky:
            async with asyncio.timeout(5):
                await sneaky.closed.wait()
            assert [g.code for g in sneaky.goaways] == [ErrorCode.UNAUTHORIZED]
        assert relay.state.registry.lookup("laptop") is not None
        async with FakeAgent(relay.url, name="laptop", headers=_key("k1")) as again:
            assert (await again.wait_welcome()).replaced == "127.0.0.1"
            assert [g.code for g in holder.goaways] == [ErrorCode.REPLACED]
    long_key = _key("x" * 257)
    assert await refused(FakeAgent(relay.url, name="a", headers=long_key)) == (
        400,
        "bad_agent_key",
    )
    twice = FakeAgent(relay.url, name="a", headers=_key("k1") + _key("k1"))
    assert await refused(twice) == (400, "bad_agent_key")


async def test_revocation_closes_the_live_session(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(token_poll_interval=0.1)
    token = relay.issue("demo")
    async with FakeAgent(relay.url, token=token, name="demo") as agent:
        await agent.wait_welcome()
        assert TokenStore(relay.settings.state_dir).revoke("demo")
        async with asyncio.timeout(5):
            await agent.closed.wait()
    assert [g.code for g in agent.goaways] == [ErrorCode.UNAUTHORIZED]
    async with relay.client() as client:
        r = await client.get("/a/demo/")
    assert r.status_code == 410  # gone, not offline (no Retry-After)
    assert r.headers["x-edge-error"] == "tunnel_revoked" and "retry-after" not in r.headers


async def test_issuing_a_token_evicts_an_open_mode_session(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(open_mode=True, token_poll_interval=0.1)
    async with FakeAgent(relay.url, name="laptop") as agent:
        await agent.wait_welcome()
        relay.issue("laptop")
        async with asyncio.timeout(5):
            await agent.closed.wait()
    assert [g.code for g in agent.goaways] == [ErrorCode.UNAUTHORIZED]


async def test_hello_resent_replaces_caller_auth(relay: RunningRelay) -> None:
    secret = "s3cret"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    async with FakeAgent(relay.url, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            assert (await client.get("/a/demo/")).status_code == 200
            agent.conn.send_hello(
                wire.Hello("demo", (wire.CallerCredential("bearer", digest),), "fake-agent")
            )
            agent.flush()
            for _ in range(100):
                r = await client.get("/a/demo/")
                if r.status_code == 401:
                    break
                await asyncio.sleep(0.02)
            assert r.headers["x-edge-error"] == "caller_unauthorized"
            auth = {"authorization": f"Bearer {secret}"}
            assert (await client.get("/a/demo/", headers=auth)).status_code == 200


async def _raw_agent(relay: RunningRelay, token: str) -> ClientConnection:
    return await connect(
        relay.url.replace("http://", "ws://") + "/_edge/connect?name=demo",
        subprotocols=[wire.SUBPROTOCOL],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
    )


async def test_agent_gone_before_hello_leaves_nothing_behind(relay: RunningRelay) -> None:
    ws = await _raw_agent(relay, relay.issue("demo"))
    ws.transport.abort()  # no close frame
    await eventually(lambda: not relay.app.connections)
    assert relay.app.agents() == 0 and not relay.state.registry.local_sessions()


async def test_no_hello_in_time_is_a_protocol_error(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(hello_timeout=0.3)
    ws = await _raw_agent(relay, relay.issue("demo"))
    goaway = wire.decode_frame(await asyncio.wait_for(ws.recv(), 5))
    assert goaway.type == wire.FrameType.GOAWAY
    assert wire.frames.decode_goaway(goaway.payload)[1] == ErrorCode.PROTOCOL_ERROR
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1002
    await eventually(lambda: not relay.app.connections)
