"""PlatformSession against the in-memory fake platform, with fast intervals."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.molecule.client import PlatformClient
from edge_agent.molecule.errors import (
    BadRequest,
    MoleculeError,
    TokenRejected,
    WorkspaceDeleted,
)
from edge_agent.molecule.models import RegisterResult
from edge_agent.molecule.session import (
    Generation,
    Load,
    PlatformSession,
    SessionConfig,
    SessionEvents,
    StopKind,
    StopReason,
)
from edge_agent.molecule.tokens import TokenStore
from tests.molecule.fakeplatform import TOKEN, FakePlatform
from tunnel.logs import JsonFormatter, TextFormatter

WS = "3f1c2a9e-0000-4000-8000-000000000001"
URL = f"https://relay.example/a/{WS}/"
FAST = SessionConfig(
    heartbeat_interval=0.01, backoff_initial=0.01, backoff_max=0.05, backoff_jitter=0
)


class Recorder:
    """Records the session's callbacks (sync and async forms are both exercised)."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.secrets: list[str] = []
        self.stopped: list[StopReason] = []
        self.registered: list[RegisterResult] = []

    def events(self) -> SessionEvents:
        async def on_resumed() -> None:
            self.log.append("resumed")

        return SessionEvents(
            on_registered=self.registered.append,
            on_paused=lambda: self.log.append("paused"),
            on_resumed=on_resumed,
            on_stopped=self.stopped.append,
            on_inbound_secret=self.secrets.append,
        )


