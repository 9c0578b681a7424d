"""The real platform's CORS middleware (gin-contrib/cors), as far as an agent sees it.

core registers ``cors.New`` first on every route, unknown ones included, with
``AllowOrigins`` from ``CORS_ORIGINS`` (comma-separated; default the canvas dev
servers ``http://localhost:3000`` and ``http://localhost:3001``). The library's rule:

* no ``Origin`` header: not a CORS request, nothing happens;
* ``Origin`` equal to ``http://<Host>`` or ``https://<Host>``: same origin, nothing
  happens (this is what the Molecule SDK sends by default, ``Origin: <platform url>``);
* any other origin not in the allowed list: **403 with an empty body** before any
  handler runs (so an agent pointed at the platform through a different host name
  sees a bare 403, not the route's JSON error);
* an allowed origin: the answer carries ``Access-Control-Allow-Origin`` and
  ``-Credentials``; a preflight (``OPTIONS`` with ``Access-Control-Request-Method``)
  is answered 204 with the allowed methods and headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from aiohttp import web

from devplatform.config import CORS_DEFAULT_ORIGINS
from devplatform.endpoint import Handler, platform_of

ALLOW_METHODS: Final = "GET,POST,PUT,PATCH,DELETE,OPTIONS"
ALLOW_HEADERS: Final = "Origin,Content-Type,X-Workspace-ID,Authorization"


def parse_origins(raw: str) -> tuple[str, ...]:
    """``CORS_ORIGINS``: comma-separated origins; empty means the default list."""
    origins = tuple(part.strip() for part in raw.split(",") if part.strip())
    return origins or CORS_DEFAULT_ORIGINS


def same_origin(origin: str, host: str) -> bool:
    return origin in (f"http://{host}", f"https://{host}")


def allowed(origin: str, host: str, origins: Sequence[str]) -> bool:
    return same_origin(origin, host) or origin in origins or "*" in origins


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    if not origin or same_origin(origin, request.host):
        return await handler(request)
    origins = platform_of(request).cfg.cors_origins
    if not allowed(origin, request.host, origins):
        return web.Response(status=403)  # gin's AbortWithStatus: no body, no content type
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        preflight = {
            **headers,
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
        }
        return web.Response(status=204, headers=preflight)
    response = await handler(request)
    response.headers.update(headers)
    return response
