"""The HTTP server: an aiohttp.web application on its own runner.

Why aiohttp.web and not a raw ASGI app on uvicorn (the relay's choice): the dev
platform serves a few requests per second, has some thirty routes with path
parameters and one A2A client, and aiohttp gives routing, the client and an
in-process runner that binds port 0 in one dependency the project already has.
The relay's raw-ASGI hot path argument does not apply here.

Server settings, on purpose:

- ``client_max_size`` = :data:`~devplatform.config.MAX_API_BODY` (aiohttp's default
  is also 1 MiB) for ``request.read()``; the A2A route reads its body itself with
  the generation's own limit;
- ``handler_cancellation=False`` (aiohttp's default, written down): a caller that
  hangs up does not cancel the handler, so an A2A call already sent to the agent
  completes, like the real proxy's detached forward context;
- the access log is off unless ``-v`` (``aiohttp.access`` at INFO).

:func:`error_middleware` is the one place where errors become HTTP answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from devplatform import (
    cors,
    routes_a2a,
    routes_discovery,
    routes_inbox,
    routes_plugins,
    routes_registry,
    routes_secrets,
    routes_tokens,
    routes_workspaces,
    ssrf,
)
from devplatform.config import MAX_API_BODY, PlatformConfig
from devplatform.endpoint import PLATFORM_KEY, Handler, json_response
from devplatform.errors import ApiError
from devplatform.platform import Platform

logger = logging.getLogger(__name__)

#: gin's answer to an unknown route (and, by default, to a wrong method).
NOT_FOUND_TEXT = "404 page not found"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body, exc.status, exc.headers)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return web.Response(status=404, text=NOT_FOUND_TEXT)
    except web.HTTPRequestEntityTooLarge:
        return json_response({"error": "request body too large"}, 413)
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("unhandled_error", extra={"path": request.path})
        return json_response({"error": "internal error"}, 500)


async def health(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def build_app(platform: Platform) -> web.Application:
    # CORS first, as in core's router: a foreign Origin is refused before anything else.
    app = web.Application(
        middlewares=[cors.cors_middleware, error_middleware], client_max_size=MAX_API_BODY
    )
    app[PLATFORM_KEY] = platform
    app.router.add_get("/health", health)
    for module in (
        routes_workspaces,
        routes_registry,
        routes_discovery,
        routes_secrets,
        routes_tokens,
        routes_a2a,
        routes_plugins,
    ):
        module.add_routes(app)
    routes_inbox.add_routes(app, next_generation=platform.cfg.is_next)
    return app


@dataclass
class RunningServer:
    """A started server; ``port`` is the bound one (useful with port 0)."""

    platform: Platform
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.platform.close()


async def start_server(
    cfg: PlatformConfig,
    host: str,
    port: int,
    *,
    access_log: bool = False,
    resolver: ssrf.Resolver = ssrf.system_resolver,
) -> RunningServer:
    """Open the platform and listen on ``host:port`` (0: any free port)."""
    platform = await Platform.open(cfg, resolver)
    runner = web.AppRunner(
        build_app(platform),
        handler_cancellation=False,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
    )
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        await platform.close()
        raise
    bound = _bound_port(runner, port)
    logger.info(
        "platform_listening",
        extra={"host": host, "port": bound, "generation": cfg.generation.value},
    )
    return RunningServer(platform, runner, host, bound)


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested
