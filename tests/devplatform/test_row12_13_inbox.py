"""What a poll-mode workspace does with its inbox besides reading it (contract 3.11, 11):
the "next" rows' ``seq`` and ``POST /workspaces/:id/activity/ack``, and ``POST
/workspaces/:id/notify`` (row 13), with which an agent answers a canvas caller."""

from __future__ import annotations

from typing import Any

import pytest

from tests.devplatform.conftest import ADMIN, Dev, PlatformFactory, bearer
from tests.devplatform.test_row12_activity import activity, call, poller

NO_NAME = "attachment[0]: uri and name are required"


async def ack(dev: Dev, workspace_id: str, token: str, body: Any) -> Any:
    return await dev.client.post(
        f"/workspaces/{workspace_id}/activity/ack", json=body, headers=bearer(token)
    )


async def test_rows_carry_seq_and_the_ack_only_moves_forward(dev_next: Dev) -> None:
    target, token = await poller(dev_next)
    caller = await dev_next.create_external(name="caller")
    for text in ("one", "two"):
        await call(dev_next, target, caller, text)
    rows = (await activity(dev_next, target, token, "?type=a2a_receive")).json()
    seqs = [row["seq"] for row in rows]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 2  # newest first
    newest, oldest = seqs
    answer = await ack(dev_next, target, token, {"acked_seq": oldest})
    assert (answer.status_code, answer.json()) == (200, {"last_acked_seq": oldest})
    assert (await ack(dev_next, target, token, {"acked_seq": newest})).json() == {
        "last_acked_seq": newest
    }
    stale = await ack(dev_next, target, token, {"acked_seq": oldest})  # never goes back
    assert (stale.status_code, stale.json()) == (200, {"last_acked_seq": newest})
    zero = await ack(dev_next, target, token, {"acked_seq": 0})
    assert zero.json() == {"last_acked_seq": newest}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "acked_seq is required"),
        ({"acked_seq": None}, "acked_seq is required"),
        ({"acked_seq": 1.5}, "acked_seq is required"),
        ({"acked_seq": "3"}, "acked_seq is required"),
        ([], "acked_seq is required"),
        ({"acked_seq": -1}, "acked_seq must be >= 0"),
    ],
)  # fmt: skip
async def test_a_bad_ack_is_400(dev_next: Dev, body: Any, error: str) -> None:
    target, token = await poller(dev_next)
    response = await ack(dev_next, target, token, body)
    assert (response.status_code, response.json()) == (400, {"error": error})


async def test_the_ack_needs_the_workspace_token(dev_next: Dev) -> None:
    target, _ = await poller(dev_next)
    _, other_token = await dev_next.create_external(name="other")
    wrong = await ack(dev_next, target, other_token, {"acked_seq": 1})
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid workspace auth token"})
    none = await dev_next.client.post(f"/workspaces/{target}/activity/ack", json={})
    assert none.status_code == 401


async def test_current_has_no_seq_and_no_ack(make_platform: PlatformFactory) -> None:
    dev = await make_platform()
    workspace_id, token = await dev.create_external()
    sent = await notify(dev, workspace_id, token, {"message": "hi"})
    assert sent.status_code == 200
    rows = (await activity(dev, workspace_id, token)).json()
    assert rows and "seq" not in rows[0]
    response = await ack(dev, workspace_id, token, {"acked_seq": 1})
    assert (response.status_code, response.text) == (404, "404 page not found")


async def notify(dev: Dev, workspace_id: str, token: str, body: Any) -> Any:
    return await dev.client.post(
        f"/workspaces/{workspace_id}/notify", json=body, headers=bearer(token)
    )


async def test_notify_writes_its_own_a2a_receive_row(dev_next: Dev) -> None:
    target, token = await poller(dev_next)
    attachment = {"uri": "workspace:a.txt", "name": "a.txt"}
    sent = await notify(dev_next, target, token, {"message": "done", "attachments": [attachment]})
    assert (sent.status_code, sent.json()) == (200, {"status": "sent"})
    (row,) = (await activity(dev_next, target, token, "?type=a2a_receive")).json()
    assert (row["method"], row["source_id"], row["summary"]) == ("notify", None, "done")
    assert row["request_body"] == {"message": "done", "attachments": [attachment]}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "message is required"),
        ({"message": ""}, "message is required"),
        ({"message": 3}, "message is required"),
        ({"message": "x", "attachments": {}}, "message is required"),
        ({"message": "x", "attachments": [{"uri": "u"}]}, NO_NAME),
    ],
)  # fmt: skip
async def test_a_bad_notify_is_400(dev_next: Dev, body: Any, error: str) -> None:
    target, token = await poller(dev_next)
    response = await notify(dev_next, target, token, body)
    assert (response.status_code, response.json()) == (400, {"error": error})


async def test_notify_to_a_workspace_that_is_gone(dev_next: Dev) -> None:
    purged, _ = await dev_next.create_external(name="gone")
    deleted = await dev_next.client.delete(f"/workspaces/{purged}?purge=true", headers=ADMIN)
    assert deleted.status_code == 200, deleted.text
    response = await dev_next.client.post(
        f"/workspaces/{purged}/notify", json={"message": "x"}, headers=ADMIN
    )
    assert (response.status_code, response.json()) == (404, {"error": "workspace not found"})
