"""Bind JSON bodies the way gin's ``ShouldBindJSON`` binds them into Go structs.

What matters to callers of the real platform, and is reproduced here:

- the body must be one JSON object (an empty body or ``[]`` is an error);
- a field typed ``int`` accepts only a JSON integer: ``1.5`` and ``1.0`` are errors
  (the heartbeat's ``active_tasks`` and ``uptime_seconds`` are such fields);
- ``float64`` fields accept any JSON number, ``string`` fields only strings,
  ``bool`` fields only booleans; ``null`` leaves the zero value;
- ``binding:"required"`` refuses a missing field and a zero value (``""``, ``0``);
- unknown fields are ignored (so "current" ignores ``delivery_mode``).

Every failure raises :class:`~devplatform.errors.BindError`; the route decides the
400 text. Go matches field names case-insensitively; this binder does not.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from devplatform.errors import BindError
from devplatform.gojson import decode_text

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class Kind(enum.Enum):
    STRING = "string"
    INT = "int"
    FLOAT = "float64"
    BOOL = "bool"
    RAW = "json.RawMessage"  # any JSON value, kept as decoded
    OBJECT = "object"  # a nested struct or map; null allowed
    STRING_MAP = "map[string]string"
    NULLABLE_STRING = "*string"
    NULLABLE_INT = "*int"


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    required: bool = False


_ZERO: dict[Kind, Any] = {
    Kind.STRING: "",
    Kind.INT: 0,
    Kind.FLOAT: 0.0,
    Kind.BOOL: False,
    Kind.RAW: None,
    Kind.OBJECT: None,
    Kind.STRING_MAP: None,
    Kind.NULLABLE_STRING: None,
    Kind.NULLABLE_INT: None,
}


def parse_object(body: bytes) -> dict[str, Any]:
    """Decode a body that must be a JSON object (``null`` counts as an empty one)."""
    try:
        value = json.loads(decode_text(body))
    except ValueError as exc:
        raise BindError("invalid JSON") from exc
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BindError("body is not a JSON object")
    return value


def bind(body: bytes, fields: Sequence[Field]) -> dict[str, Any]:
    """Return ``{name: value}`` for every field, zero values filled in."""
    document = parse_object(body)
    bound: dict[str, Any] = {}
    for spec in fields:
        present = spec.name in document and (
            document[spec.name] is not None or spec.kind is Kind.RAW  # RawMessage keeps null
        )
        value = _convert(spec, document[spec.name]) if present else _ZERO[spec.kind]
        if spec.required and not present:
            raise BindError(f"{spec.name} is required")
        if spec.required and value in ("", 0) and not isinstance(value, bool):
            raise BindError(f"{spec.name} is required")
        bound[spec.name] = value
    return bound


def _convert(spec: Field, value: Any) -> Any:
    kind = spec.kind
    if kind in (Kind.STRING, Kind.NULLABLE_STRING):
        return _expect(spec, value, isinstance(value, str))
    if kind in (Kind.INT, Kind.NULLABLE_INT):
        is_int = isinstance(value, int) and not isinstance(value, bool)
        _expect(spec, value, is_int and INT64_MIN <= value <= INT64_MAX)
        return value
    if kind is Kind.FLOAT:
        _expect(spec, value, isinstance(value, (int, float)) and not isinstance(value, bool))
        return float(value)
    if kind is Kind.BOOL:
        return _expect(spec, value, isinstance(value, bool))
    if kind is Kind.OBJECT:
        return _expect(spec, value, isinstance(value, dict))
    if kind is Kind.STRING_MAP:
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return _expect(spec, value, ok)
    return value  # Kind.RAW


def _expect(spec: Field, value: Any, ok: bool) -> Any:
    if not ok:
        raise BindError(
            f"cannot unmarshal {type(value).__name__} into {spec.name} ({spec.kind.value})"
        )
    return value
