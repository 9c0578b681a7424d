"""Liveness keys and workspace events: the two things the real platform keeps in Redis
and in its in-process broadcaster.

:class:`LivenessKeys` imitates the Redis key ``ws:{id}`` (TTL 180 s). ``register``
SETs it; ``heartbeat`` only EXPIREs it, so a key that already expired is *not*
brought back by heartbeats (the agent must register again). When a key expires
the workspace goes ``offline`` unless it is removed, paused or hibernated. The
expiry time lives in ``workspaces.liveness_expires_at`` (wall clock, so it
survives a restart the way Redis would); :meth:`LivenessKeys.expire_due` runs
every :attr:`~devplatform.config.PlatformConfig.sweep_interval`.

:class:`WorkspaceEvents` stands in for the broadcaster: every heartbeat emits an
event for its workspace, and each in-flight A2A dispatch to that workspace
listens, to push its idle deadline back (``applyIdleTimeout``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from devplatform.db import Database, now_rfc3339, uuid_param
from devplatform.workspaces import INACTIVE_STATUSES

logger = logging.getLogger(__name__)

Listener = Callable[[], None]


class LivenessKeys:
    def __init__(self, db: Database, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.ttl = ttl
        self._clock = clock

    def set_online(self, workspace_id: str) -> None:
        self.db.execute(
            "UPDATE workspaces SET liveness_expires_at = ? WHERE id = ?",
            (self._clock() + self.ttl, uuid_param(workspace_id)),
        )

    def refresh(self, workspace_id: str) -> bool:
        """EXPIRE semantics: extends a live key, never creates one. True if extended."""
        now = self._clock()
        cursor = self.db.execute(
            "UPDATE workspaces SET liveness_expires_at = ?"
            " WHERE id = ? AND liveness_expires_at IS NOT NULL AND liveness_expires_at > ?",
            (now + self.ttl, uuid_param(workspace_id), now),
        )
        return cursor.rowcount > 0

    def is_live(self, workspace_id: str) -> bool:
        expires = self.db.scalar(
            "SELECT liveness_expires_at FROM workspaces WHERE id = ?", (uuid_param(workspace_id),)
        )
        return expires is not None and expires > self._clock()

    def clear(self, workspace_id: str) -> None:
        self.db.execute(
            "UPDATE workspaces SET liveness_expires_at = NULL WHERE id = ?",
            (uuid_param(workspace_id),),
        )

    def expire_due(self) -> list[str]:
        """Expire every due key; workspaces still marked active go ``offline``."""
        now = self._clock()
        due = "SELECT id FROM workspaces WHERE liveness_expires_at <= ?"
        if self.db.one(due, (now,)) is None:
            return []  # the usual case: no write lock taken
        marks = ", ".join("?" for _ in INACTIVE_STATUSES)
        with self.db.transaction():
            ids = [row["id"] for row in self.db.all(due, (now,))]
            for workspace_id in ids:
                self.db.execute(
                    "UPDATE workspaces SET liveness_expires_at = NULL,"
                    f" status = CASE WHEN status IN ({marks}) THEN status ELSE 'offline' END,"
                    " updated_at = ? WHERE id = ?",
                    (*INACTIVE_STATUSES, now_rfc3339(), workspace_id),
                )
        for workspace_id in ids:
            logger.info("liveness_expired", extra={"workspace_id": workspace_id})
        return ids

    async def sweep_forever(self, interval: float) -> None:
        """Expire keys every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.expire_due()
            except Exception:  # a locked file must not kill the sweeper
                logger.exception("liveness_sweep_failed")


class WorkspaceEvents:
    """Per-workspace listeners, called on every event of that workspace."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = {}

    def subscribe(self, workspace_id: str, listener: Listener) -> Callable[[], None]:
        """Register ``listener``; call the returned function to unsubscribe."""
        listeners = self._listeners.setdefault(workspace_id, set())
        listeners.add(listener)

        def unsubscribe() -> None:
            listeners.discard(listener)
            if not listeners:
                self._listeners.pop(workspace_id, None)

        return unsubscribe

    def emit(self, workspace_id: str) -> None:
        for listener in list(self._listeners.get(workspace_id, ())):
            listener()
