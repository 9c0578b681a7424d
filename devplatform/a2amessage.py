"""The A2A proxy's payloads: request normalization and every answer it builds.

Pure functions, no I/O: :mod:`devplatform.proxy` decides which one applies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from devplatform import gojson
from devplatform.a2aqueue import Activity
from devplatform.config import BUSY_RETRY_AFTER_SECONDS
from devplatform.errors import ApiError, BadRequest, ServiceUnavailable, UpstreamReadError
from devplatform.upstream import AgentResponse

QUEUED_MESSAGE = "workspace agent busy — request queued, will dispatch when capacity available"
BUSY_HEADERS = {"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)}
BUSY_BODY = {"busy": True, "retry_after": BUSY_RETRY_AFTER_SECONDS}


@dataclass(frozen=True, slots=True)
class ProxyAnswer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RuntimeOverrides:
    """From the heartbeat's ``runtime_metadata`` (kept in memory, like the real one)."""

    idle_timeout: float | None = None
    capabilities: frozenset[str] = frozenset()


def normalize(body: bytes) -> tuple[bytes, str]:
    """Wrap in a JSON-RPC envelope if needed, add ``messageId``; ``(body, method)``.

    The body is decoded into Go's generic shapes and marshalled again, so key order
    changes and numbers pass through float64, exactly as the agent will see them.
    """
    try:
        payload = gojson.loads_generic(body)
    except ValueError as exc:
        raise BadRequest("invalid JSON") from exc
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise BadRequest("invalid JSON")
    if "jsonrpc" not in payload:
        payload = {
            "jsonrpc": "2.0",
            "id": str(uuid.uuid4()),
            "method": payload.get("method"),
            "params": payload.get("params"),
        }
    params = payload.get("params")
    message = params.get("message") if isinstance(params, dict) else None
    if isinstance(message, dict) and "messageId" not in message:
        message["messageId"] = str(uuid.uuid4())
    method = payload.get("method")
    return gojson.marshal(payload), method if isinstance(method, str) else ""


def status_text(status: int) -> str:
    """Go's ``http.StatusText``: the reason phrase, ``""`` for unknown codes."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def agent_answer(response: AgentResponse) -> ProxyAnswer:
    """2xx: the agent's body verbatim. Otherwise its status with ``{"error": ...}``:
    the agent's own ``error`` string if it sent one, else the status text."""
    if response.status < 300:
        return ProxyAnswer(response.status, response.body)
    message = ""
    try:
        document = gojson.loads_generic(response.body)
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            message = document["error"]
    except ValueError:
        pass
    error = message or status_text(response.status)
    return ProxyAnswer(response.status, gojson.marshal({"error": error}))


def queued_answer(queue_id: str, depth: int) -> ProxyAnswer:
    body = {"queued": True, "queue_id": queue_id, "queue_depth": depth, "message": QUEUED_MESSAGE}
    return ProxyAnswer(202, gojson.marshal(body))


def poll_answer(method: str) -> ProxyAnswer:
    body = {"status": "queued", "delivery_mode": "poll", "method": method}
    return ProxyAnswer(200, gojson.marshal(body))


def push_async_answer() -> ProxyAnswer:
    return ProxyAnswer(200, gojson.marshal({"status": "queued", "delivery_mode": "push-async"}))


def native_session_busy() -> ServiceUnavailable:
    text = "workspace agent busy — adapter handles retry (native_session)"
    return ServiceUnavailable(
        text, body={**BUSY_BODY, "native_session": True}, headers=BUSY_HEADERS
    )


def enqueue_failed_busy() -> ServiceUnavailable:
    text = "workspace agent busy — retry after a short backoff"
    return ServiceUnavailable(text, body=BUSY_BODY, headers=BUSY_HEADERS)


def read_error(exc: UpstreamReadError, *, next_generation: bool, max_bytes: int) -> ApiError:
    """502 ``failed to read agent response``; "next" adds ``truncated``/``max_bytes``
    and keeps an agent error status (>= 300) instead of 502."""
    body: dict[str, Any] = {
        "error": "failed to read agent response",
        "delivery_confirmed": 200 <= exc.status < 400,
    }
    if not next_generation:
        return ApiError(body=body, status=502)
    if exc.too_large:
        body["error"] = str(exc)
    body.update(truncated=exc.too_large, max_bytes=max_bytes)
    return ApiError(body=body, status=exc.status if exc.status >= 300 else 502)


def inbound_secret_just_minted() -> ServiceUnavailable:
    return ServiceUnavailable(
        "workspace re-registering — please retry in 30 seconds",
        body={
            "detail": "Inbound auth secret was just minted. "
            "Workspace will pick it up on its next heartbeat.",
            "retry_after_seconds": 30,
        },
    )


def received(
    workspace_id: str,
    name: str,
    caller_id: str,
    body: bytes,
    method: str,
    **details: Any,
) -> Activity:
    """The ``a2a_receive`` activity row the target workspace gets for a call."""
    suffix = " (queued for poll)" if details.pop("poll", False) else ""
    return Activity(
        workspace_id=workspace_id,
        activity_type="a2a_receive",
        status=details.pop("status", "ok"),
        source_id=caller_id or None,
        target_id=workspace_id,
        method=method,
        summary=f"{method} → {name}{suffix}",
        request_body=gojson.loads_generic(body),
        **details,
    )
