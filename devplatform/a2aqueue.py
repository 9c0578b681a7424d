"""The ``a2a_queue`` table (busy calls waiting for a re-send) and ``activity_logs``.

Queue rows move ``queued`` → ``dispatched`` → ``completed``, or back to ``queued``
after a failed re-send until :data:`~devplatform.config.QUEUE_MAX_ATTEMPTS`, then
``failed``. At most one active row (queued or dispatched) exists per workspace and
``params.message.messageId``: enqueueing the same message again returns that row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from devplatform.config import QUEUE_MAX_ATTEMPTS
from devplatform.db import Database, new_id, now_rfc3339, uuid_param

#: ``PriorityTask``: the only priority the real platform writes today.
PRIORITY_TASK = 50


def message_id_of(body: bytes) -> str:
    """``params.message.messageId`` of a normalized JSON-RPC body, or ``""``."""
    try:
        message = json.loads(body)["params"]["message"]
        value = message["messageId"]
    except (ValueError, KeyError, TypeError):
        return ""
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class QueuedCall:
    id: str
    workspace_id: str
    caller_id: str
    body: bytes
    method: str
    attempts: int


class A2AQueue:
    def __init__(self, db: Database) -> None:
        self.db = db

    def enqueue(
        self, workspace_id: str, caller_id: str, body: bytes, method: str
    ) -> tuple[str, int]:
        """Store a busy call; returns ``(queue_id, queued depth)``."""
        key = message_id_of(body) or None
        with self.db.transaction():
            existing = None
            if key is not None:
                existing = self.db.scalar(
                    "SELECT id FROM a2a_queue WHERE workspace_id = ? AND idempotency_key = ?"
                    " AND status IN ('queued', 'dispatched')",
                    (uuid_param(workspace_id), key),
                )
            queue_id = existing or new_id()
            if existing is None:
                self.db.execute(
                    "INSERT INTO a2a_queue (id, workspace_id, caller_id, priority, body, method,"
                    " idempotency_key, status, enqueued_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
                    (
                        queue_id,
                        uuid_param(workspace_id),
                        caller_id or None,
                        PRIORITY_TASK,
                        body.decode("utf-8"),
                        method or None,
                        key,
                        now_rfc3339(),
                    ),
                )
        return queue_id, self.depth(workspace_id)

    def depth(self, workspace_id: str) -> int:
        depth: int = self.db.scalar(
            "SELECT COUNT(*) FROM a2a_queue WHERE workspace_id = ? AND status = 'queued'",
            (uuid_param(workspace_id),),
        )
        return depth

    def claim_next(self, workspace_id: str) -> QueuedCall | None:
        """Take the oldest queued call of the workspace and mark it dispatched."""
        with self.db.transaction():
            row = self.db.one(
                "SELECT * FROM a2a_queue WHERE workspace_id = ? AND status = 'queued'"
                " ORDER BY priority DESC, seq ASC LIMIT 1",
                (uuid_param(workspace_id),),
            )
            if row is None:
                return None
            self.db.execute(
                "UPDATE a2a_queue SET status = 'dispatched', dispatched_at = ?,"
                " attempts = attempts + 1 WHERE id = ?",
                (now_rfc3339(), row["id"]),
            )
        return QueuedCall(
            id=row["id"],
            workspace_id=row["workspace_id"],
            caller_id=row["caller_id"] or "",
            body=row["body"].encode("utf-8"),
            method=row["method"] or "",
            attempts=row["attempts"] + 1,
        )

    def mark_completed(self, queue_id: str) -> None:
        self.db.execute(
            "UPDATE a2a_queue SET status = 'completed', completed_at = ? WHERE id = ?",
            (now_rfc3339(), queue_id),
        )

    def mark_failed(self, queue_id: str, error: str) -> None:
        """Back to ``queued`` for the next heartbeat, or ``failed`` after the last attempt."""
        self.db.execute(
            "UPDATE a2a_queue SET status = CASE WHEN attempts >= ? THEN 'failed' ELSE 'queued' END,"
            " last_error = ?, dispatched_at = NULL WHERE id = ?",
            (QUEUE_MAX_ATTEMPTS, error, queue_id),
        )

    def requeue_interrupted(self) -> int:
        """At start: calls left ``dispatched`` by a previous process go back to ``queued``."""
        cursor = self.db.execute(
            "UPDATE a2a_queue SET status = 'queued', dispatched_at = NULL"
            " WHERE status = 'dispatched'"
        )
        return cursor.rowcount


@dataclass(frozen=True, slots=True)
class Activity:
    workspace_id: str
    activity_type: str
    status: str
    source_id: str | None = None
    target_id: str | None = None
    method: str | None = None
    summary: str | None = None
    request_body: Any = None
    response_body: Any = None
    duration_ms: int | None = None
    error_detail: str | None = None


class ActivityLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, entry: Activity) -> None:
        self.db.execute(
            "INSERT INTO activity_logs (id, workspace_id, activity_type, source_id, target_id,"
            " method, summary, request_body, response_body, duration_ms, status, error_detail,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new_id(),
                uuid_param(entry.workspace_id),
                entry.activity_type,
                entry.source_id,
                entry.target_id,
                entry.method,
                entry.summary,
                None if entry.request_body is None else json.dumps(entry.request_body),
                None if entry.response_body is None else json.dumps(entry.response_body),
                entry.duration_ms,
                entry.status,
                entry.error_detail,
                now_rfc3339(),
            ),
        )


def activity_json(row: Any, *, with_seq: bool = False) -> dict[str, Any]:
    """One ``activity_logs`` row as ``GET /workspaces/:id/activity`` shows it
    (``with_seq``: "next", whose rows carry the insertion order a poller acks)."""

    def decoded(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    return {
        "id": row["id"],
        "workspace_id": row["workspace_id"],
        "activity_type": row["activity_type"],
        "source_id": row["source_id"],
        "target_id": row["target_id"],
        "method": row["method"],
        "summary": row["summary"],
        "request_body": decoded(row["request_body"]),
        "response_body": decoded(row["response_body"]),
        "tool_trace": None,
        "duration_ms": row["duration_ms"],
        "status": row["status"],
        "error_detail": row["error_detail"],
        "created_at": row["created_at"],
    } | ({"seq": row["seq"]} if with_seq else {})
