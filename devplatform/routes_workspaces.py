"""Workspace life cycle: create, list, read, state, pause, resume, delete, activity.

Contract rows 1, 5 and 16 (``POST /workspaces``, ``GET /workspaces/:id/state``,
pause/resume/delete), plus the admin list, the open single read and the
activity list the poll mode of "next" fills.
"""

from __future__ import annotations

import logging
import posixpath
from typing import Any

from aiohttp import web

from devplatform import activity
from devplatform.a2aqueue import activity_json
from devplatform.binding import Field, Kind, bind
from devplatform.db import is_uuid, uuid_param
from devplatform.endpoint import endpoint, json_response, platform_of, platform_url
from devplatform.errors import BadRequest, Conflict, NotFound, ServerError, StoreError
from devplatform.hierarchy import peer_json
from devplatform.platform import Platform
from devplatform.workspaces import NewWorkspace, Workspace

logger = logging.getLogger(__name__)

CREATE_FIELDS = (
    Field("name", Kind.STRING, required=True),
    Field("role", Kind.STRING),
    Field("template", Kind.STRING),
    Field("tier", Kind.INT),
    Field("model", Kind.STRING),
    Field("runtime", Kind.STRING),
    Field("external", Kind.BOOL),
    Field("url", Kind.STRING),
    Field("workspace_dir", Kind.STRING),
    Field("workspace_access", Kind.STRING),
    Field("parent_id", Kind.NULLABLE_STRING),
    Field("budget_limit", Kind.NULLABLE_INT),
    Field("secrets", Kind.STRING_MAP),
    Field("max_concurrent_tasks", Kind.INT),
    Field("canvas", Kind.OBJECT),
    Field("initial_memories", Kind.RAW),
)
YAML_SPECIAL = "{}[]|>*&!"
FIELD_LIMITS = {"name": 255, "role": 1000, "model": 100, "runtime": 100}
SYSTEM_DIRS = ("/etc", "/var", "/proc", "/sys", "/dev", "/boot", "/sbin", "/bin", "/lib", "/usr")
ACCESS_VALUES = ("none", "read_only", "read_write")
NO_DOCKER = (
    "Docker not available — workspace containers require a Docker daemon or external provisioning."
)

CURL_TEMPLATE = """# Replace AGENT_URL with YOUR agent's public HTTPS endpoint, then run:
export WORKSPACE_AUTH_TOKEN="<paste from create response>"
export AGENT_URL="https://your-agent.example.com"

curl -fsS -X POST "{platform}/registry/register" \\
  -H "Authorization: Bearer $WORKSPACE_AUTH_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{{"id": "{workspace}", "url": "'"$AGENT_URL"'",
       "agent_card": {{"name": "My External Agent"}}}}'
"""
PYTHON_SNIPPET = """# edge-agent run --platform {platform} --workspace-id {workspace} \\
#     --relay https://relay.example.com --relay-token ... --to http://127.0.0.1:8000
"""


def validate_create(payload: dict[str, Any]) -> None:
    """The create handler's field checks, each with its real 400 text."""
    for name, limit in FIELD_LIMITS.items():
        value: str = payload[name]
        if "\n" in value or "\r" in value or len(value) > limit:
            raise BadRequest("invalid workspace fields")
        if name in ("name", "role") and any(char in value for char in YAML_SPECIAL):
            raise BadRequest("invalid workspace fields")
    template: str = payload["template"]
    if template and (posixpath.isabs(template) or ".." in template.split("/")):
        raise BadRequest("invalid template")
    directory: str = payload["workspace_dir"]
    if directory and not _safe_dir(directory):
        raise BadRequest("invalid workspace directory")
    access = payload["workspace_access"] or "none"
    if access not in ACCESS_VALUES or (access != "none" and not directory):
        raise BadRequest("invalid workspace access")


def _safe_dir(directory: str) -> bool:
    if not posixpath.isabs(directory) or ".." in directory:
        return False
    clean = posixpath.normpath(directory)
    return not any(clean == d or clean.startswith(d + "/") for d in SYSTEM_DIRS)


