"""What a poll-mode workspace does with its inbox besides reading it (contract 3.11, 11).

* ``POST /workspaces/:id/activity/ack`` ("next" only; gin's 404 in "current"):
  ``{"acked_seq": N}`` records the highest activity ``seq`` the workspace has handled.
  The stored value only ever grows (a stale or repeated ack is a no-op) and is
  answered as ``{"last_acked_seq": stored}``, so a poller can see that it is behind.
  400 ``acked_seq is required`` (missing, ``null``, not an integer, not JSON) or
  ``acked_seq must be >= 0``; 500 ``failed to record ack``. core-next uses the value
  to prune only acknowledged rows; the stand-in never prunes, it only keeps it.
* ``POST /workspaces/:id/notify`` (both generations, row 13): ``{"message": text,
  "attachments"?: [{uri, name, mimeType?, size?}]}`` → ``{"status": "sent"}``. How an
  agent answers a canvas caller; like the real one it also writes an ``a2a_receive``
  row with ``method: "notify"`` on the same workspace (a naive poller sees its own
  answers). 400 ``message is required`` / ``attachment[i]: uri and name are
  required``; 404 ``workspace not found``. The canvas broadcast is not modelled: the
  row is the only trace (its ``request_body`` holds the message).

Both are behind WorkspaceAuth (admin token, or a live token of ``:id``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from devplatform.a2aqueue import Activity
from devplatform.binding import Field, Kind, bind
from devplatform.db import now_rfc3339, uuid_param
from devplatform.endpoint import endpoint, json_response, platform_of
from devplatform.errors import BadRequest, NotFound

ACK_FIELDS = (Field("acked_seq", Kind.NULLABLE_INT),)
NOTIFY_FIELDS = (
    Field("message", Kind.STRING, required=True),
    Field("attachments", Kind.RAW),
)
#: Longest summary of a notify row (the message itself is kept whole in the body).
SUMMARY_CHARS = 256


@endpoint(invalid_body="acked_seq is required", failure="failed to record ack")
async def ack(request: web.Request) -> web.Response:
    p = platform_of(request)
    workspace_id = request.match_info["id"]
    p.auth.require_workspace(request, workspace_id)
    acked = bind(await request.read(), ACK_FIELDS)["acked_seq"]
    if acked is None:
        raise BadRequest("acked_seq is required")
    if acked < 0:
        raise BadRequest("acked_seq must be >= 0")
    canonical = uuid_param(workspace_id)
    with p.db.transaction():
        p.db.execute(
            "INSERT INTO inbox_delivery_state (workspace_id, last_acked_seq, updated_at)"
            " VALUES (?, ?, ?) ON CONFLICT (workspace_id) DO UPDATE SET"
            " last_acked_seq = MAX(last_acked_seq, excluded.last_acked_seq),"
            " updated_at = excluded.updated_at",
            (canonical, acked, now_rfc3339()),
        )
        stored = p.db.scalar(
            "SELECT last_acked_seq FROM inbox_delivery_state WHERE workspace_id = ?",
            (canonical,),
        )
    return json_response({"last_acked_seq": stored})


@endpoint(invalid_body="message is required")
async def notify(request: web.Request) -> web.Response:
    p = platform_of(request)
    workspace_id = request.match_info["id"]
    p.auth.require_workspace(request, workspace_id)
    payload = bind(await request.read(), NOTIFY_FIELDS)
    attachments = _attachments(payload["attachments"])
    workspace = p.workspaces.get(uuid_param(workspace_id))
    if workspace is None:
        raise NotFound("workspace not found")
    body: dict[str, Any] = {"message": payload["message"]}
    if attachments:
        body["attachments"] = attachments
    p.activity.record(
        Activity(
            workspace_id=workspace.id,
            activity_type="a2a_receive",
            status="ok",
            method="notify",
            summary=payload["message"][:SUMMARY_CHARS],
            request_body=body,
        )
    )
    return json_response({"status": "sent"})


def _attachments(raw: Any) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadRequest("message is required")  # gin cannot bind it: the same 400
    for index, item in enumerate(raw):
        fields = item if isinstance(item, dict) else {}
        if not all(isinstance(fields.get(k), str) and fields[k] for k in ("uri", "name")):
            raise BadRequest(f"attachment[{index}]: uri and name are required")
    return raw


def add_routes(app: web.Application, *, next_generation: bool) -> None:
    app.router.add_post("/workspaces/{id}/notify", notify)
    if next_generation:
        app.router.add_post("/workspaces/{id}/activity/ack", ack)
