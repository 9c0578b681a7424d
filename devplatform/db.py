"""SQLite storage: the connection, the schema, and the PostgreSQL habits we imitate.

One connection, used from the event loop thread only. Each statement on a local
file takes well under a millisecond, which is fine for a development stand-in
and keeps every read-modify-write free of races without locks (no ``await``
happens inside a transaction). WAL mode lets ``edge-devplatform secret set`` write
into the same file while a server runs; ``busy_timeout`` makes either side wait
for the other instead of failing.

The real platform keeps workspace ids in UUID columns, so a malformed id makes a
query fail and the route answers its 500 text. :func:`uuid_param` reproduces that
by raising :class:`~devplatform.errors.StoreError`.

A file database is created with mode 0600: it holds token hashes and plaintext
secret values (the real platform encrypts them with ``SECRETS_ENCRYPTION_KEY``;
without that key it stores them as plaintext too, encryption version 0).
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from devplatform.errors import ConfigError, StoreError

#: How long a statement waits for another process holding the write lock.
BUSY_TIMEOUT_MS = 5000
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT,
    tier INTEGER NOT NULL DEFAULT 3,
    runtime TEXT,
    status TEXT NOT NULL,
    url TEXT,
    agent_card TEXT,
    parent_id TEXT,
    max_concurrent_tasks INTEGER NOT NULL DEFAULT 1,
    budget_limit INTEGER,
    monthly_spend INTEGER NOT NULL DEFAULT 0,
    workspace_access TEXT NOT NULL DEFAULT 'none',
    last_heartbeat_at TEXT,
    last_error_rate REAL NOT NULL DEFAULT 0,
    last_sample_error TEXT NOT NULL DEFAULT '',
    active_tasks INTEGER NOT NULL DEFAULT 0,
    uptime_seconds INTEGER NOT NULL DEFAULT 0,
    current_task TEXT NOT NULL DEFAULT '',
    delivery_mode TEXT,
    platform_inbound_secret TEXT,
    liveness_expires_at REAL,
    created_seq INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS workspace_auth_tokens (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    token_hash BLOB NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS idx_tokens_workspace ON workspace_auth_tokens(workspace_id);
CREATE TABLE IF NOT EXISTS workspace_secrets (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    encryption_version INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
CREATE TABLE IF NOT EXISTS global_secrets (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    encryption_version INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS a2a_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    caller_id TEXT,
    priority INTEGER NOT NULL,
    body TEXT NOT NULL,
    method TEXT,
    idempotency_key TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    enqueued_at TEXT NOT NULL,
    dispatched_at TEXT,
    completed_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_a2a_queue_idempotency
    ON a2a_queue(workspace_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'dispatched');
CREATE TABLE IF NOT EXISTS activity_logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    activity_type TEXT NOT NULL,
    source_id TEXT,
    target_id TEXT,
    method TEXT,
    summary TEXT,
    request_body TEXT,
    response_body TEXT,
    duration_ms INTEGER,
    status TEXT NOT NULL,
    error_detail TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_activity_workspace ON activity_logs(workspace_id, seq);
CREATE TABLE IF NOT EXISTS inbox_delivery_state (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    last_acked_seq INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
"""


def now_rfc3339() -> str:
    """The current UTC time as Go's ``time.RFC3339Nano`` prints it."""
    text = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def uuid_param(value: str) -> str:
    """A UUID column value in canonical form; a malformed one fails like PostgreSQL."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError) as exc:
        raise StoreError("invalid input syntax for type uuid") from exc


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def new_id() -> str:
    return str(uuid.uuid4())


class Database:
    """The SQLite connection. Every failure surfaces as ``StoreError``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn = self._open(path)
        self._in_transaction = False

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        if path != ":memory:":
            _create_private_file(path)
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (SCHEMA_VERSION,),
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open database {path!r}: {exc}") from exc
        return conn

    def close(self) -> None:
        self._conn.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from exc

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(self.execute(sql, params).fetchall())

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT``; rolled back if the block raises.

        Nested use joins the outer transaction. Never ``await`` inside the block.
        """
        if self._in_transaction:
            yield
            return
        self.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self._in_transaction = False
            self._conn.rollback()
            raise
        self._in_transaction = False
        self.execute("COMMIT")


def _create_private_file(path: str) -> None:
    """Create the database file 0600 before SQLite does (it would honour the umask)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"database directory does not exist: {directory}")
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create database {path!r}: {exc}") from exc
    os.close(fd)
