"""Plugins (contract 3.7): the download an external workspace pulls, and the install
report that only a container workspace can honour.

``GET /workspaces/:id/plugins/:name/download[?source=]``: WorkspaceAuth, then the name
check (400 ``invalid plugin name``), then the handler's own token re-check, then the
source (default ``local://<name>``) is resolved and staged (:mod:`devplatform.plugins`),
its name compared with ``:name`` (400 with ``resolved_name``/``requested_name``), and
the gzip tar is sent whole with ``Content-Type: application/gzip``,
``Content-Disposition``, ``Content-Length``, ``X-Plugin-Name`` and ``X-Plugin-Source``.

``POST /workspaces/:id/plugins {"source"}``: the same resolution, then the copy into the
workspace's container, which an external workspace has not: 503 ``workspace container
not running`` (the answer the Molecule SDK's best-effort report always gets).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from devplatform import plugins
from devplatform.binding import Field, Kind, bind
from devplatform.endpoint import endpoint, platform_of
from devplatform.errors import ApiError, BadRequest, ServiceUnavailable

logger = logging.getLogger(__name__)

INSTALL_FIELDS = (Field("source", Kind.STRING), Field("sha256", Kind.STRING))
#: The install body cap (``PLUGIN_INSTALL_BODY_MAX_BYTES``).
MAX_INSTALL_BODY = 64 * 1024


@endpoint(failure="auth check failed")
async def download(request: web.Request) -> web.StreamResponse:
    p = platform_of(request)
    workspace_id, name = request.match_info["id"], request.match_info["name"]
    p.auth.require_workspace(request, workspace_id)
    if not plugins.valid_name(name):
        raise BadRequest("invalid plugin name")
    p.auth.recheck_own_token(request, workspace_id)
    raw_source = request.query.get("source") or f"local://{name}"
    staged = plugins.stage(raw_source, p.cfg.plugins_dir, p.cfg.plugin_max_bytes)
    if staged.name != name:
        body = {
            "error": f'source resolved to plugin "{staged.name}" but URL requested "{name}"',
            "resolved_name": staged.name,
            "requested_name": name,
        }
        raise ApiError(body=body, status=400)
    archive = await asyncio.to_thread(plugins.pack, staged)
    logger.info(
        "plugin_downloaded",
        extra={"workspace_id": workspace_id, "plugin": name, "bytes": len(archive)},
    )
    headers = {
        "Content-Type": "application/gzip",
        "Content-Disposition": f'attachment; filename="{name}.tar.gz"',
        "X-Plugin-Name": name,
        "X-Plugin-Source": staged.source.raw,
    }
    return web.Response(body=archive, headers=headers)


@endpoint(failure="plugin install failed")
async def install(request: web.Request) -> web.Response:
    p = platform_of(request)
    workspace_id = request.match_info["id"]
    p.auth.require_workspace(request, workspace_id)
    raw = await request.content.read(MAX_INSTALL_BODY + 1)
    if len(raw) > MAX_INSTALL_BODY:
        raise BadRequest("invalid request body")
    payload = bind(raw, INSTALL_FIELDS)
    plugins.stage(payload["source"], p.cfg.plugins_dir, p.cfg.plugin_max_bytes)
    raise ServiceUnavailable("workspace container not running")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/workspaces/{id}/plugins/{name}/download", download)
    app.router.add_post("/workspaces/{id}/plugins", install)
