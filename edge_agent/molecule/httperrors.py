"""Where platform HTTP answers become :mod:`edge_agent.molecule.errors` exceptions.

:class:`edge_agent.molecule.client.PlatformClient` is the only caller: a status maps to
an exception here and nowhere else. :func:`error_for` covers the API calls;
:func:`call_error_for` the A2A proxy (``POST /workspaces/:id/a2a``, contract 3.8),
whose 404 is about the peer and whose 2xx may be a "queued" instead of an answer.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from typing import Any, Final

import httpx

from edge_agent.molecule.errors import (
    BadRequest,
    CallDenied,
    CallQueued,
    CallTimedOut,
    MoleculeError,
    NotFound,
    PeerCallError,
    PeerError,
    PeerNotFound,
    PeerUnreachable,
    PlatformRejected,
    PlatformUnavailable,
    RateLimited,
    TokenRejected,
    UnexpectedResponse,
)

#: Longest piece of the platform's ``error`` text quoted in our exception messages.
MAX_ERROR_TEXT: Final = 200

#: Upper bound on a ``Retry-After`` we obey, so a bogus header cannot park us for days.
MAX_RETRY_AFTER: Final = 600.0

#: Wait used for a 429 that names no delay (the platform always sends one).
DEFAULT_RATE_LIMIT_WAIT: Final = 5.0


def error_for(what: str, response: httpx.Response, payload: dict[str, Any]) -> MoleculeError:
    """Map a non-2xx answer (``payload``: its decoded JSON object, or ``{}``)."""
    status = response.status_code
    message = f"{what}: HTTP {status}"
    detail = payload.get("error")
    if isinstance(detail, str) and detail:
        message = f"{message}: {detail[:MAX_ERROR_TEXT]}"
    return _error_class(status, message, response, payload)


def _error_class(
    status: int, message: str, response: httpx.Response, payload: dict[str, Any]
) -> MoleculeError:
    retry_after = _retry_after(response.headers.get("retry-after"), payload.get("retry_after"))
    if status == 429:
        return RateLimited(message, retry_after=retry_after or DEFAULT_RATE_LIMIT_WAIT)
    if status >= 500:
        return PlatformUnavailable(message, retry_after=retry_after)
    if status == 401:
        return TokenRejected(message)
    if status == 400:
        return BadRequest(message)
    if status == 404:
        return NotFound(message)
    if status < 400:
        return UnexpectedResponse(f"{message} (redirect to {response.headers.get('location')})")
    return PlatformRejected(message, status=status)


def call_error_for(target: str, status: int, payload: dict[str, Any]) -> MoleculeError:
    """Map a proxy answer that is not the peer's reply (``payload``: its JSON object)."""
    detail = payload.get("error")
    text = f": {detail[:MAX_ERROR_TEXT]}" if isinstance(detail, str) and detail else ""
    message = f"call {target}: HTTP {status}{text}"
    if status == 202 or payload.get("status") == "queued":
        return _queued(target, status, payload)
    mapped: dict[int, type[PeerCallError]] = {
        403: CallDenied,
        404: PeerNotFound,
        502: PeerUnreachable,
        503: PeerUnreachable,
        504: CallTimedOut,
    }
    if status in mapped:
        return mapped[status](message, status=status)
    if status == 401:
        return TokenRejected(f"{message} (the calling workspace's token was refused)")
    if status == 400:
        return BadRequest(message)
    if status == 429:
        wait = _retry_after(None, payload.get("retry_after")) or DEFAULT_RATE_LIMIT_WAIT
        return RateLimited(message, retry_after=wait)
    if status >= 300:  # the peer's own error status, relayed (or 402 budget, 5xx)
        return PeerError(message, status=status)
    return PeerCallError(message, status=status)


_QUEUED_WHY: Final = {
    "poll": "the peer fetches its calls from the platform (poll delivery)",
    "push-async": "the peer is still working on it",
}


def _queued(target: str, status: int, payload: dict[str, Any]) -> CallQueued:
    why = _QUEUED_WHY.get(str(payload.get("delivery_mode")), "the peer is busy or slow")
    queue_id = payload.get("queue_id")
    return CallQueued(
        f"call {target}: queued by the platform ({why}); it may be delivered later, but "
        "its answer will not come back to this caller",
        status=status,
        queue_id=queue_id if isinstance(queue_id, str) else None,
    )


def _retry_after(header: str | None, body_value: Any) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or a body field."""
    seconds: float | None = None
    if header:
        seconds = _parse_retry_after(header.strip())
    if seconds is None and isinstance(body_value, int | float) and not isinstance(body_value, bool):
        seconds = float(body_value)
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _parse_retry_after(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def error_payload(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
