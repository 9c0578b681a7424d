"""The example A2A agent against the mandatory checks of the A2A conformance kit
(a2aproject/a2a-tck, A2A 1.0 over JSON-RPC with ``A2A-Version: 1.0``), in our words.

Each test names, in a comment, the kit's test it mirrors. Every test runs twice: against
the example served by its own uvicorn process on 127.0.0.1 (``direct``), and through a
real ``edge-relay`` + ``edge-agent`` tunnel in front of that same process (``tunnel``).
Tests that need a fresh context use a unique ``contextId``, so they share one server.

Where the kit and the A2A 1.0 spec disagree, the spec wins. Kit checks not followed, for
that reason: a SendMessage task that GetTask shows WORKING afterwards (the kit's ListTasks
helper waits for it; a blocking SendMessage returns only at a terminal or interrupted
state), the state spelled ``TASK_STATE_CANCELLED`` (1.0: ``TASK_STATE_CANCELED``), and a
card field ``protocolVersions`` (1.0: ``supportedInterfaces[].protocolVersion``).
"""

from __future__ import annotations

import dataclasses
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.helpers import new_text_message
from a2a.types import Role, SendMessageRequest, SubscribeToTaskRequest, TaskState
from a2a.utils.errors import TaskNotFoundError

from tests.e2e.procs import Proc, Procs, RelayProc, clean_env, issue_token, start_agent
from tests.support.a2a_clients import MakeClient, a2a_clients

V1 = {"A2A-Version": "1.0"}
#: States the kit accepts for the Task a SendMessage returns.
SEND_STATES = {
    "TASK_STATE_SUBMITTED",
    "TASK_STATE_WORKING",
    "TASK_STATE_INPUT_REQUIRED",
    "TASK_STATE_COMPLETED",
}
#: A cold a2a-sdk import is slow on a busy machine.
START_TIMEOUT = 60.0


@dataclasses.dataclass
class Servers:
    direct: str
    tunnel: str


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with Procs() as procs:
        argv = [sys.executable, "-m", "examples.a2a_agent", "--port", "0"]
        example = procs.add(Proc("example", argv, env=clean_env()))
        port = example.wait_line(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", START_TIMEOUT)
        state: Path = tmp_path_factory.mktemp("relay-conformance")
        relay = procs.add(RelayProc(state, name="relay"))
        token = issue_token(state, "kit")
        agent = procs.add(start_agent(relay, token, port.group(1), name="agent"))
        yield Servers(direct=f"http://127.0.0.1:{port.group(1)}/", tunnel=agent.url)


@pytest.fixture(params=["direct", "tunnel"])
def base(request: pytest.FixtureRequest, servers: Servers) -> str:
    return str(getattr(servers, request.param))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), trust_env=False) as client:
        yield client


@pytest.fixture
async def make_client(http: httpx.AsyncClient) -> AsyncIterator[MakeClient]:
    async with a2a_clients(http) as make:
        yield make


class Rpc:
    """Raw JSON-RPC calls to one base URL, as the kit makes them."""

    def __init__(self, http: httpx.AsyncClient, base: str) -> None:
        self.http, self.base = http, base

    async def call(self, method: str, params: Any) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": f"t-{uuid.uuid4()}", "method": method, "params": params}
        answer = await self.http.post(self.base, json=body, headers=V1)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/json"), answer.headers
        document: dict[str, Any] = answer.json()
        assert document["id"] == body["id"], document
        return document

    async def result(self, method: str, params: Any) -> Any:
        document = await self.call(method, params)
        assert "result" in document, document
        return document["result"]

    async def error_code(self, method: str, params: Any) -> int:
        document = await self.call(method, params)
        assert "error" in document, document
        return int(document["error"]["code"])

    async def send(self, text: str, **message: str) -> dict[str, Any]:
        """SendMessage with ``text``; returns the Task (failing if it is not one)."""
        sent = user_message(text, **message)
        result = await self.result("SendMessage", {"message": sent})
        assert set(result) == {"task"}, result  # a Task, not a Message
        task: dict[str, Any] = result["task"]
        return task

    async def tasks(self, **params: Any) -> dict[str, Any]:
        page: dict[str, Any] = await self.result("ListTasks", params)
        return page


def user_message(text: str, **fields: str) -> dict[str, Any]:
    message_id = f"m-{uuid.uuid4()}"
    return {"messageId": message_id, "role": "ROLE_USER", "parts": [{"text": text}], **fields}


def new_context() -> str:
    return f"ctx-{uuid.uuid4()}"


