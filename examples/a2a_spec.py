"""The example agent's server wiring: a2a-sdk 1.3.0's own server, with what it lacks to
pass the A2A conformance kit's mandatory tests (a2aproject/a2a-tck, A2A 1.0) filled in
here, in the wiring, rather than by patching the SDK.

Each gap, what the SDK does, and what the spec and the kit ask:

* ``ListTasks`` ``pageSize`` in the answer: the SDK writes the page size it *used* (50
  by default, so 50 for an empty result); the kit reads it as the number of tasks in
  this page (0 for an empty result, 2 of 5 with ``pageSize: 2``). :class:`SpecRequestHandler`.
* ``ListTasks`` with an unknown ``status`` (``"INVALID_STATUS"``): the SDK parses
  requests with unknown enum values turned into ``TASK_STATE_UNSPECIFIED`` (no filter),
  so it lists everything; the kit asks for InvalidParams (-32602).
  :class:`SpecDispatcher` checks the raw value first.
* An error found before a stream's first event (``SubscribeToTask`` for an unknown or
  finished task): the SDK answers it as one JSON body; the kit asks that a streaming
  method always answer ``text/event-stream``, the error being the stream's one
  ``event: error``. :class:`SpecDispatcher` (it overrides one private method of
  a2a-sdk 1.3.0, ``_process_streaming_request``: pin the SDK when copying this).
* ``SubscribeToTask`` for a task waiting for input: the SDK sends the Task and then
  keeps the stream open with nothing left to send; the spec ends a stream at a
  terminal or interrupted state, so :class:`SpecRequestHandler` ends it there.
* Tasks are kept in memory for ``GetTask``/``ListTasks``; :class:`BoundedTaskStore`
  forgets the oldest beyond ``MAX_TASKS`` so a busy agent cannot grow without limit.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncGenerator
from typing import Any, Final

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.response_helpers import build_error_response
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import (
    ListTasksRequest,
    ListTasksResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import A2AError, InvalidParamsError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

#: Most tasks kept for GetTask/ListTasks; the oldest saved is forgotten first.
MAX_TASKS: Final = 10_000
#: States after which a task's stream ends: terminal ones and those waiting on the caller.
STREAM_END_STATES: Final = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
        TaskState.TASK_STATE_INPUT_REQUIRED,
        TaskState.TASK_STATE_AUTH_REQUIRED,
    }
)


class SpecRequestHandler(DefaultRequestHandler):
    """The SDK's handler, with ``ListTasks``' ``pageSize`` the size of the page returned
    and ``SubscribeToTask`` streams that end where the spec ends them."""

    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        page: ListTasksResponse = await super().on_list_tasks(params, context)
        page.page_size = len(page.tasks)
        return page

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        async with contextlib.aclosing(super().on_subscribe_to_task(params, context)) as events:
            async for event in events:
                yield event
                if isinstance(event, Task | TaskStatusUpdateEvent):
                    if event.status.state in STREAM_END_STATES:
                        return


class SpecDispatcher(JsonRpcDispatcher):
    """The SDK's JSON-RPC dispatcher, with the checks and stream errors described above."""

    async def handle_requests(self, request: Request) -> Response:
        try:
            body = await request.json()  # Starlette caches it for the SDK's own read
        except Exception:  # unreadable or not JSON: the SDK answers it
            body = None
        problem = invalid_params(body)
        if problem is not None:
            error = InvalidParamsError(message=problem)
            return self._generate_error_response(rpc_id(body), error)
        return await super().handle_requests(request)

    async def _process_streaming_request(
        self, request_id: str | int | None, request_obj: Any, context: ServerCallContext
    ) -> AsyncGenerator[dict[str, Any], None]:
        try:
            return await super()._process_streaming_request(request_id, request_obj, context)
        except A2AError as error:
            return _one_error(build_error_response(request_id, error))


async def _one_error(response: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    # The SDK sends an item holding "error" as ``event: error`` and ends the stream.
    yield response


def rpc_id(body: object) -> str | int | None:
    """The JSON-RPC id of ``body`` if it is a usable one (a bool is not)."""
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def invalid_params(body: object) -> str | None:
    """Why the params of a ``ListTasks`` request are invalid where the SDK would not say
    so, or None."""
    if not isinstance(body, dict) or body.get("method") != "ListTasks":
        return None
    params = body.get("params")
    if not isinstance(params, dict) or "status" not in params:
        return None
    status = params["status"]
    if isinstance(status, str) and status in TaskState.keys():
        return None
    if isinstance(status, int) and not isinstance(status, bool) and status in TaskState.values():
        return None
    return f"status: {str(status)[:64]!r} is not a task state (TASK_STATE_WORKING, ...)"


class BoundedTaskStore(InMemoryTaskStore):
    """The SDK's in-memory store, keeping at most ``limit`` tasks."""

    def __init__(self, limit: int = MAX_TASKS) -> None:
        super().__init__()
        self.limit = limit
        self._saved: collections.OrderedDict[str, ServerCallContext] = collections.OrderedDict()

    async def save(self, task: Task, context: ServerCallContext) -> None:
        await super().save(task, context)
        self._saved[task.id] = context
        self._saved.move_to_end(task.id)
        while len(self._saved) > self.limit:
            old_id, old_context = self._saved.popitem(last=False)
            await super().delete(old_id, old_context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        await super().delete(task_id, context)
        self._saved.pop(task_id, None)


def spec_jsonrpc_routes(
    handler: DefaultRequestHandler, rpc_url: str, enable_v0_3_compat: bool
) -> list[Route]:
    """What ``a2a.server.routes.create_jsonrpc_routes`` builds, on :class:`SpecDispatcher`."""
    dispatcher = SpecDispatcher(request_handler=handler, enable_v0_3_compat=enable_v0_3_compat)
    return [Route(path=rpc_url, endpoint=dispatcher.handle_requests, methods=["POST"])]
