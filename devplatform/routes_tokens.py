"""Token management (contract row 15): list, create, revoke; all behind WorkspaceAuth.

A new token is returned once in ``auth_token``; listing shows ids and 8-character
prefixes only. Revoking every live token re-opens ``/registry/register`` for a
bootstrap that mints a new one (lost-token recovery).
"""

from __future__ import annotations

import logging

from aiohttp import web

from devplatform.config import MAX_TOKENS_PER_WORKSPACE
from devplatform.endpoint import endpoint, json_response, platform_of
from devplatform.errors import NotFound, TooManyRequests

logger = logging.getLogger(__name__)

#: ``?limit=`` accepts 1..200; default 50.
MAX_LIST_LIMIT = 200
DEFAULT_LIST_LIMIT = 50


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name, "")
    if raw.isdigit() and low <= int(raw) <= high:
        return int(raw)
    return default


@endpoint(failure="failed to list tokens")
async def list_tokens(request: web.Request) -> web.Response:
    p = platform_of(request)
    workspace_id = request.match_info["id"]
    p.auth.require_workspace(request, workspace_id)
    limit = _int_query(request, "limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)
    offset = _int_query(request, "offset", 0, 0, 1 << 31)
    tokens = p.tokens.list_live(workspace_id, limit, offset)
    items = [
        {"id": t.id, "prefix": t.prefix, "created_at": t.created_at, "last_used_at": t.last_used_at}
        for t in tokens
    ]
    return json_response({"tokens": items, "count": len(items)})


@endpoint(failure="failed to create token")
async def create_token(request: web.Request) -> web.Response:
    p = platform_of(request)
    workspace_id = request.match_info["id"]
    p.auth.require_workspace(request, workspace_id)
    if p.tokens.live_count(workspace_id) >= MAX_TOKENS_PER_WORKSPACE:
        raise TooManyRequests(f"maximum {MAX_TOKENS_PER_WORKSPACE} active tokens per workspace")
    token = p.tokens.issue(workspace_id)
    logger.info("token_issued", extra={"workspace_id": workspace_id})
    body = {
        "auth_token": token,
        "workspace_id": workspace_id,
        "message": "Save this token now — it cannot be retrieved again.",
    }
    return json_response(body, 201)


@endpoint(failure="failed to revoke token")
async def revoke_token(request: web.Request) -> web.Response:
    p = platform_of(request)
    workspace_id = request.match_info["id"]
    p.auth.require_workspace(request, workspace_id)
    if not p.tokens.revoke(workspace_id, request.match_info["token_id"]):
        raise NotFound("token not found or already revoked")
    logger.info("token_revoked", extra={"workspace_id": workspace_id})
    return json_response({"status": "revoked"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/workspaces/{id}/tokens", list_tokens)
    app.router.add_post("/workspaces/{id}/tokens", create_token)
    app.router.add_delete("/workspaces/{id}/tokens/{token_id}", revoke_token)
