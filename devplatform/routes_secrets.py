"""Secrets (contract rows 6 and 6b) and the admin routes that set them.

``GET /workspaces/:id/secrets`` lists keys and metadata, never values;
``GET /workspaces/:id/secrets/values`` returns the flat merged map (globals first,
the workspace's own keys win). Setting: ``POST`` or ``PUT /workspaces/:id/secrets``
``{"key","value"}`` (WorkspaceAuth: the admin token or the workspace's token, as on
the real platform), ``DELETE /workspaces/:id/secrets/:key``, and the global ones
under ``/admin/secrets`` (AdminAuth). Values never appear in logs.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web

from devplatform.binding import parse_object
from devplatform.endpoint import endpoint, json_response, platform_of
from devplatform.errors import BadRequest, BindError, NotFound
from devplatform.secretstore import SecretMeta

logger = logging.getLogger(__name__)

#: The secrets handlers accept only lower-case, hyphenated UUIDs.
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _workspace_id(request: web.Request) -> str:
    """WorkspaceAuth first (401), then the handler's UUID check (400)."""
    workspace_id = request.match_info["id"]
    platform_of(request).auth.require_workspace(request, workspace_id)
    if not UUID_RE.match(workspace_id):
        raise BadRequest("invalid workspace ID")
    return workspace_id


def _meta_json(meta: SecretMeta) -> dict[str, Any]:
    return {
        "key": meta.key,
        "has_value": True,
        "scope": meta.scope,
        "created_at": meta.created_at,
        "updated_at": meta.updated_at,
    }


def _key_value(body: bytes) -> tuple[str, str]:
    """Bind ``{"key","value"}``, both required non-empty strings.

    The 400 text imitates gin's validator message; the real one is not in the contract.
    """
    try:
        document = parse_object(body)
    except BindError as exc:
        raise BadRequest(str(exc)) from exc
    problems = []
    for name in ("key", "value"):
        value = document.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(
                f"json: cannot unmarshal {type(value).__name__}"
                f" into Go struct field .{name} of type string"
            )
        if not value:
            field = name.capitalize()
            problems.append(
                f"Key: '{field}' Error:Field validation for '{field}' failed on the 'required' tag"
            )
    if problems:
        raise BadRequest("\n".join(problems))
    return document["key"], document["value"]


@endpoint(failure="query failed")
async def list_secrets(request: web.Request) -> web.Response:
    workspace_id = _workspace_id(request)
    metas = platform_of(request).secrets.list_merged(workspace_id)
    return json_response([_meta_json(meta) for meta in metas])


@endpoint(failure="auth check failed")
async def secret_values(request: web.Request) -> web.Response:
    p = platform_of(request)
    workspace_id = _workspace_id(request)
    p.auth.recheck_own_token(request, workspace_id)
    return json_response(p.secrets.values(workspace_id))


@endpoint(failure="failed to save secret")
async def set_secret(request: web.Request) -> web.Response:
    p = platform_of(request)
    workspace_id = _workspace_id(request)
    key, value = _key_value(await request.read())
    p.secrets.set(workspace_id, key, value)
    logger.info("secret_set", extra={"workspace_id": workspace_id, "key": key})
    return json_response({"status": "saved", "key": key})


@endpoint(failure="failed to delete secret")
async def delete_secret(request: web.Request) -> web.Response:
    p = platform_of(request)
    workspace_id = _workspace_id(request)
    key = request.match_info["key"]
    if not p.secrets.delete(workspace_id, key):
        raise NotFound("secret not found")
    return json_response({"status": "deleted", "key": key})


@endpoint(failure="query failed")
async def list_global(request: web.Request) -> web.Response:
    p = platform_of(request)
    p.auth.require_admin(request)
    return json_response([_meta_json(meta) for meta in p.secrets.list_global()])


@endpoint(failure="failed to save")
async def set_global(request: web.Request) -> web.Response:
    p = platform_of(request)
    p.auth.require_admin(request)
    key, value = _key_value(await request.read())
    p.secrets.set_global(key, value)
    logger.info("global_secret_set", extra={"key": key})
    return json_response({"status": "saved", "key": key, "scope": "global"})


@endpoint(failure="failed to delete")
async def delete_global(request: web.Request) -> web.Response:
    p = platform_of(request)
    p.auth.require_admin(request)
    key = request.match_info["key"]
    if not p.secrets.delete_global(key):
        raise NotFound("secret not found")
    return json_response({"status": "deleted", "key": key, "scope": "global"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/workspaces/{id}/secrets", list_secrets)
    app.router.add_get("/workspaces/{id}/secrets/values", secret_values)
    app.router.add_post("/workspaces/{id}/secrets", set_secret)
    app.router.add_put("/workspaces/{id}/secrets", set_secret)
    app.router.add_delete("/workspaces/{id}/secrets/{key}", delete_secret)
    app.router.add_get("/admin/secrets", list_global)
    app.router.add_post("/admin/secrets", set_global)
    app.router.add_delete("/admin/secrets/{key}", delete_global)
