"""Registry: register, heartbeat, update-card (contract rows 2, 3, 4).

Auth of all three: open while the workspace has no live token, its own bearer
once it has one. Register mints a token exactly when none is live and returns it
once. In "next" register takes ``delivery_mode`` and both register and heartbeat
return ``platform_inbound_secret``.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from devplatform import ssrf
from devplatform.a2amessage import RuntimeOverrides
from devplatform.binding import Field, Kind, bind
from devplatform.db import uuid_param
from devplatform.endpoint import endpoint, json_response, platform_of
from devplatform.errors import BadRequest, BindError, UnsafeURLError
from devplatform.platform import Platform
from devplatform.workspaces import HeartbeatFields

logger = logging.getLogger(__name__)

#: ``monthly_spend`` is clamped to [0, 1e12] cents before it is stored.
MAX_MONTHLY_SPEND = 1_000_000_000_000
DELIVERY_MODES = ("push", "poll")

HEARTBEAT_FIELDS = (
    Field("workspace_id", Kind.STRING, required=True),
    Field("error_rate", Kind.FLOAT),
    Field("sample_error", Kind.STRING),
    Field("active_tasks", Kind.INT),
    Field("uptime_seconds", Kind.INT),
    Field("current_task", Kind.STRING),
    Field("monthly_spend", Kind.INT),
    Field("runtime_state", Kind.STRING),
    Field("runtime_metadata", Kind.OBJECT),
)
UPDATE_CARD_FIELDS = (
    Field("workspace_id", Kind.STRING, required=True),
    Field("agent_card", Kind.RAW, required=True),
)


def register_fields(next_generation: bool) -> tuple[Field, ...]:
    """ "current" has no ``delivery_mode`` field (ignored, whatever its type)."""
    fields = (
        Field("id", Kind.STRING, required=True),
        Field("url", Kind.STRING, required=not next_generation),
        Field("agent_card", Kind.RAW, required=True),
    )
    return (*fields, Field("delivery_mode", Kind.STRING)) if next_generation else fields


async def _check_url(p: Platform, url: str) -> None:
    try:
        await ssrf.validate_register_url(url, saas=p.cfg.saas_mode, resolver=p.resolver)
    except UnsafeURLError as exc:
        # The first of the real handler's two identical checks answers with the
        # generic text, so the descriptive one is never seen by callers.
        logger.info("register_url_refused", extra={"reason": str(exc)})
        raise BadRequest("invalid request body") from exc


def _effective_mode(p: Platform, workspace_id: str, requested: str) -> str:
    """ "next": the payload's mode, else the row's, else push.

    core-next's resolver would fall back to poll for an external row, but its column
    is ``NOT NULL DEFAULT 'push'`` (migration 045) and Create writes ``push``, so an
    existing row always answers first: push unless a register asks for poll.
    """
    if requested:
        return requested
    workspace = p.workspaces.get(workspace_id)
    if workspace is not None and workspace.delivery_mode in DELIVERY_MODES:
        return workspace.delivery_mode
    return "push"


@endpoint(failure="registration failed")
async def register(request: web.Request) -> web.Response:
    p = platform_of(request)
    payload = bind(await request.read(), register_fields(p.cfg.is_next))
    workspace_id, url = payload["id"], payload["url"]
    mode: str | None = None
    if p.cfg.is_next:
        if payload["delivery_mode"] not in ("", *DELIVERY_MODES):
            raise BadRequest("delivery_mode must be 'push' or 'poll'")
    else:
        await _check_url(p, url)
    p.auth.require_own_token_if_live(request, workspace_id)
    if p.cfg.is_next:
        mode = _effective_mode(p, workspace_id, payload["delivery_mode"])
        if mode == "push" and not url:
            raise BadRequest("url is required for push-mode workspaces")
        if mode == "push":
            await _check_url(p, url)
        else:
            url = ""  # poll mode: the URL is ignored, never dispatched to
    canonical = uuid_param(workspace_id)
    p.workspaces.register_upsert(canonical, url or None, payload["agent_card"], mode)
    p.liveness.set_online(canonical)
    p.events.emit(canonical)
    response: dict[str, Any] = {"status": "registered"}
    if not p.tokens.has_live(canonical):
        response["auth_token"] = p.tokens.issue(canonical)
    if mode is not None:
        response["delivery_mode"] = mode
        response["platform_inbound_secret"] = p.inbound_secret(canonical)
    logger.info(
        "workspace_registered",
        extra={"workspace_id": canonical, "minted": "auth_token" in response},
    )
    return json_response(response)


def _overrides(metadata: dict[str, Any] | None) -> RuntimeOverrides | None:
    """``runtime_metadata`` → overrides; wrong nested types do not bind (400)."""
    if metadata is None:
        return None
    capabilities = metadata.get("capabilities") or {}
    idle = metadata.get("idle_timeout_seconds")
    if not isinstance(capabilities, dict) or not all(
        isinstance(v, bool) for v in capabilities.values()
    ):
        raise BindError("runtime_metadata.capabilities")
    if idle is not None and (not isinstance(idle, int) or isinstance(idle, bool)):
        raise BindError("runtime_metadata.idle_timeout_seconds")
    declared = frozenset(name for name, on in capabilities.items() if on)
    return RuntimeOverrides(
        idle_timeout=float(idle) if idle and idle > 0 else None, capabilities=declared
    )


@endpoint(failure="failed to update")
async def heartbeat(request: web.Request) -> web.Response:
    p = platform_of(request)
    payload = bind(await request.read(), HEARTBEAT_FIELDS)
    overrides = _overrides(payload["runtime_metadata"])
    workspace_id: str = payload["workspace_id"]
    p.auth.require_own_token_if_live(request, workspace_id)
    spend = min(max(payload["monthly_spend"], 0), MAX_MONTHLY_SPEND)
    beat = HeartbeatFields(
        error_rate=payload["error_rate"],
        sample_error=payload["sample_error"],
        active_tasks=payload["active_tasks"],
        uptime_seconds=payload["uptime_seconds"],
        current_task=payload["current_task"],
        monthly_spend=spend,
    )
    canonical = uuid_param(workspace_id)
    p.workspaces.record_heartbeat(canonical, beat)
    p.liveness.refresh(canonical)
    if overrides is not None:
        p.proxy.overrides[canonical] = overrides
    _evaluate_status(p, canonical, beat, payload["runtime_state"])
    p.events.emit(canonical)  # pushes back the idle deadline of calls in flight
    response: dict[str, Any] = {"status": "ok"}
    secret = p.inbound_secret(canonical) if p.cfg.is_next else ""
    if secret:  # no row (unknown workspace): nothing to hand out
        response["platform_inbound_secret"] = secret
    return json_response(response)


def _evaluate_status(
    p: Platform, workspace_id: str, beat: HeartbeatFields, runtime_state: str
) -> None:
    workspace = p.workspaces.get(workspace_id)
    if workspace is None:
        return
    current = workspace.status
    owns_status = (
        "status_mgmt" in p.proxy.overrides.get(workspace_id, RuntimeOverrides()).capabilities
    )
    if runtime_state == "wedged" and current == "online":
        p.workspaces.set_status_if(workspace_id, "degraded", current="online")
    if current == "online" and beat.error_rate >= 0.5 and not owns_status:
        p.workspaces.update(workspace_id, status="degraded")
    if current == "degraded" and beat.error_rate < 0.1 and runtime_state == "":
        p.workspaces.update(workspace_id, status="online")
    # "next" also brings a created-but-never-registered row (awaiting_agent) online.
    for stale in ("offline", "provisioning", "awaiting_agent"):
        if current == stale:
            p.workspaces.set_status_if(workspace_id, "online", current=stale)
    if beat.active_tasks < workspace.max_concurrent_tasks:
        p.proxy.spawn(p.proxy.drain_one(workspace_id))


@endpoint(failure="failed to update card")
async def update_card(request: web.Request) -> web.Response:
    p = platform_of(request)
    payload = bind(await request.read(), UPDATE_CARD_FIELDS)
    workspace_id: str = payload["workspace_id"]
    p.auth.require_own_token_if_live(request, workspace_id)
    canonical = uuid_param(workspace_id)
    p.workspaces.update_card(canonical, payload["agent_card"])
    p.events.emit(canonical)
    return json_response({"status": "updated"})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/registry/register", register)
    app.router.add_post("/registry/heartbeat", heartbeat)
    app.router.add_post("/registry/update-card", update_card)
