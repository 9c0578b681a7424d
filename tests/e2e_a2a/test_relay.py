"""A2A through the relay's public URL: the a2a-sdk client against the example agent's
a2a-sdk server, both unchanged, with ``edge-relay`` and ``edge-agent`` in between.

Every test runs on both tunnels (see ``conftest``): the agent behind a local port and
the agent in-process.
"""

from __future__ import annotations

import asyncio

import httpx
from a2a.types import (
    CancelTaskRequest,
    GetExtendedAgentCardRequest,
    GetTaskRequest,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)

from tests.e2e.client import until
from tests.e2e_a2a.calls import (
    check_timed_stream,
    chunks_text,
    collect,
    first_answer_part,
    request,
    rpc_body,
    timed_stream_request,
)
from tests.e2e_a2a.conftest import A2ATunnel, Stack
from tests.support.a2a_clients import MakeClient

#: The line edge-agent prints for a request the relay reset (CANCEL) after the head.
CANCELLED_LINE = r"^\d\d:\d\d:\d\d POST / 200 CANCEL "


def task_text(task: Task) -> str:
    return "".join(part.text for artifact in task.artifacts for part in artifact.parts)


async def test_card_points_back_at_the_relay(
    stack: Stack, tunnel: A2ATunnel, http: httpx.AsyncClient, make_client: MakeClient
) -> None:
    assert tunnel.url == f"{stack.relay.url}/a/{tunnel.name}/"
    raw = await http.get(tunnel.url + ".well-known/agent-card.json")
    assert raw.status_code == 200, raw.text
    assert [i["url"] for i in raw.json()["supportedInterfaces"]] == [tunnel.url]
    # The SDK client fetched the same card through the relay and POSTs where it says.
    client = await make_client(tunnel.url)
    card = await client.get_extended_agent_card(GetExtendedAgentCardRequest())
    assert [i.url for i in card.supported_interfaces] == [tunnel.url]


async def test_base_url_without_trailing_slash(
    tunnel: A2ATunnel, http: httpx.AsyncClient, make_client: MakeClient
) -> None:
    """``/a/<name>`` reaches the agent's ``/`` as ``/a/<name>/`` does: no redirect, which
    the SDK client would not follow."""
    answer = await http.post(
        tunnel.url.rstrip("/"),
        json=rpc_body("SendMessage", "no slash"),
        headers={"A2A-Version": "1.0"},
    )
    assert answer.status_code == 200, answer.text
    assert first_answer_part(answer.json()["result"]) == {"text": "NO SLASH"}
    client = await make_client(tunnel.url.rstrip("/"), streaming=False)
    [reply] = await collect(client, request("sdk, no slash"))
    assert reply.answer[0] == "SDK, NO SLASH"


async def test_send_message(tunnel: A2ATunnel, make_client: MakeClient) -> None:
    client = await make_client(tunnel.url, streaming=False)
    [reply] = await collect(client, request("hello through the relay"))
    assert reply.answer == ["HELLO THROUGH THE RELAY", "secrets: none"]


async def test_stream_events_arrive_as_produced(tunnel: A2ATunnel, make_client: MakeClient) -> None:
    client = await make_client(tunnel.url)
    check_timed_stream(tunnel.name, await collect(client, timed_stream_request()))


async def test_get_task_after_a_stream(tunnel: A2ATunnel, make_client: MakeClient) -> None:
    client = await make_client(tunnel.url)
    events = await collect(client, request("fetch me", chunks=3, interval=0.05))
    task = await client.get_task(GetTaskRequest(id=events[0].event.task.id))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task_text(task) == chunks_text("fetch me", 3)
    assert [p.text for m in task.history[:1] for p in m.parts] == ["fetch me"]


async def test_cancel_a_running_stream(tunnel: A2ATunnel, make_client: MakeClient) -> None:
    chunks, interval = 40, 0.25  # a 10 s stream, cancelled after its second chunk
    client = await make_client(tunnel.url)
    events, task_id, cancelled = [], "", None
    async with asyncio.timeout(20):
        async for event in client.send_message(
            request("stop me", chunks=chunks, interval=interval)
        ):
            events.append(event)
            if event.HasField("task"):
                task_id = event.task.id
            if cancelled is None and sum(e.HasField("artifact_update") for e in events) == 2:
                cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
    assert cancelled is not None and cancelled.status.state == TaskState.TASK_STATE_CANCELED
    last = events[-1]
    assert last.HasField("status_update")
    assert last.status_update.status.state == TaskState.TASK_STATE_CANCELED
    received = sum(e.HasField("artifact_update") for e in events)
    assert 2 <= received < chunks

    # The agent saw it: its task store says CANCELED, and its executor stopped producing.
    task = await client.get_task(GetTaskRequest(id=task_id))
    assert task.status.state == TaskState.TASK_STATE_CANCELED
    assert task_text(task) == chunks_text("stop me", chunks, upto=received)
    await asyncio.sleep(4 * interval)
    later = await client.get_task(GetTaskRequest(id=task_id))
    assert task_text(later) == task_text(task)


async def test_resubscribe_after_the_caller_left(
    tunnel: A2ATunnel, make_client: MakeClient
) -> None:
    """A caller that drops its stream (the relay resets the tunnel stream, the agent
    cancels the local request) leaves the task running; SubscribeToTask picks it up."""
    chunks, interval = 6, 0.25
    client = await make_client(tunnel.url)
    resets = tunnel.agent.count(CANCELLED_LINE)
    task_id, seen = "", 0
    stream = client.send_message(request("come back", chunks=chunks, interval=interval))
    async with asyncio.timeout(20):
        async for event in stream:
            task_id = event.task.id if event.HasField("task") else task_id
            seen += event.HasField("artifact_update")
            if seen == 2:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        # edge-agent logs the request the relay reset when the caller left.
        await until(lambda: tunnel.agent.count(CANCELLED_LINE) > resets, 5, "agent saw the reset")
        resumed = [e async for e in client.subscribe(SubscribeToTaskRequest(id=task_id))]
    assert resumed[0].HasField("task") and resumed[0].task.id == task_id
    assert resumed[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert 1 <= sum(e.HasField("artifact_update") for e in resumed) <= chunks - 2
    task = await client.get_task(GetTaskRequest(id=task_id))
    assert task_text(task) == chunks_text("come back", chunks)


async def test_a2a_version_header_reaches_the_agent(
    tunnel: A2ATunnel, http: httpx.AsyncClient
) -> None:
    """The a2a-sdk server reads a missing ``A2A-Version`` as 0.3 and refuses 1.0 methods:
    both answers prove the header crosses the relay and agent as sent (or not sent)."""
    body = rpc_body("SendMessage", "versioned")
    without = await http.post(tunnel.url, json=body)
    assert without.json()["error"]["code"] == -32009, without.text
    with_header = await http.post(tunnel.url, json=body, headers={"A2A-Version": "1.0"})
    assert first_answer_part(with_header.json()["result"]) == {"text": "VERSIONED"}
