"""Row 12 (contract 3.11, 11): ``GET /workspaces/:id/activity``. "current" lists newest
first with ``type``/``source``/``limit``; "next" adds the poll-mode cursor (``since_id``,
oldest first, 410 when lost) and its filters, as a poll-mode agent (or the Molecule
SDK's ``fetch_inbound``) uses them."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest

from tests.devplatform.conftest import Dev, PlatformFactory, bearer

RFC3339 = "before_ts must be an RFC3339 timestamp (e.g. 2026-05-01T00:00:00Z)"


def message(text: str) -> dict[str, Any]:
    msg = {
        "role": "user",
        "messageId": str(uuid.uuid4()),
        "parts": [{"kind": "text", "text": text}],
    }
    return {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": msg}}


async def poller(dev: Dev) -> tuple[str, str]:
    """A workspace in poll mode: proxied calls become its a2a_receive rows."""
    workspace_id, token = await dev.create_external(name="poller")
    registered = await dev.register(workspace_id, None, token, delivery_mode="poll")
    assert registered.status_code == 200, registered.text
    return workspace_id, token


async def call(dev: Dev, target: str, caller: tuple[str, str], text: str) -> None:
    headers = {"X-Workspace-ID": caller[0], **bearer(caller[1])}
    response = await dev.client.post(
        f"/workspaces/{target}/a2a", json=message(text), headers=headers
    )
    assert response.status_code == 200, response.text  # queued for the poller


async def activity(dev: Dev, workspace_id: str, token: str, query: str = "") -> Any:
    return await dev.client.get(
        f"/workspaces/{workspace_id}/activity{query}", headers=bearer(token)
    )


def texts(rows: list[dict[str, Any]]) -> list[str]:
    return [row["request_body"]["params"]["message"]["parts"][0]["text"] for row in rows]


async def test_a_poller_walks_its_calls_oldest_first_with_the_cursor(dev_next: Dev) -> None:
    target, token = await poller(dev_next)
    caller = await dev_next.create_external(name="caller")
    for text in ("one", "two", "three"):
        await call(dev_next, target, caller, text)
    newest = (await activity(dev_next, target, token, "?type=a2a_receive")).json()
    assert texts(newest) == ["three", "two", "one"]  # the recent feed: newest first
    first = newest[-1]["id"]
    after = (await activity(dev_next, target, token, f"?type=a2a_receive&since_id={first}")).json()
    assert texts(after) == ["two", "three"]  # strictly after, oldest first
    await call(dev_next, target, caller, "four")
    last = after[-1]["id"]
    more = (await activity(dev_next, target, token, f"?type=a2a_receive&since_id={last}")).json()
    assert texts(more) == ["four"]
    page = (await activity(dev_next, target, token, f"?since_id={first}&limit=1")).json()
    assert texts(page) == ["two"]


async def test_a_lost_cursor_is_410(dev_next: Dev) -> None:
    target, token = await poller(dev_next)
    other, other_token = await poller(dev_next)
    caller = await dev_next.create_external(name="caller")
    await call(dev_next, other, caller, "not yours")
    foreign = (await activity(dev_next, other, other_token)).json()[0]["id"]
    for cursor in (str(uuid.uuid4()), foreign):  # unknown, or another workspace's row
        response = await activity(dev_next, target, token, f"?since_id={cursor}")
        assert response.status_code == 410
        assert response.json()["error"].startswith("since_id cursor not found")


async def test_peer_source_and_time_filters(dev_next: Dev) -> None:
    target, token = await poller(dev_next)
    alice = await dev_next.create_external(name="alice", role="writer")
    bob = await dev_next.create_external(name="bob")
    await call(dev_next, target, alice, "from alice")
    await call(dev_next, target, bob, "from bob")
    by_alice = (await activity(dev_next, target, token, f"?peer_id={alice[0]}")).json()
    assert texts(by_alice) == ["from alice"]
    assert texts((await activity(dev_next, target, token, "?source=agent")).json()) == [
        "from bob",
        "from alice",
    ]
    assert (await activity(dev_next, target, token, "?source=canvas")).json() == []
    future = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert len((await activity(dev_next, target, token, f"?before_ts={future}")).json()) == 2
    assert (await activity(dev_next, target, token, "?before_ts=2000-01-01T00:00:00Z")).json() == []
    assert len((await activity(dev_next, target, token, "?since_secs=60")).json()) == 2
    rows = (await activity(dev_next, target, token, "?include=peer_info")).json()
    from_alice = next(row for row in rows if row["source_id"] == alice[0])
    assert (from_alice["peer_name"], from_alice["peer_role"]) == ("alice", "writer")
    assert from_alice["agent_card_url"] == f"{dev_next.url}/registry/discover/{alice[0]}"
    assert "peer_name" not in (await activity(dev_next, target, token)).json()[0]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("?peer_id=nope", "peer_id must be a UUID"),
        ("?before_ts=yesterday", RFC3339),
        ("?before_ts=2026-05-01", RFC3339),
        ("?since_secs=0", "since_secs must be a positive integer"),
        ("?since_secs=soon", "since_secs must be a positive integer"),
        ("?source=robot", "source must be 'canvas' or 'agent'"),
    ],
)  # fmt: skip
async def test_bad_filters_are_400(dev_next: Dev, query: str, error: str) -> None:
    target, token = await poller(dev_next)
    response = await activity(dev_next, target, token, query)
    assert (response.status_code, response.json()) == (400, {"error": error})


async def test_current_ignores_the_cursor(make_platform: PlatformFactory) -> None:
    dev = await make_platform()  # core@7cf77f27: no since_id, never 410, newest first
    workspace_id, token = await dev.create_external()
    response = await activity(dev, workspace_id, token, f"?since_id={uuid.uuid4()}&peer_id=x")
    assert (response.status_code, response.json()) == (200, [])
    bad_source = await activity(dev, workspace_id, token, "?source=robot")
    assert bad_source.status_code == 400