@endpoint(invalid_body="invalid workspace payload", failure="failed to create workspace")
async def create_workspace(request: web.Request) -> web.Response:
    p = platform_of(request)
    p.auth.require_admin(request)
    payload = bind(await request.read(), CREATE_FIELDS)
    validate_create(payload)
    external = payload["external"] or payload["runtime"] == "external"
    spec = NewWorkspace(
        name=payload["name"],
        role=payload["role"] or None,
        tier=payload["tier"] or 3,
        runtime=payload["runtime"] or "langgraph",
        parent_id=payload["parent_id"],
        budget_limit=payload["budget_limit"],
        max_concurrent_tasks=payload["max_concurrent_tasks"] or 1,
        workspace_access=payload["workspace_access"] or "none",
    )
    with p.db.transaction():
        workspace_id = p.workspaces.create(spec)
        for key, value in (payload["secrets"] or {}).items():
            p.secrets.set(workspace_id, key, value)
    if p.cfg.is_next:
        p.inbound_secret(workspace_id)
        p.workspaces.update(workspace_id, delivery_mode="push")  # Create writes push
    logger.info("workspace_created", extra={"workspace_id": workspace_id, "external": external})
    if external:
        return _created_external(request, p, workspace_id, payload["url"])
    p.workspaces.update(workspace_id, status="failed", last_sample_error=NO_DOCKER)
    body = {
        "id": workspace_id,
        "status": "provisioning",
        "awareness_namespace": f"workspace:{workspace_id}",
        "workspace_access": spec.workspace_access,
    }
    return json_response(body, 201)


def _created_external(
    request: web.Request, p: Platform, workspace_id: str, url: str
) -> web.Response:
    if url:  # not SSRF-checked here: only at dispatch, like the real one
        p.workspaces.update(workspace_id, url=url, status="online", runtime="external")
        return json_response({"id": workspace_id, "external": True, "status": "online"}, 201)
    if p.cfg.is_next:
        p.workspaces.update(workspace_id, status="awaiting_agent", runtime="external")
    # "current" has no awaiting_agent enum value: its UPDATE fails silently and the
    # row stays 'provisioning' with the runtime it was inserted with.
    token = p.tokens.issue(workspace_id)
    base = platform_url(request)
    connection = {
        "workspace_id": workspace_id,
        "platform_url": base,
        "auth_token": token,
        "registry_endpoint": base + "/registry/register",
        "heartbeat_endpoint": base + "/registry/heartbeat",
        "curl_register_template": CURL_TEMPLATE.format(platform=base, workspace=workspace_id),
        "python_snippet": PYTHON_SNIPPET.format(platform=base, workspace=workspace_id),
    }
    body = {
        "id": workspace_id,
        "external": True,
        "status": "awaiting_agent",
        "connection": connection,
    }
    return json_response(body, 201)


def workspace_json(ws: Workspace, full: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        **peer_json(ws, ws.active_tasks),  # a workspace row starts as its peer entry
        "max_concurrent_tasks": ws.max_concurrent_tasks,
        "runtime": ws.runtime or "langgraph",
        "x": 0,
        "y": 0,
        "collapsed": False,
    }
    if full:
        row.update(budget_limit=ws.budget_limit, monthly_spend=ws.monthly_spend)
    return row


@endpoint(failure="query failed")
async def list_workspaces(request: web.Request) -> web.Response:
    p = platform_of(request)
    p.auth.require_admin(request)
    return json_response([workspace_json(ws, True) for ws in p.workspaces.list_visible()])


@endpoint(failure="query failed")
async def get_workspace(request: web.Request) -> web.Response:
    workspace_id = request.match_info["id"]
    if not is_uuid(workspace_id):
        raise BadRequest("invalid workspace ID")
    workspace = platform_of(request).workspaces.get(workspace_id)
    if workspace is None:
        raise NotFound("workspace not found")
    return json_response({**workspace_json(workspace, False), "last_outbound_at": None})


@endpoint(failure="query failed")
async def workspace_state(request: web.Request) -> web.Response:
    p = platform_of(request)
    workspace_id = request.match_info["id"]
    p.auth.require_workspace(request, workspace_id)
    p.auth.recheck_own_token(request, workspace_id)
    workspace = p.workspaces.get(workspace_id)
    if workspace is None:
        return json_response({"workspace_id": workspace_id, "deleted": True}, 404)
    if workspace.status == "removed":
        body = {"workspace_id": workspace_id, "status": "removed", "deleted": True}
        return json_response(body, 404)
    status = workspace.status
    body = {
        "workspace_id": workspace_id,
        "status": status,
        "paused": status == "paused",
        "deleted": False,
    }
    return json_response(body)


@endpoint(failure="lookup failed")
async def pause_workspace(request: web.Request) -> web.Response:
    p = platform_of(request)
    workspace_id = request.match_info["id"]
    p.auth.require_workspace(request, workspace_id)
    workspace = p.workspaces.get(workspace_id)
    if workspace is None or workspace.status in ("removed", "paused"):
        raise NotFound("workspace not found or already paused")
    targets = [workspace, *p.workspaces.descendants(workspace.id, ("removed", "paused"))]
    with p.db.transaction():
        for target in targets:
            p.workspaces.update(target.id, status="paused", url="")
            p.liveness.clear(target.id)
    logger.info("workspace_paused", extra={"workspace_id": workspace.id, "count": len(targets)})
    return json_response({"status": "paused", "paused_count": len(targets)})


