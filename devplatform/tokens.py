"""Workspace auth tokens: 43-character base64url strings, stored as sha256 only.

A token is 32 random bytes, base64url without padding (``secrets.token_urlsafe(32)``).
The plaintext is handed out once; the table keeps ``sha256(plaintext)`` and its
first 8 characters as ``prefix`` for display. Validation looks the hash up, then
compares it again with :func:`hmac.compare_digest`, requires the token to be live
(not revoked), bound to the claimed workspace, and that workspace not ``removed``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from devplatform.db import Database, is_uuid, new_id, now_rfc3339, uuid_param

TOKEN_BYTES = 32
TOKEN_PREFIX_LEN = 8


def hash_token(plaintext: str) -> bytes:
    return hashlib.sha256(plaintext.encode("utf-8")).digest()


def mint_plaintext() -> str:
    """A fresh token: 32 random bytes as 43 base64url characters."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def bearer_token(header: str | None) -> str:
    """``Authorization: Bearer <token>`` → token; anything else → ``""``.

    Same rule as the platform's ``BearerTokenFromHeader``: the exact, case-sensitive
    prefix ``"Bearer "``, then surrounding whitespace trimmed.
    """
    prefix = "Bearer "
    if not header or not header.startswith(prefix):
        return ""
    return header[len(prefix) :].strip()


def same_secret(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    prefix: str
    created_at: str
    last_used_at: str | None


class TokenRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def issue(self, workspace_id: str) -> str:
        """Mint and store a token; the plaintext is returned once, never stored."""
        plaintext = mint_plaintext()
        self.db.execute(
            "INSERT INTO workspace_auth_tokens (id, workspace_id, token_hash, prefix, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                new_id(),
                uuid_param(workspace_id),
                hash_token(plaintext),
                plaintext[:TOKEN_PREFIX_LEN],
                now_rfc3339(),
            ),
        )
        return plaintext

    def owner_of(self, plaintext: str) -> str | None:
        """The workspace a live token belongs to (its workspace not removed), or None."""
        if not plaintext:
            return None
        digest = hash_token(plaintext)
        row = self.db.one(
            "SELECT t.id, t.workspace_id, t.token_hash FROM workspace_auth_tokens t"
            " JOIN workspaces w ON w.id = t.workspace_id"
            " WHERE t.token_hash = ? AND t.revoked_at IS NULL AND w.status != 'removed'",
            (digest,),
        )
        if row is None or not hmac.compare_digest(bytes(row["token_hash"]), digest):
            return None
        self.db.execute(
            "UPDATE workspace_auth_tokens SET last_used_at = ? WHERE id = ?",
            (now_rfc3339(), row["id"]),
        )
        owner: str = row["workspace_id"]
        return owner

    def validate(self, workspace_id: str, plaintext: str) -> bool:
        """True when ``plaintext`` is a live token of ``workspace_id``."""
        owner = self.owner_of(plaintext)
        return owner is not None and is_uuid(workspace_id) and owner == uuid_param(workspace_id)

    def has_live(self, workspace_id: str) -> bool:
        count = self.db.scalar(
            "SELECT COUNT(*) FROM workspace_auth_tokens"
            " WHERE workspace_id = ? AND revoked_at IS NULL",
            (uuid_param(workspace_id),),
        )
        return bool(count)

    def live_count(self, workspace_id: str) -> int:
        count: int = self.db.scalar(
            "SELECT COUNT(*) FROM workspace_auth_tokens"
            " WHERE workspace_id = ? AND revoked_at IS NULL",
            (uuid_param(workspace_id),),
        )
        return count

    def list_live(self, workspace_id: str, limit: int, offset: int) -> list[TokenInfo]:
        rows = self.db.all(
            "SELECT id, prefix, created_at, last_used_at FROM workspace_auth_tokens"
            " WHERE workspace_id = ? AND revoked_at IS NULL ORDER BY seq DESC LIMIT ? OFFSET ?",
            (uuid_param(workspace_id), limit, offset),
        )
        return [TokenInfo(r["id"], r["prefix"], r["created_at"], r["last_used_at"]) for r in rows]

    def revoke(self, workspace_id: str, token_id: str) -> bool:
        cursor = self.db.execute(
            "UPDATE workspace_auth_tokens SET revoked_at = ?"
            " WHERE id = ? AND workspace_id = ? AND revoked_at IS NULL",
            (now_rfc3339(), uuid_param(token_id), uuid_param(workspace_id)),
        )
        return cursor.rowcount > 0

    def revoke_all(self, workspace_id: str) -> None:
        self.db.execute(
            "UPDATE workspace_auth_tokens SET revoked_at = ?"
            " WHERE workspace_id = ? AND revoked_at IS NULL",
            (now_rfc3339(), uuid_param(workspace_id)),
        )
