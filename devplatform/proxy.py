"""The A2A proxy: ``POST /workspaces/:id/a2a`` after the caller was identified.

Order of the checks, as in ``proxyA2ARequest``: hierarchy (403), budget (402),
poll-mode short-circuit ("next": 200 queued, nothing sent), agent URL (404 / 503
without URL), SSRF check of that URL (502), JSON normalization (400), inbound
secret ("next": 503 while not enrolled), then the call itself.

The call (:meth:`A2AProxy._dispatch`) runs under two deadlines: an idle timeout
pushed back by every heartbeat of the target workspace, and, for agent callers
without ``X-Timeout``, an absolute ceiling. Busy-shaped failures (deadline, EOF,
reset) are stored in the queue and answered 202; the next heartbeat of the target
with spare capacity re-sends one queued call (:meth:`A2AProxy.drain_one`), so the
agent can see the same ``messageId`` twice. The answer is always the whole,
buffered agent body with ``Content-Type: application/json``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from devplatform import a2amessage as msg
from devplatform import gojson, ssrf
from devplatform.a2amessage import ProxyAnswer, RuntimeOverrides
from devplatform.a2aqueue import A2AQueue, ActivityLog, QueuedCall
from devplatform.auth import A2ACaller
from devplatform.config import PlatformConfig
from devplatform.errors import (
    ApiError,
    BadGateway,
    Forbidden,
    NotFound,
    PaymentRequired,
    ServerError,
    ServiceUnavailable,
    StoreError,
    UnsafeURLError,
    UpstreamBusy,
    UpstreamError,
    UpstreamReadError,
)
from devplatform.hierarchy import Hierarchy
from devplatform.liveness import WorkspaceEvents
from devplatform.tokens import mint_plaintext
from devplatform.upstream import AgentResponse, Progress, UpstreamClient
from devplatform.workspaces import Workspace, WorkspaceRepo

logger = logging.getLogger(__name__)


class A2AProxy:
    def __init__(
        self,
        cfg: PlatformConfig,
        workspaces: WorkspaceRepo,
        hierarchy: Hierarchy,
        queue: A2AQueue,
        activity: ActivityLog,
        events: WorkspaceEvents,
        upstream: UpstreamClient,
        resolver: ssrf.Resolver = ssrf.system_resolver,
    ) -> None:
        self.cfg = cfg
        self.workspaces = workspaces
        self.hierarchy = hierarchy
        self.queue = queue
        self.activity = activity
        self.events = events
        self.upstream = upstream
        self.resolver = resolver
        self.overrides: dict[str, RuntimeOverrides] = {}
        self._background: set[asyncio.Future[Any]] = set()

    # -- entry points -------------------------------------------------------

    async def handle(
        self, target_id: str, body: bytes, caller: A2ACaller, x_timeout: bool
    ) -> ProxyAnswer:
        """Answer a live call. ``x_timeout``: the caller sent ``X-Timeout: N > 0``."""
        if self.cfg.is_next and caller.canvas:
            return await self._with_canvas_cap(target_id, body, caller, x_timeout)
        return await self._answer(target_id, body, caller, x_timeout)

    async def drain_one(self, workspace_id: str) -> None:
        """Re-send the oldest queued call of ``workspace_id`` (heartbeat with capacity)."""
        item = self.queue.claim_next(workspace_id)
        if item is None:
            return
        logger.info("a2a_redispatch", extra={"workspace_id": workspace_id, "queue_id": item.id})
        caller = A2ACaller(item.caller_id, canvas=False)
        try:
            answer = await self._proxy(workspace_id, item.body, caller, False, False)
        except (ApiError, UpstreamError, StoreError) as exc:
            self.queue.mark_failed(item.id, str(exc) or type(exc).__name__)
            return
        except Exception:
            logger.exception("a2a_redispatch_failed", extra={"queue_id": item.id})
            self.queue.mark_failed(item.id, "internal error")
            return
        self._finish_drained(item, answer)

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background; it is cancelled by :meth:`close`."""
        self._track(asyncio.ensure_future(coro))

    def _track(self, task: asyncio.Future[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A canvas call that outlived its synchronous wait: nobody is left to
            # answer, so the outcome is only logged (the real one broadcasts it).
            logger.info("a2a_background_error", extra={"error": str(task.exception())})

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # -- the flow -----------------------------------------------------------

    async def _with_canvas_cap(
        self, target_id: str, body: bytes, caller: A2ACaller, x_timeout: bool
    ) -> ProxyAnswer:
        task = asyncio.ensure_future(self._answer(target_id, body, caller, x_timeout))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.cfg.proxy.canvas_sync_wait)
        except TimeoutError:
            self._track(task)
            return msg.push_async_answer()

    async def _answer(
        self, target_id: str, body: bytes, caller: A2ACaller, x_timeout: bool
    ) -> ProxyAnswer:
        try:
            return await self._proxy(target_id, body, caller, x_timeout, True)
        except UpstreamReadError as exc:
            raise msg.read_error(
                exc, next_generation=self.cfg.is_next, max_bytes=self.cfg.max_response_body
            ) from exc
        except UpstreamError as exc:
            logger.info("a2a_unreachable", extra={"workspace_id": target_id, "reason": str(exc)})
            raise BadGateway("failed to reach workspace agent") from exc

    async def _proxy(
        self, target_id: str, body: bytes, caller: A2ACaller, x_timeout: bool, live: bool
    ) -> ProxyAnswer:
        """One pass through the checks and the call. ``live``: a caller is waiting
        (log the activity, queue a busy call); False for a re-send from the queue."""
        target = self._lookup(target_id)
        caller_id = caller.workspace_id
        if caller_id and caller_id != target_id and not caller.canvas:
            if not self.hierarchy.can_communicate(caller_id, target_id):
                raise Forbidden("access denied: workspaces cannot communicate per hierarchy rules")
        if target is not None and target.budget_limit is not None:
            if target.monthly_spend >= target.budget_limit:
                raise PaymentRequired("workspace budget limit exceeded")
        if self.cfg.is_next and target is not None and target.delivery_mode == "poll":
            return self._queue_for_poll(target, body, caller_id)
        target = await self._routable(target)
        url = target.url or ""
        normalized, method = msg.normalize(body)
        bearer = self._inbound_secret(target) if self.cfg.is_next else None
        started = time.monotonic()
        try:
            response = await self._dispatch(target, url, normalized, caller_id, x_timeout, bearer)
        except UpstreamError as exc:
            if not live:
                raise
            self._log(target, caller_id, normalized, method, None, started, str(exc))
            if isinstance(exc, UpstreamBusy):
                return self._busy(target.id, caller_id, normalized, method)
            raise
        if live:
            self._log(target, caller_id, normalized, method, response, started, None)
        return msg.agent_answer(response)

    def _lookup(self, target_id: str) -> Workspace | None:
        try:
            return self.workspaces.get(target_id)
        except StoreError as exc:
            raise ServerError("lookup failed") from exc

    async def _routable(self, target: Workspace | None) -> Workspace:
        """The target with a URL that passes the dispatch SSRF rules, or the error."""
        if target is None:
            raise NotFound("workspace not found")
        if not target.url:
            if target.status == "hibernated":
                raise ServiceUnavailable(
                    "workspace is waking from hibernation — retry in ~15 seconds",
                    body={"waking": True, "retry_after": 15},
                    headers={"Retry-After": "15"},
                )
            raise ServiceUnavailable("workspace has no URL", body={"status": target.status})
        try:
            await ssrf.validate_dispatch_url(
                target.url,
                saas=self.cfg.saas_mode,
                allow_localhost=self.cfg.dispatch_localhost,
                resolver=self.resolver,
            )
        except UnsafeURLError as exc:
            logger.warning("a2a_unsafe_url", extra={"workspace_id": target.id, "reason": str(exc)})
            raise BadGateway("workspace URL is not publicly routable") from exc
        return target

    def _inbound_secret(self, target: Workspace) -> str:
        """ "next": the bearer for the agent; minted on first need (then 503 once)."""
        if target.platform_inbound_secret:
            return target.platform_inbound_secret
        self.workspaces.update(target.id, platform_inbound_secret=mint_plaintext())
        raise msg.inbound_secret_just_minted()

    async def _dispatch(
        self,
        target: Workspace,
        url: str,
        body: bytes,
        caller_id: str,
        x_timeout: bool,
        bearer: str | None,
    ) -> AgentResponse:
        # Go detaches the forward from the request context, which drops an
        # X-Timeout deadline; the 30 min ceiling only applies without X-Timeout.
        ceiling = None if x_timeout or not caller_id else self.cfg.proxy.agent_ceiling
        progress = Progress()
        try:
            async with asyncio.timeout(ceiling), self._idle_deadline(target.id):
                return await self.upstream.post(
                    url,
                    body,
                    bearer=bearer,
                    header_timeout=self.cfg.header_timeout,
                    max_body=self.cfg.max_response_body,
                    refuse_oversize=self.cfg.is_next,
                    progress=progress,
                )
        except TimeoutError as exc:
            if progress.head_received:
                raise UpstreamReadError(
                    "context canceled", status=progress.status, too_large=False
                ) from exc
            raise UpstreamBusy("context deadline exceeded") from exc

    @asynccontextmanager
    async def _idle_deadline(self, workspace_id: str) -> AsyncIterator[None]:
        override = self.overrides.get(workspace_id, RuntimeOverrides()).idle_timeout
        idle = override or self.cfg.proxy.idle_timeout
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(idle) as deadline:

            def push_back() -> None:
                if not deadline.expired():
                    deadline.reschedule(loop.time() + idle)

            unsubscribe = self.events.subscribe(workspace_id, push_back)
            try:
                yield
            finally:
                unsubscribe()

    # -- answers ------------------------------------------------------------

    def _busy(self, target_id: str, caller_id: str, normalized: bytes, method: str) -> ProxyAnswer:
        if "session" in self.overrides.get(target_id, RuntimeOverrides()).capabilities:
            raise msg.native_session_busy()
        try:
            queue_id, depth = self.queue.enqueue(target_id, caller_id, normalized, method)
        except StoreError as exc:
            raise msg.enqueue_failed_busy() from exc
        logger.info(
            "a2a_queued", extra={"workspace_id": target_id, "queue_id": queue_id, "depth": depth}
        )
        return msg.queued_answer(queue_id, depth)

    def _queue_for_poll(self, target: Workspace, body: bytes, caller_id: str) -> ProxyAnswer:
        normalized, method = msg.normalize(body)
        self.activity.record(
            msg.received(target.id, target.name, caller_id, normalized, method, poll=True)
        )
        return msg.poll_answer(method)

    def _finish_drained(self, item: QueuedCall, answer: ProxyAnswer) -> None:
        if answer.status >= 300:
            self.queue.mark_failed(item.id, f"agent answered {answer.status}")
        else:
            self.queue.mark_completed(item.id)

    def _log(
        self,
        target: Workspace,
        caller_id: str,
        body: bytes,
        method: str,
        response: AgentResponse | None,
        started: float,
        error: str | None,
    ) -> None:
        failed = error is not None or (response is not None and response.status >= 400)
        response_body: Any = None
        if response is not None:
            try:
                response_body = gojson.loads_generic(response.body)
            except ValueError:
                response_body = None
        entry = msg.received(
            target.id,
            target.name,
            caller_id,
            body,
            method,
            status="error" if failed else "ok",
            response_body=response_body,
            duration_ms=int((time.monotonic() - started) * 1000),
            error_detail=error,
        )
        try:
            self.activity.record(entry)
        except StoreError:
            logger.warning("activity_log_failed", extra={"workspace_id": target.id})
