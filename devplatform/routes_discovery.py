"""Discovery: peers, discover, check-access (contract rows 9, 10, 11)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from devplatform.binding import Field, Kind, bind
from devplatform.endpoint import endpoint, json_response, platform_of
from devplatform.errors import BadRequest, Forbidden, NotFound, ServiceUnavailable

CHECK_ACCESS_FIELDS = (
    Field("caller_id", Kind.STRING, required=True),
    Field("target_id", Kind.STRING, required=True),
)


def _matches(peer: dict[str, Any], query: str) -> bool:
    needle = query.lower()
    return needle in peer["name"].lower() or needle in (peer["role"] or "").lower()


@endpoint(failure="lookup failed")
async def peers(request: web.Request) -> web.Response:
    """Siblings (all root-level workspaces for a root), children and parent."""
    p = platform_of(request)
    workspace_id = request.match_info["id"]
    p.auth.require_own_token_if_live(request, workspace_id)
    workspace = p.workspaces.get(workspace_id)
    if workspace is None:
        raise NotFound("workspace not found")
    found = p.hierarchy.peers(workspace)
    query = request.query.get("q", "")
    return json_response([peer for peer in found if not query or _matches(peer, query)])


@endpoint(failure="lookup failed")
async def discover(request: web.Request) -> web.Response:
    p = platform_of(request)
    target_id = request.match_info["id"]
    caller_id = request.headers.get("X-Workspace-ID", "")
    if not caller_id:
        raise BadRequest("X-Workspace-ID header is required")
    p.auth.require_own_token_if_live(request, caller_id)
    if not p.hierarchy.can_communicate(caller_id, target_id):
        raise Forbidden("not authorized to discover this workspace")
    target = p.workspaces.get(target_id)
    name = target.name if target else ""
    if target is not None and target.is_external and target.url:
        caller = p.workspaces.get(caller_id)
        url = target.url
        if caller is None or not caller.is_external:
            # A container caller reaches the host through host.docker.internal.
            url = url.replace("127.0.0.1", "host.docker.internal", 1)
            url = url.replace("localhost", "host.docker.internal", 1)
        return json_response({"id": target_id, "url": url, "name": name})
    if target is None:
        raise NotFound("workspace not found")
    if target.status in ("online", "degraded"):
        internal = f"http://ws-{target.id[:12]}:8000"
        return json_response({"id": target_id, "url": internal, "name": name})
    raise ServiceUnavailable("workspace not available", body={"status": target.status})


@endpoint()
async def check_access(request: web.Request) -> web.Response:
    p = platform_of(request)
    payload = bind(await request.read(), CHECK_ACCESS_FIELDS)
    allowed = p.hierarchy.can_communicate(payload["caller_id"], payload["target_id"])
    return json_response({"allowed": allowed})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/registry/discover/{id}", discover)
    app.router.add_get("/registry/{id}/peers", peers)
    app.router.add_post("/registry/check-access", check_access)
