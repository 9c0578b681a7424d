"""``GET /workspaces/:id/activity`` (contract 3.11 and 11): the filters of each generation.

"current" (core@7cf77f27) knows ``type``, ``source`` (``canvas``: no caller,
``agent``: a caller) and ``limit`` (1..500, default 100) and answers newest first; any
other parameter is ignored.

"next" adds the poll-mode cursor and its companions, checked in core-next's order:

* ``peer_id`` (a UUID, else 400 ``peer_id must be a UUID``): rows this peer sent or got;
* ``before_ts`` (RFC3339, else 400): rows strictly older;
* ``since_secs`` (a positive integer, else 400; at most 30 days): rows that recent;
* ``since_id``: rows strictly after that row of *this* workspace, **oldest first** (a
  poller handles calls in the order they came); an unknown id, or one of another
  workspace, is 410 with the real text, and the poller starts over without it;
* ``include=peer_info``: each row gains ``peer_name`` / ``peer_role`` (when its caller
  still exists) and ``agent_card_url`` (``<platform url>/registry/discover/<caller>``).

Deliberate differences: "strictly after" is by insertion order (``seq``), not by
``created_at`` (the real query, ``created_at > cursor``, can skip a row written in the
same microsecond); the ``attachments`` projection of ``include=peer_info`` is not
modelled. "next" rows carry their ``seq``, which a poller acknowledges with ``POST
/activity/ack`` (:mod:`devplatform.routes_inbox`).
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Final

from devplatform.db import Database, is_uuid, uuid_param
from devplatform.errors import ApiError, BadRequest

MAX_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 100
#: ``since_secs`` is capped at 30 days.
MAX_SINCE_SECS: Final = 30 * 24 * 60 * 60

CURSOR_LOST: Final = (
    "since_id cursor not found (row may have been pruned or belongs to a different "
    "workspace); omit since_id to reset"
)


@dataclasses.dataclass(frozen=True, slots=True)
class ActivityQuery:
    activity_type: str = ""
    source: str = ""
    limit: int = DEFAULT_LIMIT
    peer_id: str = ""
    before: datetime.datetime | None = None
    since_secs: int = 0
    since_id: str = ""
    peer_info: bool = False


def parse_query(params: Any, *, next_generation: bool) -> ActivityQuery:
    """The query of one request (``params``: its query mapping), or the 400."""
    base = ActivityQuery(
        activity_type=params.get("type", ""),
        source=params.get("source", ""),
        limit=_limit(params.get("limit", ""), next_generation),
    )
    if not next_generation:
        return base
    peer_id = params.get("peer_id", "")
    if peer_id and not is_uuid(peer_id):
        raise BadRequest("peer_id must be a UUID")
    include = {part.strip() for part in params.get("include", "").split(",")}
    return dataclasses.replace(
        base,
        peer_id=peer_id,
        before=_before(params.get("before_ts", "")),
        since_secs=_since_secs(params.get("since_secs", "")),
        since_id=params.get("since_id", ""),
        peer_info="peer_info" in include,
    )


def _limit(raw: str, next_generation: bool) -> int:
    if not raw.isdigit() or int(raw) <= 0:
        return DEFAULT_LIMIT
    if int(raw) > MAX_LIMIT:
        return MAX_LIMIT if next_generation else DEFAULT_LIMIT
    return int(raw)


def _before(raw: str) -> datetime.datetime | None:
    if not raw:
        return None
    try:
        when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or "T" not in raw:
        raise BadRequest("before_ts must be an RFC3339 timestamp (e.g. 2026-05-01T00:00:00Z)")
    return when.astimezone(datetime.UTC)


def _since_secs(raw: str) -> int:
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) <= 0:
        raise BadRequest("since_secs must be a positive integer")
    return min(int(raw), MAX_SINCE_SECS)


def select_rows(db: Database, workspace_id: str, query: ActivityQuery) -> list[Any]:
    """The matching rows: oldest first after a cursor, newest first otherwise."""
    canonical = uuid_param(workspace_id)
    where, params = ["workspace_id = ?"], [canonical]
    if query.since_id:
        cursor = db.one(
            "SELECT seq FROM activity_logs WHERE id = ? AND workspace_id = ?",
            (query.since_id, canonical),
        )
        if cursor is None:
            raise ApiError(CURSOR_LOST, status=410)
        where.append("seq > ?")
        params.append(cursor["seq"])
    _filters(query, where, params)
    order = "ASC" if query.since_id else "DESC"
    sql = f"SELECT * FROM activity_logs WHERE {' AND '.join(where)} ORDER BY seq {order} LIMIT ?"
    return db.all(sql, (*params, query.limit))


def _filters(query: ActivityQuery, where: list[str], params: list[Any]) -> None:
    if query.activity_type:
        where.append("activity_type = ?")
        params.append(query.activity_type)
    if query.source not in ("", "canvas", "agent"):  # checked after the cursor, as in Go
        raise BadRequest("source must be 'canvas' or 'agent'")
    if query.source:
        where.append("source_id IS NULL" if query.source == "canvas" else "source_id IS NOT NULL")
    if query.peer_id:
        where.append("(source_id = ? OR target_id = ?)")
        params += [uuid_param(query.peer_id)] * 2
    if query.before is not None:
        where.append("julianday(created_at) < julianday(?)")
        params.append(query.before.strftime("%Y-%m-%dT%H:%M:%S.%f"))
    if query.since_secs:
        where.append("julianday(created_at) >= julianday('now', ?)")
        params.append(f"-{query.since_secs} seconds")
