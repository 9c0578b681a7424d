"""edge_agent.shared against a relay too old for shared connections (the fake relay
answers HELLO as if it listed no extra tunnels): one connection per tunnel instead."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from edge_agent.connect import ConnectOptions
from edge_agent.console import RequestLines
from edge_agent.forward import HttpForwarder
from edge_agent.shared import Member, SharedClient
from tests.agent.conftest import FAST
from tests.agent.fake_relay import FakeRelay


async def test_an_old_relay_gets_one_connection_per_tunnel(
    origin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    relay = await FakeRelay(tokens={"tok-one": "one", "tok-two": "two"}).start()
    targets = [HttpForwarder(origin), HttpForwarder(origin)]
    members = [
        Member(label, name, token, (), target, RequestLines(origin))
        for (label, name, token), target in zip(
            [("a", "one", "tok-one"), ("b", "two", "tok-two")], targets, strict=True
        )
    ]
    client = SharedClient(relay.url, members, options=ConnectOptions(), agent="t", policy=FAST)
    task = asyncio.ensure_future(client.run())
    try:
        first, *apart = [await relay.session(index) for index in range(3)]
        assert len(first.hellos[0].tunnels) == 1  # it asked to share; the relay ignored it
        assert sorted(s.hellos[0].name or "" for s in apart) == ["one", "two"]
        assert all(s.hellos[0].tunnels == () for s in apart)
        for session in apart:
            head, _ = await session.request("GET", "/echo")
            assert head.status == 201
        err = capsys.readouterr().err
        assert "[a] the relay cannot carry several tunnels on one connection (upgrade it): " in err
        await client.drain(2)
        await asyncio.wait_for(task, 5)
    finally:
        client.stop()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 5)
        for target in targets:
            await target.aclose()
        await relay.stop()