@pytest.fixture
def rpc(http: httpx.AsyncClient, base: str) -> Rpc:
    return Rpc(http, base)


# -- SendMessage ---------------------------------------------------------------------------


async def test_send_message_returns_a_task(rpc: Rpc) -> None:
    # kit: test_message_send_method.py::test_message_send_valid_text
    context = new_context()
    sent = user_message("hello kit", contextId=context)
    result = await rpc.result("SendMessage", {"message": sent})
    task = result["task"]
    assert task["status"]["state"] in SEND_STATES
    assert task["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"  # the answer is in
    assert task["contextId"] == context and task["id"]
    assert [m["messageId"] for m in task["history"]] == [sent["messageId"]]
    [artifact] = task["artifacts"]
    assert [p["text"] for p in artifact["parts"]] == ["HELLO KIT", "secrets: none"]
    assert artifact["metadata"] == {"echo": "HELLO KIT", "secrets": []}


async def test_send_message_with_missing_fields_is_invalid_params(rpc: Rpc) -> None:
    # kit: test_message_send_method.py::test_message_send_invalid_params
    assert await rpc.error_code("SendMessage", {"message": {"kind": "message"}}) == -32602


async def test_send_message_continues_a_task(rpc: Rpc) -> None:
    # kit: test_message_send_method.py::test_message_send_continue_task
    first = await rpc.send("one")
    second = await rpc.send("two", taskId=first["id"], contextId=first["contextId"])
    assert second["id"] == first["id"]
    assert second["status"]["state"] in SEND_STATES
    texts = [a["parts"][0]["text"] for a in second["artifacts"]]
    assert texts == ["ONE", "TWO"]
    assert [m["parts"][0]["text"] for m in second["history"] if m["role"] == "ROLE_USER"] == [
        "one",
        "two",
    ]


async def test_send_message_return_immediately(rpc: Rpc) -> None:
    # not a kit test: A2A 1.0 SendMessageConfiguration.returnImmediately (the Task at once)
    params = {"message": user_message("later"), "configuration": {"returnImmediately": True}}
    task = (await rpc.result("SendMessage", params))["task"]
    assert task["status"]["state"] in SEND_STATES
    got = await rpc.result("GetTask", {"id": task["id"]})
    assert got["id"] == task["id"]


async def test_sdk_client_gets_the_task(base: str, make_client: MakeClient) -> None:
    # kit: test_message_send_valid_text, with the real a2a-sdk client
    client = await make_client(base, streaming=False)
    request = SendMessageRequest(message=new_text_message("via sdk", role=Role.ROLE_USER))
    events = [event async for event in client.send_message(request)]
    [event] = events
    assert event.WhichOneof("payload") == "task"
    assert event.task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert event.task.artifacts[0].parts[0].text == "VIA SDK"


# -- GetTask -------------------------------------------------------------------------------


async def test_get_task(rpc: Rpc) -> None:
    # kit: test_tasks_get_method.py::test_tasks_get_valid, ::test_tasks_get_with_history_length,
    # test_state_transitions.py::test_task_history_length (follow-ups name the task only)
    task = await rpc.send("keep")
    for i in range(3):
        await rpc.send(f"more {i}", taskId=task["id"])
    got = await rpc.result("GetTask", {"id": task["id"]})
    assert got["id"] == task["id"] and got["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    assert got["contextId"] == task["contextId"]
    users = [m["parts"][0]["text"] for m in got["history"] if m["role"] == "ROLE_USER"]
    assert users == ["keep", "more 0", "more 1", "more 2"]
    assert len(got["artifacts"]) == 4
    short = await rpc.result("GetTask", {"id": task["id"], "historyLength": 2})
    assert short["history"] == got["history"][-2:]


async def test_get_unknown_task_is_task_not_found(rpc: Rpc) -> None:
    # kit: test_tasks_get_method.py::test_tasks_get_nonexistent
    assert await rpc.error_code("GetTask", {"id": "no-such-task"}) == -32001


async def test_get_task_negative_history_length(rpc: Rpc) -> None:
    # as the kit's test_tasks_list_method.py::test_negative_history_length_error, for GetTask
    task = await rpc.send("x")
    assert await rpc.error_code("GetTask", {"id": task["id"], "historyLength": -1}) == -32602


# -- CancelTask ----------------------------------------------------------------------------


async def test_cancel_task(rpc: Rpc) -> None:
    # kit: test_tasks_cancel_method.py::test_tasks_cancel_valid (the kit spells the
    # state CANCELLED; A2A 1.0 spells it TASK_STATE_CANCELED)
    task = await rpc.send("cancel me")
    cancelled = await rpc.result("CancelTask", {"id": task["id"]})
    assert cancelled["id"] == task["id"]
    assert cancelled["status"]["state"] == "TASK_STATE_CANCELED"
    # Finished now: a second cancel is refused, and so is more input.
    assert await rpc.error_code("CancelTask", {"id": task["id"]}) == -32002
    again = {"message": user_message("more", taskId=task["id"])}
    assert await rpc.error_code("SendMessage", again) in {-32004, -32602}


async def test_cancel_unknown_task_is_task_not_found(rpc: Rpc) -> None:
    # kit: test_tasks_cancel_method.py::test_tasks_cancel_nonexistent
    assert await rpc.error_code("CancelTask", {"id": "nonexistent-task-id"}) == -32001


# -- ListTasks -----------------------------------------------------------------------------


async def test_list_tasks_empty(rpc: Rpc) -> None:
    # kit: test_tasks_list_method.py::TestBasicListing::test_list_tasks_empty_when_none_exist
    page = await rpc.tasks(contextId=new_context())
    assert page == {"tasks": [], "totalSize": 0, "pageSize": 0, "nextPageToken": ""}


async def test_list_tasks_fields_filter_and_order(rpc: Rpc) -> None:
    # kit: TestBasicListing::test_list_all_tasks, ::test_list_tasks_validates_required_fields,
    # ::test_list_tasks_sorted_by_timestamp_descending, TestFiltering::test_filter_by_context_id,
    # ::test_filter_by_status, ::test_combined_filters
    context = new_context()
    ids = [(await rpc.send(f"task {i}", contextId=context))["id"] for i in range(3)]
    await rpc.send("elsewhere", contextId=new_context())
    page = await rpc.tasks(contextId=context)
    assert [t["id"] for t in page["tasks"]] == ids[::-1]  # newest first
    assert page["totalSize"] == 3 and page["pageSize"] == 3 and page["nextPageToken"] == ""
    for task in page["tasks"]:
        assert task["contextId"] == context and task["status"]["state"]
    every = await rpc.tasks()
    assert set(ids) <= {t["id"] for t in every["tasks"]}
    waiting = await rpc.tasks(contextId=context, status="TASK_STATE_INPUT_REQUIRED")
    assert [t["id"] for t in waiting["tasks"]] == ids[::-1]
    assert (await rpc.tasks(contextId=context, status="TASK_STATE_COMPLETED"))["tasks"] == []


async def test_list_tasks_pages(rpc: Rpc) -> None:
    # kit: TestPagination::test_custom_page_size, ::test_page_token_navigation,
    # ::test_last_page_detection, ::test_total_size_accuracy
    context = new_context()
    ids = {(await rpc.send(f"page {i}", contextId=context))["id"] for i in range(5)}
    first = await rpc.tasks(contextId=context, pageSize=2)
    assert (first["totalSize"], first["pageSize"], len(first["tasks"])) == (5, 2, 2)
    assert first["nextPageToken"]
    seen = [t["id"] for t in first["tasks"]]
    token = first["nextPageToken"]
    while token:
        page = await rpc.tasks(contextId=context, pageSize=2, pageToken=token)
        assert page["pageSize"] == len(page["tasks"]) and page["totalSize"] == 5
        seen += [t["id"] for t in page["tasks"]]
        token = page["nextPageToken"]
    assert len(seen) == 5 and set(seen) == ids  # no task twice, none missed
    last = await rpc.tasks(contextId=context, pageSize=10)
    assert (last["pageSize"], last["nextPageToken"]) == (5, "")


async def test_list_tasks_history_and_artifacts(rpc: Rpc) -> None:
    # kit: TestHistoryLimiting::test_history_length_zero, ::test_history_length_custom,
    # TestArtifactInclusion::test_artifacts_excluded_by_default, ::..._included_when_requested
    context = new_context()
    task = await rpc.send("hist", contextId=context)
    await rpc.send("tory", taskId=task["id"], contextId=context)
    [plain] = (await rpc.tasks(contextId=context, historyLength=0))["tasks"]
    assert plain.get("history", []) == [] and plain.get("artifacts", []) == []
    [one] = (await rpc.tasks(contextId=context, historyLength=1))["tasks"]
    assert len(one["history"]) == 1
    [full] = (await rpc.tasks(contextId=context, includeArtifacts=True))["tasks"]
    assert [a["parts"][0]["text"] for a in full["artifacts"]] == ["HIST", "TORY"]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "INVALID_STATUS"},  # TestEdgeCasesAndErrors::test_invalid_status_error
        {"status": 99},
        {"pageSize": -1},  # ::test_negative_page_size_error
        {"pageSize": 0},  # ::test_zero_page_size_error
        {"pageSize": 101},  # ::test_out_of_range_page_size_error
        {"pageToken": "invalid-token-xyz"},  # ::test_invalid_page_token_error
        {"historyLength": -1},  # ::test_negative_history_length_error
    ],
)
async def test_list_tasks_invalid_params(rpc: Rpc, params: dict[str, Any]) -> None:
    assert await rpc.error_code("ListTasks", params) == -32602


