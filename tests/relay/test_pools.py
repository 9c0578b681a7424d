"""Pools on the relay, with fake agents: who may join, the WELCOME's count, and which
failed exchanges are opened again on another member (only those the agent never
started: RESET REFUSED_STREAM), never those whose bytes it took."""

from __future__ import annotations

import asyncio

from relay.tokens import TokenStore
from tests.relay.conftest import RelayFactory, RunningRelay
from tests.relay.fake_agent import FakeAgent, FakeRequest
from tests.relay.test_agents import refused
from wire import ErrorCode
from wire.rules import AGENT_KEY_HEADER


async def _refuse(request: FakeRequest) -> None:
    request.reset(ErrorCode.REFUSED_STREAM, "draining")


async def _fail(request: FakeRequest) -> None:
    await request.read_body()
    request.reset(ErrorCode.TARGET_ERROR, "the target broke")


def _pool_token(relay: RunningRelay, name: str) -> str:
    return TokenStore(relay.settings.state_dir).issue(name, replace=True, pool=True)


async def test_refused_exchanges_go_to_another_member(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory()
    token = _pool_token(relay, "shared")
    refusing = FakeAgent(relay.url, _refuse, token=token, name="shared", pool=True)
    serving = FakeAgent(relay.url, token=token, name="shared", pool=True)
    async with refusing, serving, relay.client() as client:
        assert (await refusing.wait_welcome()).pool == 1
        assert (await serving.wait_welcome()).pool == 2
        answers = [await client.post("/a/shared/x", content=b"12345") for _ in range(10)]
    assert [r.text for r in answers] == ["ok POST /x 5"] * 10
    assert len(refusing.requests) >= 3  # equals take turns: it got its share first
    assert len(serving.requests) == 10  # every request, the retried ones whole
    assert relay.app.pools.retries == len(refusing.requests)
    assert relay.state.metrics.sample("edge_pool_retries_total") == len(refusing.requests)


async def test_an_exchange_the_agent_took_is_not_retried(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory()
    token = _pool_token(relay, "shared")
    failing = FakeAgent(relay.url, _fail, token=token, name="shared", pool=True)
    serving = FakeAgent(relay.url, token=token, name="shared", pool=True)
    async with failing, serving, relay.client() as client:
        await failing.wait_welcome()
        await serving.wait_welcome()
        answers = [await client.post("/a/shared/x", content=b"12345") for _ in range(10)]
    failed = [r for r in answers if r.status_code != 200]
    assert len(failed) == len(failing.requests) >= 3
    assert len(serving.requests) == 10 - len(failed)
    assert relay.app.pools.retries == 0


async def test_a_token_without_pool_may_not_join(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory()
    token = relay.issue("solo")
    async with FakeAgent(relay.url, token=token, name="solo", pool=True) as agent:
        async with asyncio.timeout(5):
            await agent.closed.wait()
    assert [g.code for g in agent.goaways] == [ErrorCode.UNAUTHORIZED]
    assert "may not pool" in agent.goaways[0].reason
    assert relay.state.registry.lookup("solo") is None


async def test_open_mode_pools_only_with_the_holders_key(relay_factory: RelayFactory) -> None:
    relay: RunningRelay = await relay_factory(open_mode=True)
    key = ((AGENT_KEY_HEADER, "k1"),)
    first = FakeAgent(relay.url, name="dev", headers=key, pool=True)
    second = FakeAgent(relay.url, name="dev", headers=key, pool=True)
    async with first, second:
        await first.wait_welcome()
        assert (await second.wait_welcome()).pool == 2
        other = FakeAgent(relay.url, name="dev", headers=((AGENT_KEY_HEADER, "k2"),), pool=True)
        assert await refused(other) == (409, "name_in_use")
        assert len(relay.state.registry.members("dev")) == 2
        assert not first.goaways and not second.goaways


async def test_a_reconnecting_member_replaces_its_own_stale_session(
    relay_factory: RelayFactory,
) -> None:
    """Same token and agent key: the same agent process came back (its old session is
    dead on its side); another key is another agent, which joins."""
    relay: RunningRelay = await relay_factory()
    token = _pool_token(relay, "shared")
    key = ((AGENT_KEY_HEADER, "process-1"),)
    old = FakeAgent(relay.url, token=token, name="shared", headers=key, pool=True)
    other = FakeAgent(
        relay.url, token=token, name="shared", headers=((AGENT_KEY_HEADER, "p2"),), pool=True
    )
    again = FakeAgent(relay.url, token=token, name="shared", headers=key, pool=True)
    async with old, other:
        await old.wait_welcome()
        assert (await other.wait_welcome()).pool == 2
        async with again:
            assert (await again.wait_welcome()).pool == 2
            async with asyncio.timeout(5):
                await old.closed.wait()
            assert [g.code for g in old.goaways] == [ErrorCode.REPLACED]
            assert not other.goaways
            members = relay.state.registry.members("shared")
            assert len(members) == 2 and all(m.accepting for m in members)
