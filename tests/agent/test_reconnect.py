"""Reconnect policy: transient failures back off and retry, auth and config errors end the run."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from edge_agent.errors import AuthError, ConfigError
from edge_agent.forward import HttpForwarder
from edge_agent.tunnel import ReconnectPolicy
from tests.agent.conftest import TOKEN, make_agent, stop_agent
from tests.agent.fake_relay import FakeRelay


async def test_reconnects_after_the_relay_comes_back(origin: str) -> None:
    relay = await FakeRelay(tokens={TOKEN: "demo"}).start()
    port = relay.port
    target = HttpForwarder(origin)
    run = make_agent(relay.url, target).start()
    try:
        first = await relay.session()
        head, _ = await first.request("GET", "/echo")
        assert head.status == 201
        assert run.client.state == "online"
        await relay.stop()  # relay gone: connects are refused for a while
        await asyncio.sleep(0.5)
        assert not run.client.connected
        assert run.client.state in ("connecting", "reconnecting")
        assert run.client.latency is None
        relay = await FakeRelay(tokens={TOKEN: "demo"}).start(port)
        second = await relay.session(within=5)
        head, _ = await second.request("GET", "/echo")
        assert head.status == 201
        assert run.client.public_urls == ("https://relay.test/a/demo/",)
    finally:
        await stop_agent(run)
        await target.aclose()
        await relay.stop()


async def test_backoff_grows_against_a_flapping_relay(
    origin: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A relay that accepts and closes at once must not be hammered: sessions that end
    early do not reset the backoff."""
    relay = await FakeRelay(tokens={TOKEN: "demo"}, flap=True).start()
    target = HttpForwarder(origin)
    policy = ReconnectPolicy(initial=0.05, max_delay=0.4, jitter=0.0, healthy_after=5.0)
    caplog.set_level(logging.INFO, logger="edge_agent.tunnel")
    run = make_agent(relay.url, target, policy=policy).start()
    try:
        await asyncio.sleep(1.6)
    finally:
        await stop_agent(run)
        await target.aclose()
        await relay.stop()
    gaps = [b - a for a, b in zip(relay.attempts, relay.attempts[1:], strict=False)]
    # 0.05, 0.1, 0.2, 0.4, 0.4 ... : about 6 connects, not hundreds.
    assert 3 <= len(relay.attempts) <= 9, relay.attempts
    assert gaps[2] > 2.5 * gaps[0], gaps
    scheduled = [r for r in caplog.records if r.getMessage() == "reconnect_scheduled"]
    attempts = [getattr(r, "attempt", None) for r in scheduled]
    assert attempts[:3] == [1, 2, 3]
    assert all(getattr(r, "delay", -1) >= 0 for r in scheduled)


@pytest.mark.parametrize(
    ("token", "name", "status", "code"),
    [("wrong-token", "demo", 401, "invalid_token"), (TOKEN, "other", 403, "name_forbidden")],
)
async def test_auth_refusal_is_fatal(
    relay: FakeRelay, origin: str, token: str, name: str, status: int, code: str
) -> None:
    target = HttpForwarder(origin)
    run = make_agent(relay.url, target, token=token, name=name).start()
    try:
        with pytest.raises(AuthError) as info:
            await run.finish(5)
    finally:
        await target.aclose()
    message = str(info.value)
    assert str(status) in message and code in message
    # A bad token points at the token; a refused name at the name (the relay says why).
    assert ("--token" in message) == (code == "invalid_token")
    assert token not in message
    await asyncio.sleep(0.3)
    assert len(relay.attempts) == 1  # no retry


async def test_other_4xx_is_a_config_error(origin: str) -> None:
    relay = await FakeRelay(refuse_status=400).start()
    target = HttpForwarder(origin)
    run = make_agent(relay.url, target).start()
    try:
        with pytest.raises(ConfigError):
            await run.finish(5)
    finally:
        await target.aclose()
        await relay.stop()
    assert len(relay.attempts) == 1


async def test_5xx_and_429_are_retried(origin: str) -> None:
    relay = await FakeRelay(tokens={TOKEN: "demo"}, refuse_status=503).start()
    target = HttpForwarder(origin)
    run = make_agent(relay.url, target).start()
    try:
        await asyncio.sleep(0.4)
        assert len(relay.attempts) >= 2
        relay.refuse_status = 429
        await asyncio.sleep(0.4)
        relay.refuse_status = None
        session = await relay.session(within=5)
        head, _ = await session.request("GET", "/echo")
        assert head.status == 201
    finally:
        await stop_agent(run)
        await target.aclose()
        await relay.stop()


async def test_backoff_resets_after_a_healthy_session(origin: str) -> None:
    relay = await FakeRelay(tokens={TOKEN: "demo"}).start()
    target = HttpForwarder(origin)
    policy = ReconnectPolicy(
        initial=2.0, max_delay=5.0, jitter=0.0, healthy_after=0.3, restart_delay=0.1
    )
    run = make_agent(relay.url, target, policy=policy).start()
    try:
        first = await relay.session()
        await asyncio.sleep(0.5)  # healthy
        assert first.link is not None
        first.link.close(1000, "")
        # A backoff that kept growing would wait >= 2 s; a healthy session waits 0..0.1 s.
        second = await relay.session(index=1, within=1.5)
        assert second.hellos[0].name == "demo"
        assert run.client.attempts == 0
    finally:
        await stop_agent(run)
        await target.aclose()
        await relay.stop()


async def test_stop_interrupts_the_backoff_sleep(origin: str) -> None:
    relay = await FakeRelay(refuse_status=503).start()
    target = HttpForwarder(origin)
    policy = ReconnectPolicy(initial=30.0, max_delay=60.0, jitter=0.0)
    run = make_agent(relay.url, target, policy=policy).start()
    try:
        await asyncio.sleep(0.3)  # first attempt failed, now sleeping 30 s
        assert run.client.state == "reconnecting"
        assert run.client.retry_at is not None
        assert 29 < run.client.retry_at - time.monotonic() <= 30
        run.client.stop()
        await run.finish(2)
    finally:
        await target.aclose()
        await relay.stop()