class Sleeper:
    """Records every requested delay, then yields briefly (never the full delay)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0.002)


def make_session(
    platform: FakePlatform,
    tmp_path: Path,
    recorder: Recorder,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    load: Callable[[], Load] = Load,
    config: SessionConfig = FAST,
    **client_kwargs: Any,
) -> tuple[PlatformSession, PlatformClient]:
    client = PlatformClient(
        "https://platform.example",
        WS,
        token_store=TokenStore(WS, tmp_path),
        transport=platform.transport,
        **client_kwargs,
    )
    session = PlatformSession(
        client,
        public_url=URL,
        agent_card={"name": "edge", "url": URL},
        events=recorder.events(),
        load=load,
        config=config,
        sleep=sleep,
    )
    return session, client


async def run_until(
    session: PlatformSession, predicate: Callable[[], bool], limit: float = 5.0
) -> BaseException | None:
    """Run the session until ``predicate()`` holds (then cancel) or it raises."""
    task = asyncio.create_task(session.run())
    try:
        async with asyncio.timeout(limit):
            # The predicates look at the fake platform's records; polling is the simplest
            # bounded wait for them.
            while not predicate() and not task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.002)
    finally:
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
    error = results[0]
    return None if isinstance(error, asyncio.CancelledError) else error


async def test_bootstrap_registers_caches_token_and_heartbeats(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    session, client = make_session(platform, tmp_path, rec, load=lambda: Load(active_tasks=2))
    async with client:
        assert await run_until(session, lambda: len(platform.heartbeats) >= 3) is None
    assert platform.calls[:3] == ["register", "heartbeat", "state"]
    assert platform.registrations[0]["url"] == URL
    assert platform.registrations[0]["agent_card"]["url"] == URL
    assert platform.registrations[0]["delivery_mode"] == "push"
    assert platform.bearers[0] is None and platform.bearers[1] == f"Bearer {TOKEN}"
    assert TokenStore(WS, tmp_path).load_token() == TOKEN
    for beat in platform.heartbeats:
        assert beat["active_tasks"] == 2 and type(beat["uptime_seconds"]) is int
    assert session.generation is Generation.CURRENT
    assert platform.calls.count("register") == 1  # healthy: no re-registration
    assert rec.registered[0].token_issued and rec.secrets == []


async def test_cached_token_checks_state_before_registering(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    platform.tokens.add(TOKEN)
    TokenStore(WS, tmp_path).save_token(TOKEN)
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 1)
    assert platform.calls[:3] == ["state", "register", "heartbeat"]
    assert platform.bearers[1] == f"Bearer {TOKEN}"


async def test_pause_and_resume(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 1)
        platform.pause()
        beats = len(platform.heartbeats)
        await run_until(session, lambda: len(platform.heartbeats) >= beats + 3)
        assert rec.log == ["paused"] and session.paused
        assert platform.url == ""  # no registration while paused (it would un-pause)
        platform.resume()
        await run_until(session, lambda: platform.status == "online" and platform.url == URL)
    assert rec.log == ["paused", "resumed"] and not session.paused


async def test_paused_at_start_never_registers(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    platform.tokens.add(TOKEN)
    platform.pause()
    session, client = make_session(platform, tmp_path, rec, token=TOKEN)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 3)
    assert "register" not in platform.calls and rec.log == ["paused"]


async def test_delete_stops_with_token_rejected(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 1)
        platform.delete()
        error = await run_until(session, lambda: False)
    assert isinstance(error, TokenRejected)
    [reason] = rec.stopped
    assert reason.kind is StopKind.TOKEN_REJECTED
    assert "revoked, or the workspace was deleted" in reason.message
    assert TOKEN not in reason.message


async def test_deleted_404_shape_stops_with_workspace_deleted(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    platform.deleted_shape = 404
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 1)
        platform.delete()
        error = await run_until(session, lambda: False)
    assert isinstance(error, WorkspaceDeleted)
    assert rec.stopped[0].kind is StopKind.DELETED


async def test_revoked_token_stops(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 1)
        platform.tokens = {"another-token"}
        error = await run_until(session, lambda: False)
    assert isinstance(error, TokenRejected) and rec.stopped[0].kind is StopKind.TOKEN_REJECTED


async def test_a_stop_line_names_each_field_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 1)
        platform.tokens = {"another-token"}
        with caplog.at_level(logging.INFO):
            await run_until(session, lambda: False)
    (record,) = [r for r in caplog.records if r.getMessage() == "platform_session_stopped"]
    text = TextFormatter().format(record)
    assert text.count("kind=token_rejected") == 1 and "event=" not in text
    assert "refused the workspace token" in text
    entry = json.loads(JsonFormatter().format(record))
    assert entry["event"] == "platform_session_stopped" and entry["kind"] == "token_rejected"
    for other in caplog.records:  # no molecule line repeats a field of its message
        line = TextFormatter().format(other)
        for key in vars(other).keys() - vars(logging.makeLogRecord({})).keys():
            assert line.count(f"{key}=") <= 1, line


async def test_outage_backs_off_then_reregisters(tmp_path: Path) -> None:
    platform, rec, sleeper = FakePlatform(WS), Recorder(), Sleeper()
    config = SessionConfig(
        heartbeat_interval=0.5, backoff_initial=1, backoff_max=8, backoff_jitter=0
    )
    session, client = make_session(platform, tmp_path, rec, sleep=sleeper, config=config)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 1)
        platform.outage = 6
        sleeper.delays.clear()
        await run_until(session, lambda: platform.outage == 0 and len(platform.heartbeats) >= 3)
    # six failures: 1, 2, 4, 8, 8, 8 (capped); the 0.5 s pauses are between cycles
    retries = [d for d in sleeper.delays if d != 0.5]
    assert retries == [1, 2, 4, 8, 8, 8]
    assert platform.calls.count("register") == 2  # re-registered after the outage
    assert all(d > 0 for d in sleeper.delays)  # never a busy loop


async def test_server_errors_are_retried_and_reregister(tmp_path: Path) -> None:
    platform, rec, sleeper = FakePlatform(WS), Recorder(), Sleeper()
    session, client = make_session(platform, tmp_path, rec, sleep=sleeper)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 1)
        platform.fail_with = [httpx.Response(502), httpx.Response(503, json={"error": "x"})]
        await run_until(session, lambda: not platform.fail_with and len(platform.heartbeats) >= 3)
    assert platform.calls.count("register") == 2


async def test_rate_limit_waits_at_least_retry_after(tmp_path: Path) -> None:
    platform, rec, sleeper = FakePlatform(WS), Recorder(), Sleeper()
    session, client = make_session(platform, tmp_path, rec, sleep=sleeper)
    limited = httpx.Response(
        429, json={"error": "rate limit exceeded"}, headers={"Retry-After": "17"}
    )
    platform.fail_with = [limited]
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 1)
    assert sleeper.delays[0] == 17.0


async def test_platform_forgot_us_reregisters(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 1)
        platform.forget()
        await run_until(session, lambda: platform.status == "online")
    assert platform.calls.count("register") == 2


async def test_next_generation_secret_is_announced_once_and_on_rotation(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS, generation="next"), Recorder()
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 3)
        assert rec.secrets == [platform.inbound_secret]
        assert session.generation is Generation.NEXT
        assert platform.registrations[0]["delivery_mode"] == "push"
        platform.inbound_secret = "R" * 43
        await run_until(session, lambda: len(rec.secrets) >= 2)
    assert rec.secrets == ["S" * 43, "R" * 43]
    assert TokenStore(WS, tmp_path).load_inbound_secret() == "R" * 43


async def test_cached_inbound_secret_is_announced_before_the_first_call(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS, generation="next"), Recorder()
    TokenStore(WS, tmp_path).save_inbound_secret("C" * 43)
    platform.outage = 1000  # the platform is down: the cached secret still guards the tunnel
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        await run_until(session, lambda: len(platform.calls) >= 2)
    assert rec.secrets == ["C" * 43]


async def test_strict_current_platform_gets_registration_without_delivery_mode(
    tmp_path: Path,
) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    platform.refuse_delivery_mode = True
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 1)
        platform.forget()
        await run_until(session, lambda: platform.status == "online")
    assert ["delivery_mode" in r for r in platform.registrations] == [True, False, False]


async def test_refused_url_stops_the_run(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    platform.refuse_url = True
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        error = await run_until(session, lambda: False)
    assert isinstance(error, BadRequest) and rec.stopped[0].kind is StopKind.REGISTRATION_REFUSED


async def test_pull_secrets_retries_through_an_outage(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 1)
        platform.outage = 2
        secrets = await session.pull_secrets()
    assert dict(secrets) == {"API_KEY": "k-value"}


async def test_wait_registered_and_update_card(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        task = asyncio.create_task(session.run())
        await asyncio.wait_for(session.wait_registered(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        platform.fail_with = [httpx.Response(200, json={"status": "updated"})]
        await session.update_card({"name": "v2", "url": URL})
        platform.forget()
        await run_until(session, lambda: platform.status == "online")
    assert platform.registrations[-1]["agent_card"]["name"] == "v2"


async def test_callback_failure_ends_the_run(tmp_path: Path) -> None:
    platform = FakePlatform(WS)
    client = PlatformClient("https://p.example", WS, transport=platform.transport)

    def broken(result: RegisterResult) -> None:
        raise RuntimeError("pause gate broken")

    session = PlatformSession(
        client,
        public_url=URL,
        agent_card={},
        events=SessionEvents(on_registered=broken),
        config=FAST,
    )
    async with client:
        error = await run_until(session, lambda: False)
    assert isinstance(error, RuntimeError) and not isinstance(error, MoleculeError)


@pytest.mark.parametrize(
    "kwargs",
    [{"heartbeat_interval": 0}, {"heartbeat_interval": 180}, {"backoff_initial": 0},
     {"backoff_initial": 5, "backoff_max": 1}, {"backoff_jitter": -1}],
)  # fmt: skip
def test_config_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SessionConfig(**kwargs)


async def test_a_new_public_url_is_registered_on_the_next_cycle(tmp_path: Path) -> None:
    platform, rec = FakePlatform(WS), Recorder()
    session, client = make_session(platform, tmp_path, rec)
    async with client:
        await run_until(session, lambda: len(platform.heartbeats) >= 2)
        moved = "https://relay2.example/a/x/"
        session.set_public_url(moved, {"name": "edge", "url": moved})
        session.set_public_url(moved, {"name": "edge", "url": moved})  # no-op the second time
        await run_until(session, lambda: platform.url == moved)
    assert [r["url"] for r in platform.registrations] == [URL, moved]
    assert platform.registrations[-1]["agent_card"]["url"] == moved
