"""The example A2A agent against the real a2a-sdk client, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import httpx
import pytest
from a2a.client import Client
from a2a.helpers import get_stream_response_text, new_task, new_text_message
from a2a.server.context import ServerCallContext
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Role,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)

from examples.a2a_agent import Settings
from examples.a2a_spec import BoundedTaskStore
from tests.examples.conftest import Serve
from tests.support.a2a_clients import MakeClient

Timed = list[tuple[float, StreamResponse]]


def request(text: str, **metadata: float) -> SendMessageRequest:
    message = new_text_message(text, role=Role.ROLE_USER)
    if metadata:
        message.metadata.update(metadata)
    return SendMessageRequest(message=message)


async def collect(client: Client, req: SendMessageRequest) -> Timed:
    start, events = time.monotonic(), []
    async for event in client.send_message(req):
        events.append((time.monotonic() - start, event))
    return events


def kinds(events: Timed) -> list[str]:
    return [str(ev.WhichOneof("payload")) for _, ev in events]


def state_name(event: StreamResponse) -> str:
    return str(TaskState.Name(event.status_update.status.state))


async def test_send_message_echoes_and_names_secrets(
    serve: Serve, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_SECRET", "s3cr3t-value")
    monkeypatch.delenv("OTHER_SECRET", raising=False)
    base = await serve(Settings(secret_names=("DEMO_SECRET", "OTHER_SECRET")))
    client = await make_client(base, streaming=False)  # SendMessage, not the stream
    [(_, event)] = await collect(client, request("hello tunnel"))
    assert event.WhichOneof("payload") == "task"  # the answer is the task's artifact
    [artifact] = event.task.artifacts
    texts = [part.text for part in artifact.parts]
    assert texts == ["HELLO TUNNEL", "secrets: DEMO_SECRET"]
    assert list(artifact.metadata["secrets"]) == ["DEMO_SECRET"]
    assert event.task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert "s3cr3t" not in str(event)


async def test_stream_events_arrive_over_time(serve: Serve, make_client: MakeClient) -> None:
    base = await serve(Settings(chunks=4, interval=0.3))
    client = await make_client(base)
    events = await collect(client, request("a b"))
    assert kinds(events) == ["task", "status_update"] + ["artifact_update"] * 4 + ["status_update"]
    assert state_name(events[1][1]) == "TASK_STATE_WORKING"
    assert state_name(events[-1][1]) == "TASK_STATE_COMPLETED"
    artifacts = [(t, ev) for t, ev in events if ev.WhichOneof("payload") == "artifact_update"]
    text = "".join(get_stream_response_text(ev) for _, ev in artifacts)
    assert text == "".join(f"[{i}/4] A B\n" for i in range(1, 5))
    # Produced 0.3 s apart: the first must arrive long before the last (not buffered).
    assert artifacts[-1][0] - artifacts[0][0] > 0.6
    task = await client.get_task(GetTaskRequest(id=events[0][1].task.id))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert len(task.artifacts) == 1


async def test_cancel_a_running_stream(serve: Serve, make_client: MakeClient) -> None:
    base = await serve(Settings(chunks=50, interval=0.1))
    streamer, canceller = await make_client(base), await make_client(base)
    events: Timed = []
    cancelled = asyncio.Event()

    async def watch() -> None:
        async for event in streamer.send_message(request("long")):
            events.append((time.monotonic(), event))
            if kinds(events).count("artifact_update") == 2:
                cancelled.set()

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(cancelled.wait(), 10)
    task = await canceller.cancel_task(CancelTaskRequest(id=events[0][1].task.id))
    assert task.status.state == TaskState.TASK_STATE_CANCELED
    await asyncio.wait_for(watcher, 10)  # the stream ends by itself after CANCELED
    assert state_name(events[-1][1]) == "TASK_STATE_CANCELED"
    assert kinds(events).count("artifact_update") < 10
    again = await canceller.get_task(GetTaskRequest(id=task.id))
    assert again.status.state == TaskState.TASK_STATE_CANCELED


async def test_silent_gap_inside_a_stream(serve: Serve, http: httpx.AsyncClient) -> None:
    base = await serve(Settings(sse_ping=0))
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendStreamingMessage",
        "params": {
            "message": {
                "role": "ROLE_USER",
                "messageId": "m-1",
                "parts": [{"text": "gap"}],
                "metadata": {"chunks": 2, "interval": 0.05, "gap": 1.5},
            }
        },
    }
    headers = {"A2A-Version": "1.0", "Accept": "text/event-stream"}
    arrivals: list[tuple[float, bytes]] = []
    start = time.monotonic()
    async with http.stream("POST", base, json=body, headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_raw():
            arrivals.append((time.monotonic() - start, chunk))
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) > 1.4  # nothing at all on the wire during the gap (ping off)
    assert b"TASK_STATE_COMPLETED" in b"".join(chunk for _, chunk in arrivals)


async def test_card_url_from_settings_and_from_proxy_headers(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    configured = await serve(Settings(public_url="https://relay.example/a/demo"))
    card = (await http.get(configured + ".well-known/agent-card.json")).json()
    assert card["supportedInterfaces"][0]["url"] == "https://relay.example/a/demo/"
    derived = await serve(Settings())
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "relay.example:8443",
        "X-Forwarded-Prefix": "/a/demo",
    }
    card = (await http.get(derived + ".well-known/agent-card.json", headers=forwarded)).json()
    assert card["supportedInterfaces"][0]["url"] == "https://relay.example:8443/a/demo/"
    card = (await http.get(derived + ".well-known/agent-card.json")).json()
    assert card["supportedInterfaces"][0]["url"] == derived


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [({"chunks": 3}, 3), ({"chunks": -4}, 1), ({"chunks": "many"}, 2)],
)
async def test_stream_shape_from_message_metadata(
    serve: Serve, make_client: MakeClient, metadata: dict[str, Any], expected: int
) -> None:
    base = await serve(Settings(chunks=2, interval=0.01))
    client = await make_client(base)
    message = new_text_message("x", role=Role.ROLE_USER)
    message.metadata.update(metadata)
    events = await collect(client, SendMessageRequest(message=message))
    assert kinds(events).count("artifact_update") == expected


async def test_waiting_task_released_then_continued_and_cancelled(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    """A task waiting for input gives its in-memory runner back after ``idle_release``;
    a follow-up and a cancel still work (rebuilt from the store)."""
    base = await serve(Settings(idle_release=0.2))
    headers = {"A2A-Version": "1.0"}

    async def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        answer: dict[str, Any] = (await http.post(base, json=body, headers=headers)).json()
        return answer

    def message(text: str, **fields: str) -> dict[str, Any]:
        return {"messageId": f"m-{text}", "role": "ROLE_USER", "parts": [{"text": text}], **fields}

    task = (await call("SendMessage", {"message": message("one")}))["result"]["task"]
    await asyncio.sleep(0.6)  # released by now
    follow = {"message": message("two", taskId=task["id"], contextId=task["contextId"])}
    again = (await call("SendMessage", follow))["result"]["task"]
    assert [a["parts"][0]["text"] for a in again["artifacts"]] == ["ONE", "TWO"]
    await asyncio.sleep(0.6)
    cancelled = (await call("CancelTask", {"id": task["id"]}))["result"]
    assert cancelled["status"]["state"] == "TASK_STATE_CANCELED"


async def test_task_store_forgets_the_oldest_beyond_its_limit() -> None:
    store = BoundedTaskStore(limit=3)
    context = ServerCallContext()
    for i in range(5):
        await store.save(new_task(f"t{i}", "c", TaskState.TASK_STATE_WORKING), context)
    kept = [i for i in range(5) if await store.get(f"t{i}", context) is not None]
    assert kept == [2, 3, 4]
    await store.save(new_task("t2", "c", TaskState.TASK_STATE_COMPLETED), context)  # newest
    await store.save(new_task("t5", "c", TaskState.TASK_STATE_WORKING), context)
    kept = [i for i in range(6) if await store.get(f"t{i}", context) is not None]
    assert kept == [2, 4, 5]
