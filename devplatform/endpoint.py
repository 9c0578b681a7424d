"""Helpers shared by the route modules.

:func:`endpoint` gives a handler the two texts the real platform uses when a body
does not bind (400) and when the database fails (500); it turns ``BindError`` and
``StoreError`` into those ``ApiError`` answers. Every other error is already an
``ApiError`` and reaches :func:`devplatform.app.error_middleware` unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from devplatform import gojson
from devplatform.errors import BadRequest, BindError, ServerError, StoreError
from devplatform.platform import Platform

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PLATFORM_KEY = web.AppKey("platform", Platform)

#: gin's ``c.JSON`` content type.
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def endpoint(
    *, invalid_body: str = "invalid request body", failure: str = "internal error"
) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except BindError as exc:
                raise BadRequest(invalid_body) from exc
            except StoreError as exc:
                raise ServerError(failure) from exc

        return wrapped

    return decorate


def platform_of(request: web.Request) -> Platform:
    return request.app[PLATFORM_KEY]


def json_response(
    value: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A gin-style JSON answer (sorted keys, HTML-escaped, no trailing newline)."""
    response = web.Response(body=gojson.marshal(value), status=status, headers=headers)
    response.headers["Content-Type"] = JSON_CONTENT_TYPE
    return response


def platform_url(request: web.Request) -> str:
    """``EXTERNAL_PLATFORM_URL``, or scheme and host of the request (forwarded ones first)."""
    configured = platform_of(request).cfg.platform_url
    if configured:
        return configured.rstrip("/")
    scheme = request.headers.get("X-Forwarded-Proto") or ("https" if request.secure else "http")
    host = request.headers.get("X-Forwarded-Host") or request.host
    return f"{scheme}://{host}".rstrip("/")
