"""Who may talk to whom (``CanCommunicate``) and who a workspace's peers are.

Rules: a workspace may call itself, its siblings (same parent; every root-level
workspace is a sibling of every other one), and any ancestor or descendant.
Removed workspaces are not excluded here (the real check ignores status).
Peers of ``:id`` are its siblings, children and parent, never removed ones.
"""

from __future__ import annotations

from typing import Any

from devplatform.db import Database, is_uuid, uuid_param
from devplatform.errors import StoreError
from devplatform.workspaces import Workspace

#: Parent-chain walks stop here (a corrupt cycle must not loop forever).
MAX_ANCESTOR_WALK = 32


class Hierarchy:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _parent(self, workspace_id: str) -> tuple[bool, str | None]:
        """``(exists, parent_id)``; a malformed id does not exist."""
        if not is_uuid(workspace_id):
            return False, None
        row = self.db.one(
            "SELECT parent_id FROM workspaces WHERE id = ?", (uuid_param(workspace_id),)
        )
        return (False, None) if row is None else (True, row["parent_id"])

    def _is_ancestor(self, ancestor: str, start: str) -> bool:
        current = start
        for _ in range(MAX_ANCESTOR_WALK):
            if current == ancestor:
                return True
            exists, parent = self._parent(current)
            if not exists or parent is None:
                return False
            current = parent
        return False

    def can_communicate(self, caller_id: str, target_id: str) -> bool:
        if caller_id == target_id:
            return True
        try:
            caller_ok, caller_parent = self._parent(caller_id)
            target_ok, target_parent = self._parent(target_id)
            if not (caller_ok and target_ok):
                return False
            caller, target = uuid_param(caller_id), uuid_param(target_id)
            if caller_parent == target_parent:  # siblings, or both root-level
                return True
            if target_parent is not None and self._is_ancestor(caller, target_parent):
                return True
            return caller_parent is not None and self._is_ancestor(target, caller_parent)
        except StoreError:
            return False  # fail-secure, like the real walk

    def peers(self, workspace: Workspace) -> list[dict[str, Any]]:
        rows = []
        if workspace.parent_id is None:
            rows += self.db.all(
                "SELECT * FROM workspaces WHERE parent_id IS NULL AND id != ?"
                " AND status != 'removed' ORDER BY created_seq",
                (workspace.id,),
            )
        else:
            rows += self.db.all(
                "SELECT * FROM workspaces WHERE parent_id = ? AND id != ?"
                " AND status != 'removed' ORDER BY created_seq",
                (workspace.parent_id, workspace.id),
            )
        rows += self.db.all(
            "SELECT * FROM workspaces WHERE parent_id = ? AND status != 'removed'"
            " ORDER BY created_seq",
            (workspace.id,),
        )
        if workspace.parent_id is not None:
            rows += self.db.all(
                "SELECT * FROM workspaces WHERE id = ? AND status != 'removed'",
                (workspace.parent_id,),
            )
        return [peer_json(Workspace.from_row(row), row["active_tasks"]) for row in rows]


def peer_json(ws: Workspace, active_tasks: int) -> dict[str, Any]:
    return {
        "id": ws.id,
        "name": ws.name,
        "role": ws.role or None,
        "tier": ws.tier,
        "status": ws.status,
        "agent_card": ws.agent_card,
        "url": ws.url or "",
        "parent_id": ws.parent_id,
        "active_tasks": active_tasks,
    }
