"""The bookkeeping of poll delivery, without I/O: which activity rows are calls still to
answer, where the cursor is, what to acknowledge (contract 11; used by :mod:`.poll`).

Theory of operation
-------------------
A "next" platform writes every A2A call to a poll-mode workspace as an ``a2a_receive``
activity row (its ``request_body`` is the JSON-RPC request, its ``summary`` ends with
``(queued for poll)``, it has no ``response_body``) and answers the caller "queued".
The same list also holds rows that are *not* calls to answer: calls the platform pushed
while the workspace was in push mode (they carry the agent's answer or an error), and
the rows ``POST /notify`` writes for our own answers to canvas callers (``method:
"notify"``). :func:`parse_call` tells them apart.

:class:`Inbox` walks the rows in the order they were written:

* ``cursor``: the id of the last row dealt with; the next fetch asks ``since_id=`` it
  and gets the rows after it, oldest first. When the platform answers 410 (the row was
  pruned), :meth:`Inbox.cursor_lost` forgets it and the next fetch takes the newest
  rows without a cursor (newest first: :meth:`Inbox.chronological` turns them around).
* ``floor``: the highest ``seq`` handled, by this process or, as the platform's
  ``last_acked_seq`` says, by an earlier one. A row at or below it is never handled
  again, which is what keeps a restart without cursor from answering twice.
* ``answered``: the ``messageId`` of the last :data:`MAX_REMEMBERED` calls answered. A
  caller that sends the same message again (a retry after an error, the platform's
  re-send of a queued call) is not answered a second time.

A row is *done* once it was handled or skipped (:meth:`Inbox.done`); only then does the
cursor move past it, so a row whose handling failed is fetched again. :meth:`to_ack`
gives the ``seq`` to acknowledge after a batch (the highest done, if not yet acked).
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

#: How many answered message ids are remembered (oldest forgotten first).
MAX_REMEMBERED: Final = 4096
#: The platform's summary suffix of a call queued for a poll-mode workspace
#: (core-next ``logA2AReceiveQueued``; the dev platform writes the same).
QUEUED_MARKER: Final = "(queued for poll)"
#: Longer message ids are not trusted as keys (real ones are UUIDs).
MAX_MESSAGE_ID_LENGTH: Final = 256


@dataclasses.dataclass(frozen=True, slots=True)
class InboundCall:
    """One call to answer. ``caller_id``: the calling workspace, None for a canvas user."""

    row_id: str
    seq: int | None
    caller_id: str | None
    message_id: str
    context_id: str | None
    body: bytes = dataclasses.field(repr=False)


def parse_call(row: Mapping[str, Any]) -> InboundCall | None:
    """The call in ``row``, or None when the row is not a queued call to answer."""
    if row.get("activity_type") != "a2a_receive" or row.get("method") == "notify":
        return None
    summary = row.get("summary")
    if not isinstance(summary, str) or not summary.endswith(QUEUED_MARKER):
        return None  # pushed while in push mode: already answered (or failed) then
    if row.get("response_body") is not None:
        return None
    request = row.get("request_body")
    params = request.get("params") if isinstance(request, dict) else None
    message = params.get("message") if isinstance(params, dict) else None
    if not isinstance(message, dict):
        return None
    message_id = message.get("messageId")
    row_id = row.get("id")
    if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_MESSAGE_ID_LENGTH:
        return None  # the platform adds one to every call: anything else is not a call
    if not isinstance(row_id, str):
        return None
    context = message.get("contextId")
    return InboundCall(
        row_id=row_id,
        seq=_seq(row),
        caller_id=_text(row.get("source_id")),
        message_id=message_id,
        context_id=context if isinstance(context, str) else None,
        body=json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode(),
    )


class Inbox:
    """Cursor, floor and answered ids of one workspace (see the module docstring)."""

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self.cursor: str | None = None
        self.floor = 0
        self._acked = 0
        self._answered: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._max = max_remembered

    def cursor_lost(self) -> None:
        """The platform no longer knows the cursor row (410): start over without it."""
        self.cursor = None

    def raise_floor(self, seq: int) -> None:
        """Rows up to ``seq`` were handled (the platform's ``last_acked_seq``)."""
        self.floor = max(self.floor, seq)
        self._acked = max(self._acked, seq)

    @staticmethod
    def chronological(rows: Sequence[Mapping[str, Any]], *, with_cursor: bool) -> list[Any]:
        """Rows oldest first (a fetch without cursor answers newest first)."""
        return list(rows) if with_cursor else list(reversed(rows))

    def to_handle(self, row: Mapping[str, Any]) -> InboundCall | None:
        """The call in ``row`` if it still needs an answer."""
        call = parse_call(row)
        if call is None:
            return None
        if call.seq is not None and call.seq <= self.floor:
            return None
        if call.message_id in self._answered:
            return None
        return call

    def done(self, row: Mapping[str, Any], call: InboundCall | None = None) -> None:
        """``row`` was dealt with (``call``: it was answered): move the cursor past it."""
        row_id = row.get("id")
        if isinstance(row_id, str):
            self.cursor = row_id
        seq = _seq(row)
        if seq is not None:
            self.floor = max(self.floor, seq)
        if call is not None:
            self.remember(call.message_id)

    def remember(self, message_id: str) -> None:
        self._answered[message_id] = None
        self._answered.move_to_end(message_id)
        while len(self._answered) > self._max:
            self._answered.popitem(last=False)

    def answered(self, message_id: str) -> bool:
        return message_id in self._answered

    def to_ack(self) -> int | None:
        """The ``seq`` to acknowledge now, or None when nothing new was done."""
        return self.floor if self.floor > self._acked else None

    def acked(self, stored: int) -> None:
        """The platform acknowledged up to ``stored`` (its answer to the ack)."""
        self._acked = max(self._acked, stored)
        self.floor = max(self.floor, stored)


def _seq(row: Mapping[str, Any]) -> int | None:
    seq = row.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