# -- SubscribeToTask -----------------------------------------------------------------------


async def sse_events(http: httpx.AsyncClient, base: str, method: str, params: Any) -> list[str]:
    """The raw SSE lines (``event:``/``data:``) of a streaming call; asserts the stream."""
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
    headers = {**V1, "Accept": "text/event-stream"}
    async with http.stream("POST", base, json=body, headers=headers) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream"), answer.headers
        return [line async for line in answer.aiter_lines() if line.startswith(("event:", "data:"))]


async def test_subscribe_to_unknown_task_is_an_event_stream(
    http: httpx.AsyncClient, base: str
) -> None:
    # kit: its JSON-RPC streaming client (tck/transport/jsonrpc_client.py) refuses any
    # answer that is not text/event-stream; the error arrives as the stream's one event
    lines = await sse_events(http, base, "SubscribeToTask", {"id": "no-such-task"})
    assert lines[0] == "event: error"
    assert '"code": -32001' in lines[1] or '"code":-32001' in lines[1], lines
    assert len(lines) == 2


async def test_subscribe_to_finished_task_is_an_event_stream(
    http: httpx.AsyncClient, base: str, rpc: Rpc
) -> None:
    # not a kit test: a finished task has nothing more to stream (UnsupportedOperation)
    task = await rpc.send("done soon")
    await rpc.result("CancelTask", {"id": task["id"]})
    lines = await sse_events(http, base, "SubscribeToTask", {"id": task["id"]})
    assert lines[0] == "event: error" and "-32004" in lines[1], lines


