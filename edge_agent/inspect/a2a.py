"""What the inspector reads in A2A JSON-RPC traffic (A2A 1.0 and 0.3 names alike).

From a request: the JSON-RPC ``method`` and ``id``, ``params.message.messageId``, and
the task and context it concerns (``params.message.taskId/contextId``, ``params.id`` of
the task methods, ``params.taskId``, ``params.contextId``). From a response or each SSE
event: the task and context ids in ``result`` (1.0's ``task``, ``message``,
``statusUpdate``, ``artifactUpdate`` wrappers, or 0.3's ``kind`` objects), a short
label (``task TASK_STATE_SUBMITTED``, ``artifactUpdate``, ``error -32001``) for the
timeline. Anything that is not JSON-RPC gives None; nothing here raises.
"""

from __future__ import annotations

import json
from typing import Any, Final

#: Methods whose ``params.id`` is a task id (1.0 and 0.3 names).
TASK_ID_METHODS: Final = frozenset(
    {
        "GetTask", "CancelTask", "SubscribeToTask",
        "tasks/get", "tasks/cancel", "tasks/resubscribe",
    }
)  # fmt: skip
_WRAPPERS: Final = ("task", "message", "statusUpdate", "artifactUpdate")
_KINDS_03: Final = {"status-update": "statusUpdate", "artifact-update": "artifactUpdate"}


def loads(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def request_facts(body: bytes) -> dict[str, Any] | None:
    """The facts of a JSON-RPC request body, or None if it is not one."""
    doc = loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("method"), str):
        return None
    if doc.get("jsonrpc") != "2.0":
        return None
    method: str = doc["method"]
    facts: dict[str, Any] = {
        "method": method,
        "id": doc.get("id"),
        "messageId": None,
        "taskIds": [],
        "contextIds": [],
    }
    params = doc.get("params")
    if isinstance(params, dict):
        message = params.get("message")
        if isinstance(message, dict):
            facts["messageId"] = _str(message.get("messageId"))
            _add(facts, message.get("taskId"), message.get("contextId"))
        _add(facts, params.get("id") if method in TASK_ID_METHODS else None, None)
        _add(facts, params.get("taskId"), params.get("contextId"))
    return facts


def response_facts(doc: Any) -> dict[str, Any] | None:
    """Task and context ids and a label of one JSON-RPC response object, or None."""
    if not isinstance(doc, dict) or ("result" not in doc and "error" not in doc):
        return None
    facts: dict[str, Any] = {"taskIds": [], "contextIds": [], "label": ""}
    error = doc.get("error")
    if isinstance(error, dict):
        facts["label"] = f"error {error.get('code')}"
        return facts
    result = doc.get("result")
    if isinstance(result, dict):
        facts["label"] = _result(facts, result)
    return facts


def merge(into: dict[str, Any], facts: dict[str, Any]) -> None:
    """Add the task and context ids of ``facts`` to ``into`` (each once, in order)."""
    for key in ("taskIds", "contextIds"):
        for value in facts.get(key, ()):
            if value not in into[key]:
                into[key].append(value)


def _result(facts: dict[str, Any], result: dict[str, Any]) -> str:
    for wrapper in _WRAPPERS:
        inner = result.get(wrapper)
        if isinstance(inner, dict):
            return _object(facts, wrapper, inner)
    kind = result.get("kind")  # 0.3: the object itself, with a kind
    if isinstance(kind, str):
        return _object(facts, _KINDS_03.get(kind, kind), result)
    return "result"


def _object(facts: dict[str, Any], kind: str, obj: dict[str, Any]) -> str:
    if kind == "task":
        _add(facts, obj.get("id"), obj.get("contextId"))
    else:
        _add(facts, obj.get("taskId"), obj.get("contextId"))
    status = obj.get("status")
    state = status.get("state") if isinstance(status, dict) else None
    return f"{kind} {state}" if isinstance(state, str) else kind


def _add(facts: dict[str, Any], task_id: Any, context_id: Any) -> None:
    for key, value in (("taskIds", task_id), ("contextIds", context_id)):
        value = _str(value)
        if value is not None and value not in facts[key]:
            facts[key].append(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 256 else None
