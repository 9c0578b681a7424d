"""The ``workspaces`` table: rows, creation, the register upsert, status changes.

Status values are the real enum (``provisioning``, ``online``, ``offline``,
``degraded``, ``failed``, ``removed``, ``paused``, ``hibernated``, plus
``awaiting_agent`` in the "next" generation). A deleted workspace keeps its row
with status ``removed`` unless it is purged.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from devplatform.db import Database, new_id, now_rfc3339, uuid_param

#: Statuses a pause or the liveness monitor leave alone.
INACTIVE_STATUSES = ("removed", "paused", "hibernated")


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    name: str
    role: str | None
    tier: int
    runtime: str | None
    status: str
    url: str | None
    agent_card: Any  # decoded JSON, None when never set
    parent_id: str | None
    max_concurrent_tasks: int
    budget_limit: int | None
    monthly_spend: int
    active_tasks: int
    delivery_mode: str | None
    platform_inbound_secret: str | None

    @property
    def is_external(self) -> bool:
        return self.runtime == "external"

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Workspace:
        card = row["agent_card"]
        return cls(
            id=row["id"],
            name=row["name"],
            role=row["role"],
            tier=row["tier"],
            runtime=row["runtime"],
            status=row["status"],
            url=row["url"],
            agent_card=None if card is None else json.loads(card),
            parent_id=row["parent_id"],
            max_concurrent_tasks=row["max_concurrent_tasks"],
            budget_limit=row["budget_limit"],
            monthly_spend=row["monthly_spend"],
            active_tasks=row["active_tasks"],
            delivery_mode=row["delivery_mode"],
            platform_inbound_secret=row["platform_inbound_secret"],
        )


@dataclass(frozen=True, slots=True)
class NewWorkspace:
    name: str
    role: str | None = None
    tier: int = 3
    runtime: str = "langgraph"
    parent_id: str | None = None
    budget_limit: int | None = None
    max_concurrent_tasks: int = 1
    workspace_access: str = "none"


@dataclass(frozen=True, slots=True)
class HeartbeatFields:
    error_rate: float
    sample_error: str
    active_tasks: int
    uptime_seconds: int
    current_task: str
    monthly_spend: int  # 0: no update


class WorkspaceRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, workspace_id: str) -> Workspace | None:
        row = self.db.one("SELECT * FROM workspaces WHERE id = ?", (uuid_param(workspace_id),))
        return None if row is None else Workspace.from_row(row)

    def exists(self, workspace_id: str) -> bool:
        return self.get(workspace_id) is not None

    def create(self, spec: NewWorkspace) -> str:
        workspace_id = new_id()
        now = now_rfc3339()
        self.db.execute(
            "INSERT INTO workspaces (id, name, role, tier, runtime, status, parent_id,"
            " budget_limit, max_concurrent_tasks, workspace_access, created_seq,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'provisioning', ?, ?, ?, ?,"
            " (SELECT COALESCE(MAX(created_seq), 0) + 1 FROM workspaces), ?, ?)",
            (
                workspace_id,
                spec.name,
                spec.role,
                spec.tier,
                spec.runtime,
                None if spec.parent_id is None else uuid_param(spec.parent_id),
                spec.budget_limit,
                spec.max_concurrent_tasks,
                spec.workspace_access,
                now,
                now,
            ),
        )
        return workspace_id

    def update(self, workspace_id: str, **columns: Any) -> int:
        """``UPDATE workspaces SET <columns>, updated_at = now WHERE id = ?``; row count."""
        names = ", ".join(f"{name} = ?" for name in columns)
        cursor = self.db.execute(
            f"UPDATE workspaces SET {names}, updated_at = ? WHERE id = ?",
            (*columns.values(), now_rfc3339(), uuid_param(workspace_id)),
        )
        return cursor.rowcount

    def set_status_if(self, workspace_id: str, new: str, *, current: str) -> int:
        cursor = self.db.execute(
            "UPDATE workspaces SET status = ?, updated_at = ? WHERE id = ? AND status = ?",
            (new, now_rfc3339(), uuid_param(workspace_id), current),
        )
        return cursor.rowcount

    def register_upsert(
        self, workspace_id: str, url: str | None, agent_card: Any, delivery_mode: str | None
    ) -> None:
        """The register handler's upsert, including its two quirks.

        A new row gets ``name = id``. An existing row keeps a stored URL that starts
        with ``http://127.0.0.1`` (provisioner URLs), and a ``removed`` row is not
        touched at all (no resurrection by a late register).
        """
        now = now_rfc3339()
        self.db.execute(
            "INSERT INTO workspaces (id, name, url, agent_card, status, last_heartbeat_at,"
            " delivery_mode, created_seq, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, 'online', ?, ?,"
            " (SELECT COALESCE(MAX(created_seq), 0) + 1 FROM workspaces), ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET"
            "  url = CASE WHEN workspaces.url LIKE 'http://127.0.0.1%' THEN workspaces.url"
            "        ELSE excluded.url END,"
            "  agent_card = excluded.agent_card, status = 'online',"
            "  last_heartbeat_at = excluded.last_heartbeat_at,"
            "  delivery_mode = COALESCE(excluded.delivery_mode, workspaces.delivery_mode),"
            "  updated_at = excluded.updated_at"
            " WHERE workspaces.status IS NOT 'removed'",
            (
                uuid_param(workspace_id),
                uuid_param(workspace_id),
                url,
                json.dumps(agent_card),
                now,
                delivery_mode,
                now,
                now,
            ),
        )

    def update_card(self, workspace_id: str, agent_card: Any) -> None:
        """Replace the agent card only (no existence check, like the real one)."""
        self.update(workspace_id, agent_card=json.dumps(agent_card))

    def record_heartbeat(self, workspace_id: str, beat: HeartbeatFields) -> None:
        columns: dict[str, Any] = {
            "last_heartbeat_at": now_rfc3339(),
            "last_error_rate": beat.error_rate,
            "last_sample_error": beat.sample_error,
            "active_tasks": beat.active_tasks,
            "uptime_seconds": beat.uptime_seconds,
            "current_task": beat.current_task,
        }
        if beat.monthly_spend > 0:
            columns["monthly_spend"] = beat.monthly_spend
        names = ", ".join(f"{name} = ?" for name in columns)
        self.db.execute(
            f"UPDATE workspaces SET {names}, updated_at = ? WHERE id = ? AND status != 'removed'",
            (*columns.values(), now_rfc3339(), uuid_param(workspace_id)),
        )

    def descendants(self, workspace_id: str, skip_statuses: Sequence[str]) -> list[Workspace]:
        """Every workspace below ``workspace_id``; a skipped status also hides its subtree."""
        marks = ", ".join("?" for _ in skip_statuses)
        rows = self.db.all(
            "WITH RECURSIVE d(id) AS ("
            f" SELECT id FROM workspaces WHERE parent_id = ? AND status NOT IN ({marks})"
            " UNION ALL SELECT w.id FROM workspaces w JOIN d ON w.parent_id = d.id"
            f" WHERE w.status NOT IN ({marks}))"
            " SELECT w.* FROM workspaces w JOIN d ON w.id = d.id",
            (uuid_param(workspace_id), *skip_statuses, *skip_statuses),
        )
        return [Workspace.from_row(row) for row in rows]

    def list_visible(self) -> list[Workspace]:
        rows = self.db.all(
            "SELECT * FROM workspaces WHERE status != 'removed' ORDER BY created_seq"
        )
        return [Workspace.from_row(row) for row in rows]

    def purge(self, ids: Sequence[str]) -> None:
        """Hard delete (``?purge=true``): dependent rows go with the workspace."""
        for workspace_id in ids:
            canonical = uuid_param(workspace_id)
            self.db.execute(
                "UPDATE workspaces SET parent_id = NULL WHERE parent_id = ?", (canonical,)
            )
            self.db.execute("DELETE FROM workspaces WHERE id = ?", (canonical,))
