"""One running dev platform: its storage, repositories, checks and background work.

Create it inside the running event loop (:meth:`Platform.open`), close it with
:meth:`Platform.close`, which cancels the liveness sweeper and any queue re-send
still in flight, closes the A2A client and then the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from devplatform import ssrf
from devplatform.a2aqueue import A2AQueue, ActivityLog
from devplatform.auth import Auth
from devplatform.config import PlatformConfig
from devplatform.db import Database
from devplatform.hierarchy import Hierarchy
from devplatform.liveness import LivenessKeys, WorkspaceEvents
from devplatform.proxy import A2AProxy
from devplatform.secretstore import SecretRepo
from devplatform.tokens import TokenRepo, mint_plaintext
from devplatform.upstream import UpstreamClient
from devplatform.workspaces import WorkspaceRepo

logger = logging.getLogger(__name__)


class Platform:
    def __init__(self, cfg: PlatformConfig, db: Database, resolver: ssrf.Resolver) -> None:
        self.cfg = cfg
        self.db = db
        self.resolver = resolver
        self.workspaces = WorkspaceRepo(db)
        self.tokens = TokenRepo(db)
        self.secrets = SecretRepo(db)
        self.queue = A2AQueue(db)
        self.activity = ActivityLog(db)
        self.hierarchy = Hierarchy(db)
        self.liveness = LivenessKeys(db, cfg.liveness_ttl)
        self.events = WorkspaceEvents()
        self.auth = Auth(cfg.admin_token, self.tokens)
        self.upstream = UpstreamClient(
            connect_timeout=cfg.connect_timeout,
            saas=cfg.saas_mode,
            allow_localhost=cfg.dispatch_localhost,
        )
        self.proxy = A2AProxy(
            cfg,
            self.workspaces,
            self.hierarchy,
            self.queue,
            self.activity,
            self.events,
            self.upstream,
            resolver,
        )
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, cfg: PlatformConfig, resolver: ssrf.Resolver = ssrf.system_resolver
    ) -> Platform:
        db = Database(cfg.db_path)
        platform = cls(cfg, db, resolver)
        requeued = platform.queue.requeue_interrupted()
        if requeued:
            logger.info("a2a_queue_recovered", extra={"count": requeued})
        platform.liveness.expire_due()
        platform._sweeper = asyncio.create_task(platform.liveness.sweep_forever(cfg.sweep_interval))
        return platform

    def inbound_secret(self, workspace_id: str) -> str:
        """ "next": the workspace's platform inbound secret, minted when missing."""
        workspace = self.workspaces.get(workspace_id)
        if workspace is None:
            return ""
        if workspace.platform_inbound_secret:
            return workspace.platform_inbound_secret
        secret = mint_plaintext()
        self.workspaces.update(workspace_id, platform_inbound_secret=secret)
        return secret

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.proxy.close()
        await self.upstream.close()
        self.db.close()
