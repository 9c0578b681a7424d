"""Errors of the relay, and the one place where they become HTTP answers.

The tree::

    RelayError                       base of everything ``relay`` raises
    ├── PublicError                  answered to a public caller as the relay's JSON error
    │   ├── BadRequest               400 bad_request
    │   ├── CallerUnauthorized       401 caller_unauthorized (+ WWW-Authenticate)
    │   ├── MetricsUnauthorized      401 metrics_unauthorized (/_edge/metrics, --metrics-token)
    │   ├── UnknownTunnel            404 unknown_tunnel
    │   ├── NotFound                 404 not_found (an unknown /_edge/ path)
    │   ├── TunnelRevoked            410 tunnel_revoked (its token was revoked)
    │   ├── RequestTimeout           408 request_timeout (slow headers or body)
    │   ├── BodyTooLarge             413 body_too_large
    │   ├── TooManyStreams           429 too_many_streams
    │   ├── TooManyClientStreams     429 too_many_client_streams (one caller address)
    │   ├── RateLimited              429 rate_limited
    │   ├── HeadersTooLarge          431 headers_too_large
    │   ├── UpstreamUnreachable      502 target_unreachable (RESET CONNECT_ERROR)
    │   ├── UpstreamFailed           502 target_failed (any other RESET before the head)
    │   ├── AgentOffline             503 agent_offline (+ Retry-After)
    │   ├── AgentUnavailable         503 agent_unavailable (+ Retry-After)
    │   ├── NodeUnreachable          503 node_unreachable (+ Retry-After; relay cluster)
    │   ├── RelayDraining            503 relay_draining (+ Retry-After; shutting down)
    │   ├── UpstreamTimeout          504 target_timeout (RESET TARGET_TIMEOUT)
    │   └── ResponseTimeout          504 response_timeout (no head within the limit)
    ├── AgentRefused                 an agent's upgrade refused before the WebSocket opens
    │   ├── BadAgentRequest          400 bad_name / subprotocol_required / protocol_version
    │   ├── AgentUnauthorized        401 agent_unauthorized (missing/invalid/revoked token)
    │   ├── NameForbidden            403 name_forbidden (token for another name, reserved)
    │   ├── NameInUse                409 name_in_use (open mode: a live name, another machine)
    │   ├── AgentBackoff             429 agent_backoff (+ Retry-After; cut for a protocol error)
    │   └── RelayNotAccepting        503 relay_draining (shutting down: retry later)
    └── RelayConfigError             bad settings, unreadable token store or certificate

``Upstream*`` name what the caller is told about the agent's local target (the agent's
own ``edge_agent.errors.Target*`` are the failures it sees there; the codes on the wire
stay ``target_*``). :mod:`relay.h1` adds its own PublicErrors for malformed requests.

:func:`http_error` is the only place where an error becomes a status, a body and headers;
:func:`error_for_reset` is the only place where an agent's RESET code becomes a
:class:`PublicError`. Secrets never enter a message: messages are fixed texts or name
tunnels, never tokens or Authorization values.
"""

from __future__ import annotations

import json
from typing import ClassVar, Final

from wire import ErrorCode

#: Seconds a caller is told to wait (Retry-After) on a 503.
RETRY_AFTER_SECONDS: Final = 5

#: Header that marks an answer as the relay's own rather than the agent's.
ERROR_HEADER: Final = "x-edge-error"


class RelayError(Exception):
    """Base class of every error raised by the ``relay`` package."""


