"""Workspace and global secrets.

Values are kept as plaintext with ``encryption_version`` 0, which is what the
real platform does when it runs without ``SECRETS_ENCRYPTION_KEY``. The merged
view (globals first, the workspace's own keys win) is what an agent pulls.
"""

from __future__ import annotations

from dataclasses import dataclass

from devplatform.db import Database, now_rfc3339, uuid_param


@dataclass(frozen=True, slots=True)
class SecretMeta:
    key: str
    scope: str  # "workspace" or "global"
    created_at: str
    updated_at: str


class SecretRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def set(self, workspace_id: str, key: str, value: str) -> None:
        now = now_rfc3339()
        self.db.execute(
            "INSERT INTO workspace_secrets (workspace_id, key, value, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (workspace_id, key)"
            " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (uuid_param(workspace_id), key, value, now, now),
        )

    def delete(self, workspace_id: str, key: str) -> bool:
        cursor = self.db.execute(
            "DELETE FROM workspace_secrets WHERE workspace_id = ? AND key = ?",
            (uuid_param(workspace_id), key),
        )
        return cursor.rowcount > 0

    def set_global(self, key: str, value: str) -> None:
        now = now_rfc3339()
        self.db.execute(
            "INSERT INTO global_secrets (key, value, created_at, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            (key, value, now, now),
        )

    def delete_global(self, key: str) -> bool:
        return self.db.execute("DELETE FROM global_secrets WHERE key = ?", (key,)).rowcount > 0

    def list_global(self) -> list[SecretMeta]:
        rows = self.db.all("SELECT key, created_at, updated_at FROM global_secrets ORDER BY key")
        return [SecretMeta(r["key"], "global", r["created_at"], r["updated_at"]) for r in rows]

    def list_merged(self, workspace_id: str) -> list[SecretMeta]:
        """Workspace keys (sorted), then the global keys they do not override."""
        rows = self.db.all(
            "SELECT key, created_at, updated_at FROM workspace_secrets"
            " WHERE workspace_id = ? ORDER BY key",
            (uuid_param(workspace_id),),
        )
        own = [SecretMeta(r["key"], "workspace", r["created_at"], r["updated_at"]) for r in rows]
        taken = {meta.key for meta in own}
        return own + [meta for meta in self.list_global() if meta.key not in taken]

    def values(self, workspace_id: str) -> dict[str, str]:
        merged = {
            r["key"]: r["value"] for r in self.db.all("SELECT key, value FROM global_secrets")
        }
        rows = self.db.all(
            "SELECT key, value FROM workspace_secrets WHERE workspace_id = ?",
            (uuid_param(workspace_id),),
        )
        merged.update({r["key"]: r["value"] for r in rows})
        return merged
