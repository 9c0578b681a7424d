"""Poll delivery: the inbox bookkeeping with no I/O (which rows are calls to answer, the
cursor, the floor, the ack), then :class:`PollDelivery` against the real dev platform
("next", in-process on 127.0.0.1) and the example a2a-sdk agent in-process behind the
push path's de-duplication.

The calling workspaces are in poll mode themselves, so the answers posted back to them
land in their own activity list, where the tests read them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devplatform.app import RunningServer, start_server
from devplatform.config import Generation, PlatformConfig
from edge_agent.asgi import AsgiTarget
from edge_agent.molecule.client import PlatformClient
from edge_agent.molecule.dedup import DedupTarget
from edge_agent.molecule.inbox import QUEUED_MARKER, Inbox, parse_call
from edge_agent.molecule.poll import PollDelivery, answer_texts, reply_message
from examples.a2a_agent import Settings, build_app
from tests.molecule_e2e.origin import Recorder

ADMIN_TOKEN = "poll-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def row(seq: int, message_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """An activity row as the platform lists a call queued for poll."""
    message = {"role": "user", "messageId": message_id or f"m{seq}", "parts": []}
    return {
        "id": f"row-{seq}",
        "seq": seq,
        "activity_type": "a2a_receive",
        "method": "message/send",
        "source_id": "caller",
        "summary": f"message/send → ws {QUEUED_MARKER}",
        "request_body": {"jsonrpc": "2.0", "id": 1, "method": "message/send",
                         "params": {"message": message}},
        "response_body": None,
    } | fields  # fmt: skip


# -- the bookkeeping ------------------------------------------------------------------


def test_only_calls_queued_for_poll_are_calls_to_answer() -> None:
    call = parse_call(row(1))
    assert call is not None and (call.row_id, call.seq, call.message_id) == ("row-1", 1, "m1")
    assert call.caller_id == "caller"
    assert parse_call(row(2, source_id=None)).caller_id is None  # type: ignore[union-attr]
    pushed = row(3, summary="message/send → ws", response_body={"result": {}})
    assert parse_call(pushed) is None  # delivered by push: answered then
    assert parse_call(row(4, summary="message/send → ws")) is None  # a pushed stream, say
    assert parse_call(row(5, method="notify")) is None  # our own answer to a canvas user
    assert parse_call(row(6, activity_type="a2a_send")) is None
    assert parse_call(row(7, request_body={"not": "json-rpc"})) is None
    assert parse_call(row(8, message_id="x" * 257)) is None


def test_the_cursor_moves_past_rows_only_when_they_are_done() -> None:
    inbox = Inbox()
    first, second = row(1), row(2)
    assert inbox.to_handle(first) is not None
    assert inbox.cursor is None and inbox.to_ack() is None
    inbox.done(first, parse_call(first))
    assert (inbox.cursor, inbox.floor, inbox.to_ack()) == ("row-1", 1, 1)
    inbox.acked(1)
    assert inbox.to_ack() is None
    inbox.done(row(2, summary="pushed"))  # skipped rows move the cursor too
    assert (inbox.cursor, inbox.to_ack()) == ("row-2", 2)
    assert inbox.to_handle(second) is None  # at or below the floor: never again


def test_a_lost_cursor_starts_over_without_answering_twice() -> None:
    inbox = Inbox()
    for seq in (1, 2):
        inbox.done(row(seq), parse_call(row(seq)))
    inbox.cursor_lost()
    assert inbox.cursor is None
    newest_first = [row(3), row(2), row(1)]
    todo = [r for r in Inbox.chronological(newest_first, with_cursor=False) if inbox.to_handle(r)]
    assert [r["id"] for r in todo] == ["row-3"]
    fresh = Inbox()  # a new process: the platform's last_acked_seq is its floor
    fresh.raise_floor(2)
    assert [fresh.to_handle(r) is not None for r in newest_first] == [True, False, False]


def test_a_message_id_is_answered_once_and_remembered_within_bounds() -> None:
    inbox = Inbox(max_remembered=2)
    inbox.done(row(1, "same"), parse_call(row(1, "same")))
    assert inbox.to_handle(row(5, "same")) is None  # the caller sent it again
    for seq, message_id in ((2, "a"), (3, "b")):
        inbox.done(row(seq, message_id), parse_call(row(seq, message_id)))
    assert not inbox.answered("same") and inbox.answered("b")


def test_the_answer_carries_the_text_and_points_at_the_call() -> None:
    call = parse_call(row(1, "orig", request_body={
        "params": {"message": {"messageId": "orig", "contextId": "ctx"}}}))  # fmt: skip
    assert call is not None
    reply = reply_message(call, ["A", "B"])
    assert reply["role"] == "agent" and reply["contextId"] == "ctx"
    assert reply["parts"] == [{"kind": "text", "text": "A"}, {"kind": "text", "text": "B"}]
    assert reply["metadata"] == {"inReplyTo": "orig"}
    assert reply["messageId"] == reply_message(call, ["other"])["messageId"]  # a re-post
    assert reply["messageId"] != "orig"
    ok = (
        b'{"jsonrpc":"2.0","id":1,"result":{"kind":"message","parts":[{"kind":"text","text":"X"}]}}'
    )
    assert answer_texts(200, ok) == ["X"]
    assert answer_texts(500, b"") == ["error: the agent answered HTTP 500"]
    failed = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no such method"}}'
    assert "no such method" in answer_texts(200, failed)[0]


# -- against the dev platform -------------------------------------------------------------


class World:
    """A "next" dev platform, a poll-mode workspace served by a :class:`PollDelivery`,
    and an admin client to make callers and calls."""

    def __init__(self, server: RunningServer, http: httpx.AsyncClient) -> None:
        self.server, self.http = server, http
        self.recorder = Recorder(build_app(Settings()))
        self.workspace_id = ""
        self.client: PlatformClient | None = None

    async def workspace(self, name: str, mode: str = "poll") -> tuple[str, str]:
        body = {"name": name, "runtime": "external", "external": True}
        created = (await self.http.post("/workspaces", json=body, headers=ADMIN)).json()
        workspace_id, token = created["id"], created["connection"]["auth_token"]
        payload = {"id": workspace_id, "agent_card": {"name": name}, "delivery_mode": mode}
        if mode == "push":
            payload["url"] = "http://localhost:9/"
        done = await self.http.post(
            "/registry/register", json=payload, headers={"Authorization": f"Bearer {token}"}
        )
        assert done.status_code == 200, done.text
        return workspace_id, token

    async def call(self, caller: tuple[str, str] | None, text: str, message_id: str = "") -> Any:
        message = {"role": "user", "messageId": message_id or str(uuid.uuid4()),
                   "parts": [{"kind": "text", "text": text}]}  # fmt: skip
        body = {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": message}}
        headers = dict(ADMIN)
        if caller is not None:
            headers = {"Authorization": f"Bearer {caller[1]}", "X-Workspace-ID": caller[0]}
        resp = await self.http.post(
            f"/workspaces/{self.workspace_id}/a2a", json=body, headers=headers
        )
        return resp.json()

    async def rows(self, workspace_id: str) -> list[dict[str, Any]]:
        resp = await self.http.get(f"/workspaces/{workspace_id}/activity", headers=ADMIN)
        rows: list[dict[str, Any]] = resp.json()
        return rows

    async def answers(self, caller_id: str) -> dict[str, list[str]]:
        """The answers that reached ``caller_id``: inReplyTo -> their first text parts."""
        found: dict[str, list[str]] = {}
        for r in await self.rows(caller_id):
            message = (r.get("request_body") or {}).get("params", {}).get("message", {})
            in_reply_to = (message.get("metadata") or {}).get("inReplyTo")
            if in_reply_to:
                found.setdefault(in_reply_to, []).append(message["parts"][0]["text"])
        return found

    def poller(self) -> PollDelivery:
        assert self.client is not None
        return PollDelivery(self.client, DedupTarget(AsgiTarget(self.recorder)))


@pytest.fixture
async def world() -> AsyncIterator[World]:
    cfg = PlatformConfig(admin_token=ADMIN_TOKEN, generation=Generation.NEXT)
    server = await start_server(cfg, "127.0.0.1", 0)
    http = httpx.AsyncClient(base_url=server.url, timeout=10.0)
    w = World(server, http)
    try:
        w.workspace_id, token = await w.workspace("edge")
        w.client = PlatformClient(server.url, w.workspace_id, token=token)
        yield w
    finally:
        if w.client is not None:
            await w.client.aclose()
        await http.aclose()
        await server.close()


async def test_queued_calls_are_answered_to_their_callers_once(world: World) -> None:
    caller = await world.workspace("caller")
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for n, message_id in enumerate(ids):
        queued = await world.call(caller, f"call {n}", message_id)
        assert queued == {"delivery_mode": "poll", "method": "message/send", "status": "queued"}
    await world.call(caller, "call 0 again", ids[0])  # a retry: same messageId
    poller = world.poller()
    assert await poller.run_once() == 4
    assert await poller.run_once() == 0  # nothing new after the cursor
    assert {m: world.recorder.deliveries[m] for m in ids} == dict.fromkeys(ids, 1)
    answers = await world.answers(caller[0])
    assert answers == {ids[n]: [f"CALL {n}"] for n in range(3)}
    ack = await world.http.post(
        f"/workspaces/{world.workspace_id}/activity/ack", json={"acked_seq": 0}, headers=ADMIN
    )
    assert ack.json()["last_acked_seq"] == max(
        r["seq"] for r in await world.rows(world.workspace_id)
    )


async def test_a_canvas_caller_is_answered_with_notify(world: World) -> None:
    await world.call(None, "from the canvas")
    poller = world.poller()
    await poller.run_once()
    notes = [r for r in await world.rows(world.workspace_id) if r["method"] == "notify"]
    assert [n["request_body"]["message"].split("\n")[0] for n in notes] == ["FROM THE CANVAS"]
    await poller.run_once()  # its own notify row is not a call
    assert len([r for r in await world.rows(world.workspace_id) if r["method"] == "notify"]) == 1


async def test_a_lost_cursor_and_a_restart_answer_nothing_twice(world: World) -> None:
    caller = await world.workspace("caller")
    await world.call(caller, "before")
    first = world.poller()
    await first.run_once()
    await world.call(caller, "after")
    first.inbox.cursor = str(uuid.uuid4())  # the platform pruned the cursor row: 410
    await first.run_once()
    restarted = world.poller()  # a new process: no cursor, the platform's ack is its floor
    await world.call(caller, "later")
    await restarted.run_once()
    texts = sorted(t for ts in (await world.answers(caller[0])).values() for t in ts)
    assert texts == ["AFTER", "BEFORE", "LATER"]
    assert sum(world.recorder.deliveries.values()) == 3


async def test_calls_pushed_before_the_switch_are_not_answered_again(world: World) -> None:
    pusher = await world.workspace("pusher", mode="push")  # its URL goes nowhere
    caller = await world.workspace("caller")
    world.workspace_id, saved = pusher[0], world.workspace_id
    failed = await world.call(caller, "pushed")  # push mode: the platform tried, and failed
    assert "error" in failed
    (pushed,) = await world.rows(pusher[0])
    assert pushed["error_detail"] and not pushed["summary"].endswith(QUEUED_MARKER)
    body = {"id": pusher[0], "agent_card": {"name": "p"}, "delivery_mode": "poll"}
    switched = await world.http.post(
        "/registry/register", json=body, headers={"Authorization": f"Bearer {pusher[1]}"}
    )
    assert switched.json()["delivery_mode"] == "poll"
    await world.call(caller, "polled")
    assert world.client is not None
    await world.client.aclose()
    world.client = PlatformClient(world.server.url, pusher[0], token=pusher[1])
    await world.poller().run_once()
    assert sorted(t for ts in (await world.answers(caller[0])).values() for t in ts) == ["POLLED"]
    world.workspace_id = saved
