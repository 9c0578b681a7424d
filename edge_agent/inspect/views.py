"""The JSON shapes of the inspector's API (documented in docs/inspector.md).

Everything that leaves the store goes through here, and so through the
:class:`~edge_agent.inspect.store.Masker`: header values, paths, bodies and timeline
data are masked unless the inspector runs with ``reveal``.
"""

from __future__ import annotations

import json
from typing import Any, Final

from edge_agent.inspect.store import Exchange, Masker, Side

#: Bytes of a binary body shown as hex.
HEX_HEAD: Final = 256

#: Content types shown as text (besides text/*).
_TEXTUAL: Final = ("json", "xml", "javascript", "x-www-form-urlencoded", "event-stream", "yaml")


def summary(exchange: Exchange, masker: Masker) -> dict[str, Any]:
    """One row of ``GET /api/requests`` (and of the ``/api/events`` stream)."""
    facts = exchange.a2a
    return {
        "id": exchange.id,
        "time": exchange.time,
        "method": exchange.method,
        "path": masker.text(exchange.path),
        "status": exchange.status,
        "duration": exchange.ms(exchange.done_at),
        "bytes": exchange.response.size,
        "bytes_in": exchange.request.size,
        "state": exchange.state,
        "error": masker.text(exchange.error) if exchange.error else None,
        "kind": exchange.kind,
        "duplicate": exchange.duplicate,
        "replay_of": exchange.replay_of,
        "a2a": _a2a(facts, masker) if facts is not None else None,
    }


def detail(exchange: Exchange, masker: Masker) -> dict[str, Any]:
    """``GET /api/requests/{id}``: the row plus heads, bodies, timing and timeline."""
    row = summary(exchange, masker)
    row["request"] = side(exchange.request, masker)
    row["response"] = side(exchange.response, masker)
    row["timing"] = {
        "queued": exchange.ms(exchange.request.first_at),
        "first_byte": exchange.ms(exchange.response.first_at),
        "done": exchange.ms(exchange.done_at),
    }
    row["timeline"] = [_entry(entry, masker) for entry in exchange.timeline]
    row["timeline_dropped"] = exchange.timeline_dropped
    return row


def side(part: Side, masker: Masker) -> dict[str, Any]:
    return {
        "headers": masker.headers(part.headers),
        "body": body(part, masker),
    }


def body(part: Side, masker: Masker) -> dict[str, Any]:
    """A body as the page shows it: JSON pretty-printed, text as text, else hex."""
    view: dict[str, Any] = {
        "size": part.size,
        "captured": len(part.body),
        "truncated": part.truncated,
        "complete": part.complete,
    }
    data = bytes(part.body)
    if not data:
        view["encoding"] = "empty"
        return view
    text = _as_text(data, part.headers)
    if text is None:
        view["encoding"] = "binary"
        view["hex"] = data[:HEX_HEAD].hex(" ")
        return view
    pretty = _pretty_json(text) if not part.truncated else None
    view["encoding"] = "json" if pretty is not None else "text"
    view["text"] = masker.text(pretty if pretty is not None else text)
    return view


def _as_text(data: bytes, headers: list[tuple[str, str]]) -> str | None:
    """The body as text when its headers (or its bytes) say it is text, else None."""
    content_type = content_encoding = ""
    for name, value in headers:
        lname = name.lower()
        if lname == "content-type":
            content_type = value.lower()
        elif lname == "content-encoding":
            content_encoding = value.lower()
    if content_encoding not in ("", "identity"):
        return None  # compressed: shown as it went
    textual = content_type.startswith("text/") or any(t in content_type for t in _TEXTUAL)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(data) - 3:  # not just a character cut at the capture limit
            return data.decode("utf-8", "replace") if textual else None
        text = data[: exc.start].decode("utf-8")
    if textual or text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text):
        return text
    return None


def _pretty_json(text: str) -> str | None:
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return None


def _a2a(facts: dict[str, Any], masker: Masker) -> dict[str, Any]:
    return {
        "method": facts["method"],
        "id": facts["id"],
        "messageId": facts["messageId"],
        "taskIds": [masker.text(t) for t in facts["taskIds"]],
        "contextIds": [masker.text(c) for c in facts["contextIds"]],
    }


def _entry(entry: dict[str, Any], masker: Masker) -> dict[str, Any]:
    if "data" not in entry:
        return entry
    return {**entry, "data": masker.text(entry["data"])}
