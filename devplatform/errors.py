"""The dev platform's exception tree.

::

    DevPlatformError
     ├── ConfigError          bad flags or an unusable database path (CLI exits 2)
     ├── StoreError           a database statement failed (the route's 500 text)
     ├── BindError            a request body did not bind (the route's 400 text)
     ├── UnsafeURLError       an agent URL broke an SSRF rule (register: 400, dispatch: 502)
     ├── UpstreamError        the A2A dispatch to the agent URL failed
     │    ├── UpstreamBusy         timeout, idle cancel, EOF, reset: the call is queued (202)
     │    ├── UpstreamUnreachable  refused, DNS failure, header timeout: 502
     │    └── UpstreamReadError    the response body broke or was too large: 502
     └── ApiError             an HTTP answer the platform contract defines

Everything below ``ApiError`` carries its status, JSON body and headers. Route
handlers raise it; :func:`devplatform.app.error_middleware` is the one place that
turns it into a response. ``BindError`` and ``StoreError`` are turned into an
``ApiError`` by the :func:`devplatform.endpoint.endpoint` decorator, which knows the
route's own 400 and 500 texts (the real platform uses a different text per route).

Error bodies never contain a token, a secret or a secret value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DevPlatformError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(DevPlatformError):
    """The command line or the database path cannot be used."""


class StoreError(DevPlatformError):
    """A database statement failed.

    Also raised, like PostgreSQL would, when a UUID-typed value is not a UUID.
    """


class BindError(DevPlatformError):
    """A JSON body did not bind to the endpoint's payload (Go ``ShouldBindJSON``)."""


class UnsafeURLError(DevPlatformError):
    """An agent URL breaks an SSRF rule. The message is for logs, never for callers."""


class UpstreamError(DevPlatformError):
    """The platform-to-agent HTTP call failed."""


class UpstreamBusy(UpstreamError):
    """Timeout, idle cancel, EOF or connection reset before the response head."""


class UpstreamUnreachable(UpstreamError):
    """Connection refused, DNS failure, connect or header timeout, TLS failure."""


class UpstreamReadError(UpstreamError):
    """The response head arrived but the body could not be read in full.

    ``status`` is the agent's status code; ``too_large`` is true when the body went
    past the response limit (the "next" generation refuses it, "current" truncates).
    """

    def __init__(self, message: str, *, status: int, too_large: bool) -> None:
        super().__init__(message)
        self.status = status
        self.too_large = too_large


class ApiError(DevPlatformError):
    """An HTTP error answer: ``status`` plus a JSON object body and extra headers."""

    status = 500

    def __init__(
        self,
        error: str | None = None,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        payload: dict[str, Any] = dict(body or {})
        if error is not None:
            payload["error"] = error
        super().__init__(payload.get("error", ""))
        if status is not None:
            self.status = status
        self.body = payload
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class PaymentRequired(ApiError):
    status = 402


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class TooManyRequests(ApiError):
    status = 429


class ServerError(ApiError):
    status = 500


class BadGateway(ApiError):
    status = 502


class ServiceUnavailable(ApiError):
    status = 503
