"""``POST /workspaces/:id/a2a`` (contract row 8): body limit and caller checks.

No auth middleware on this route. "current": a missing ``X-Workspace-ID`` is a
canvas call with no check at all; a caller id other than the target must show
its own token if it has one. "next": every call needs a credential
(:meth:`~devplatform.auth.Auth.a2a_caller_next`). Caller ids starting with
``webhook:``, ``system:``, ``test:`` or ``channel:`` are refused in both.
"""

from __future__ import annotations

from aiohttp import web

from devplatform.bodies import read_at_most
from devplatform.endpoint import JSON_CONTENT_TYPE, endpoint, platform_of
from devplatform.errors import BadRequest, Forbidden, PayloadTooLarge

SYSTEM_CALLER_PREFIXES = ("webhook:", "system:", "test:", "channel:")


async def read_body(request: web.Request, limit: int, refuse: bool) -> bytes:
    """Read at most ``limit`` bytes. Longer: 413 if ``refuse``, else silently cut
    (the rest is left unread, like Go's ``io.LimitReader``)."""
    try:
        body, over = await read_at_most(request.content, limit)
    except (OSError, ValueError) as exc:
        raise BadRequest("failed to read request body") from exc
    if over and refuse:
        raise PayloadTooLarge(
            f"request body exceeds {limit} byte limit: A2A body exceeds size limit",
            body={"truncated": True, "max_bytes": limit},
        )
    return body


def _x_timeout(request: web.Request) -> bool:
    """True when ``X-Timeout`` is a positive integer (see ``A2AProxy._dispatch``)."""
    raw = request.headers.get("X-Timeout", "").strip()
    return raw.isdigit() and int(raw) > 0


@endpoint(failure="lookup failed")
async def proxy_a2a(request: web.Request) -> web.Response:
    p = platform_of(request)
    target_id = request.match_info["id"]
    body = await read_body(request, p.cfg.max_request_body, refuse=p.cfg.is_next)
    claimed = request.headers.get("X-Workspace-ID", "")
    if claimed.startswith(SYSTEM_CALLER_PREFIXES):
        raise Forbidden("invalid caller ID")
    if p.cfg.is_next:
        caller = p.auth.a2a_caller_next(request)
    else:
        caller = p.auth.a2a_caller_current(request, target_id)
    answer = await p.proxy.handle(target_id, body, caller, _x_timeout(request))
    response = web.Response(body=answer.body, status=answer.status, headers=answer.headers)
    response.headers["Content-Type"] = (
        "application/json" if answer.status < 300 else JSON_CONTENT_TYPE
    )
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_post("/workspaces/{id}/a2a", proxy_a2a)