class PublicError(RelayError):
    """An answer to a public caller. Subclasses fix ``code`` and ``status``."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "the relay failed"
    #: Headers the answer adds (the cluster's hop refusal).
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        return str(self.args[0])


class BadRequest(PublicError):
    code, status, default_message = "bad_request", 400, "the request is malformed"


class CallerUnauthorized(PublicError):
    code, status = "caller_unauthorized", 401
    default_message = "this tunnel requires caller credentials"

    def __init__(self, schemes: tuple[str, ...], realm: str) -> None:
        super().__init__()
        self.schemes = schemes
        self.realm = realm


class MetricsUnauthorized(PublicError):
    code, status = "metrics_unauthorized", 401
    default_message = "the metrics need the relay's metrics token (Authorization: Bearer)"


class UnknownTunnel(PublicError):
    code, status, default_message = "unknown_tunnel", 404, "no tunnel by that name"


class NotFound(PublicError):
    code, status, default_message = "not_found", 404, "no such relay endpoint"


class RequestTimeout(PublicError):
    code, status, default_message = "request_timeout", 408, "the request was sent too slowly"


class BodyTooLarge(PublicError):
    code, status, default_message = "body_too_large", 413, "the request body is too large"


class TooManyStreams(PublicError):
    code, status = "too_many_streams", 429
    default_message = "too many concurrent requests for this tunnel"


class TooManyClientStreams(PublicError):
    code, status, default_message = (
        "too_many_client_streams",
        429,
        "this address has too many requests in flight on this tunnel",
    )


class RateLimited(PublicError):
    code, status, default_message = "rate_limited", 429, "the agent refused: over a limit"


class HeadersTooLarge(PublicError):
    code, status, default_message = "headers_too_large", 431, "the request headers are too large"


class UpstreamUnreachable(PublicError):
    code, status, default_message = (
        "target_unreachable",
        502,
        "the agent could not reach its target",
    )


class UpstreamFailed(PublicError):
    code, status, default_message = "target_failed", 502, "the agent's target failed"


class TunnelRevoked(PublicError):
    code, status = "tunnel_revoked", 410
    default_message = "this tunnel's token was revoked: the tunnel is gone"


class AgentOffline(PublicError):
    code, status, default_message = "agent_offline", 503, "the agent for this tunnel is offline"


class AgentUnavailable(PublicError):
    code, status, default_message = "agent_unavailable", 503, "the agent is paused or draining"


class NodeUnreachable(PublicError):
    """Relay cluster: the node that holds the tunnel's session cannot be reached (the
    agent may be fine; that node is down or cut off)."""

    code, status, default_message = (
        "node_unreachable",
        503,
        "the relay node that holds this tunnel cannot be reached",
    )


class RelayDraining(PublicError):
    code, status, default_message = "relay_draining", 503, "the relay is shutting down"


class UpstreamTimeout(PublicError):
    code, status, default_message = "target_timeout", 504, "the agent's target timed out"


class ResponseTimeout(PublicError):
    code, status, default_message = "response_timeout", 504, "no response from the agent in time"


class AgentRefused(RelayError):
    """An agent's upgrade request is answered with plain HTTP instead of a WebSocket."""

    code: ClassVar[str] = "agent_refused"
    status: ClassVar[int] = 400


class BadAgentRequest(AgentRefused):
    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]  # per instance: bad_name, subprotocol_required


class AgentUnauthorized(AgentRefused):
    code, status = "agent_unauthorized", 401


class NameForbidden(AgentRefused):
    code, status = "name_forbidden", 403


class NameInUse(AgentRefused):
    """Open mode: the name is held by a live session of another machine."""

    code, status = "name_in_use", 409


class AgentBackoff(AgentRefused):
    """The agent was cut off for breaking the protocol a moment ago (:mod:`relay.penalty`)."""

    code, status = "agent_backoff", 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RelayNotAccepting(AgentRefused):
    code, status = "relay_draining", 503


class RelayConfigError(RelayError):
    """Bad settings, or a state file or certificate that cannot be used."""


_RETRY_AFTER: Final = frozenset({503})


def http_error(exc: PublicError | AgentRefused) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Return ``(status, headers, body)`` of the relay's answer for ``exc``.

    The body is ``{"error": {"code": ..., "message": ...}}``; ``x-edge-error`` carries the
    code; 503 adds Retry-After and 401 (caller auth) a WWW-Authenticate per scheme.
    """
    message = exc.message if isinstance(exc, PublicError) else str(exc)
    body = json.dumps({"error": {"code": exc.code, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (ERROR_HEADER.encode(), exc.code.encode()),
        (b"cache-control", b"no-store"),
    ]
    if isinstance(exc, PublicError):
        headers.extend(exc.extra_headers)
    if exc.status in _RETRY_AFTER:
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    if isinstance(exc, AgentBackoff):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    if isinstance(exc, MetricsUnauthorized):
        headers.append((b"www-authenticate", b'Bearer realm="edge-relay metrics"'))
    if isinstance(exc, CallerUnauthorized):
        for scheme in exc.schemes:
            challenge = f'{scheme.capitalize()} realm="{exc.realm}"'
            headers.append((b"www-authenticate", challenge.encode()))
    return exc.status, headers, body


_RESET_ERRORS: Final[dict[ErrorCode, type[PublicError]]] = {
    ErrorCode.CONNECT_ERROR: UpstreamUnreachable,
    ErrorCode.TARGET_TIMEOUT: UpstreamTimeout,
    ErrorCode.UNAVAILABLE: AgentUnavailable,
    ErrorCode.REFUSED_STREAM: AgentUnavailable,
    ErrorCode.LIMIT_EXCEEDED: RateLimited,
}


def error_for_reset(code: ErrorCode) -> PublicError:
    """The caller's answer when the agent resets a stream before its response head."""
    return _RESET_ERRORS.get(code, UpstreamFailed)()