async def test_subscribe_to_waiting_task_starts_with_it(http: httpx.AsyncClient, base: str) -> None:
    # An INPUT_REQUIRED task is not finished: the stream starts with its snapshot.
    async with httpx.AsyncClient(timeout=30.0, trust_env=False) as other:
        task = await Rpc(other, base).send("snapshot")
    lines = await sse_events(http, base, "SubscribeToTask", {"id": task["id"]})
    assert lines and task["id"] in lines[0] and "TASK_STATE_INPUT_REQUIRED" in lines[0]


async def test_sdk_client_subscribe_unknown_task(base: str, make_client: MakeClient) -> None:
    # The real client reads the stream's error event as the A2A error it carries.
    client = await make_client(base)
    with pytest.raises(TaskNotFoundError):
        async for _ in client.subscribe(SubscribeToTaskRequest(id="no-such-task")):
            pass


# -- JSON-RPC envelope ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"jsonrpc": "2.0", "method": "SendMessage", "params": {"foo": "bar"}', -32700),
        (b'{"jsonrpc": "aaa", "method": "SendMessage", "params": {}}', -32600),
        (b'{"jsonrpc": "2.0", "params": {}}', -32600),
        (b'{"jsonrpc": "2.0", "method": "SendMessageXXX", "id": "3", "params": {}}', -32601),
        (b'{"jsonrpc": "2.0", "method": "SendMessage", "params": {}, "id": {"b": 1}}', -32600),
        (b'{"jsonrpc": "2.0", "method": "SendMessage", "id": "4", "params": {"": 1}}', -32602),
        (
            b'{"jsonrpc": "2.0", "method": "SendMessage", "id": 5, "params": {"message": '
            b'{"parts": "invalid"}}}',
            -32602,
        ),
        (b'{"jsonrpc": "2.0", "id": 6, "method": "nonexistent/method", "params": {}}', -32601),
    ],
)
async def test_json_rpc_errors(
    http: httpx.AsyncClient, base: str, content: bytes, code: int
) -> None:
    # kit: tests/mandatory/jsonrpc/test_json_rpc_compliance.py::test_rejects_malformed_json,
    # ::test_rejects_invalid_json_rpc_requests, ::test_rejects_unknown_method,
    # ::test_rejects_invalid_params: errors in the JSON-RPC envelope, with HTTP 200
    headers = {**V1, "Content-Type": "application/json"}
    answer = await http.post(base, content=content, headers=headers)
    assert answer.status_code == 200
    assert answer.json()["error"]["code"] == code, answer.text