@endpoint(failure="lookup failed")
async def resume_workspace(request: web.Request) -> web.Response:
    p = platform_of(request)
    workspace_id = request.match_info["id"]
    p.auth.require_workspace(request, workspace_id)
    workspace = p.workspaces.get(workspace_id)
    if workspace is None or workspace.status != "paused":
        raise NotFound("workspace not found or not paused")
    paused_parent = _paused_ancestor(p, workspace)
    if paused_parent is not None:
        raise Conflict(f'parent workspace "{paused_parent.name}" is paused — resume it first')
    paused_below = [w for w in p.workspaces.descendants(workspace.id, ()) if w.status == "paused"]
    targets = [workspace, *paused_below]
    with p.db.transaction():
        for target in targets:
            # Re-provisioning an external workspace is a no-op; its next heartbeat
            # flips it online, but its URL stays empty until it registers again.
            p.workspaces.update(target.id, status="provisioning")
    logger.info("workspace_resumed", extra={"workspace_id": workspace.id, "count": len(targets)})
    return json_response({"status": "provisioning", "resumed_count": len(targets)})


def _paused_ancestor(p: Platform, workspace: Workspace) -> Workspace | None:
    current = workspace
    for _ in range(32):
        if current.parent_id is None:
            return None
        parent = p.workspaces.get(current.parent_id)
        if parent is None:
            return None
        if parent.status == "paused":
            return parent
        current = parent
    return None


@endpoint(failure="failed to check children")
async def delete_workspace(request: web.Request) -> web.Response:
    p = platform_of(request)
    p.auth.require_admin(request)
    workspace_id = request.match_info["id"]
    if not is_uuid(workspace_id):
        raise BadRequest("invalid workspace ID")
    below = p.workspaces.descendants(workspace_id, ("removed",))
    children = [w for w in below if w.parent_id == uuid_param(workspace_id)]
    if children and request.query.get("confirm") != "true":
        body = {
            "status": "confirmation_required",
            "message": "This workspace has sub-workspaces."
            " Delete with ?confirm=true to cascade delete.",
            "children": [{"id": c.id, "name": c.name} for c in children],
            "children_count": len(children),
        }
        return json_response(body, 409)
    ids = [workspace_id, *(w.id for w in below)]
    with p.db.transaction():
        for target in ids:
            p.workspaces.update(target, status="removed")
            p.tokens.revoke_all(target)
            p.liveness.clear(target)
    logger.info("workspace_removed", extra={"workspace_id": workspace_id, "cascade": len(below)})
    if request.query.get("purge") == "true":
        try:
            p.workspaces.purge(ids)
        except StoreError as exc:
            raise ServerError("purge failed") from exc
        return json_response({"status": "purged", "cascade_deleted": len(below)})
    return json_response({"status": "removed", "cascade_deleted": len(below)})


@endpoint(failure="query failed")
async def list_activity(request: web.Request) -> web.Response:
    p = platform_of(request)
    workspace_id = request.match_info["id"]
    p.auth.require_workspace(request, workspace_id)
    query = activity.parse_query(request.query, next_generation=p.cfg.is_next)
    found = activity.select_rows(p.db, workspace_id, query)
    rows = [activity_json(row, with_seq=p.cfg.is_next) for row in found]
    if query.peer_info:
        _add_peer_info(p, platform_url(request), rows)
    return json_response(rows)


def _add_peer_info(p: Platform, base: str, rows: list[dict[str, Any]]) -> None:
    """``include=peer_info``: who the caller of each row is (when it still exists)."""
    for row in rows:
        source_id = row.get("source_id")
        if not source_id:
            continue
        caller = p.workspaces.get(source_id) if is_uuid(source_id) else None
        if caller is not None and caller.name:
            row["peer_name"] = caller.name
        if caller is not None and caller.role:
            row["peer_role"] = caller.role
        row["agent_card_url"] = f"{base}/registry/discover/{source_id}"


def add_routes(app: web.Application) -> None:
    app.router.add_post("/workspaces", create_workspace)
    app.router.add_get("/workspaces", list_workspaces)
    app.router.add_get("/workspaces/{id}", get_workspace)
    app.router.add_delete("/workspaces/{id}", delete_workspace)
    app.router.add_get("/workspaces/{id}/state", workspace_state)
    app.router.add_post("/workspaces/{id}/pause", pause_workspace)
    app.router.add_post("/workspaces/{id}/resume", resume_workspace)
    app.router.add_get("/workspaces/{id}/activity", list_activity)
