"""JSON the way the Go platform writes and reads it.

The real platform answers with ``gin.H`` maps marshalled by ``encoding/json``:
keys sorted, no spaces, ``<``, ``>``, ``&``, U+2028 and U+2029 escaped, non-ASCII
kept as UTF-8. Its A2A proxy also decodes the caller's body into
``map[string]interface{}`` and marshals it again, so every number goes through
float64 (``1`` stays ``1``, ``12345678901234567890`` becomes
``12345678901234567000``). :func:`marshal` and :func:`loads_generic` reproduce both.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

_HTML_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _escape_html(text: str) -> str:
    # Safe on a whole document: these characters only ever occur inside strings.
    for char, escaped in _HTML_ESCAPES.items():
        text = text.replace(char, escaped)
    return text


def format_float(value: float) -> str:
    """Format a float64 like Go's ``encoding/json`` (``strconv`` 'f' or 'e', shortest)."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError("unsupported value: " + repr(value))
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        sign, digits = exponent[0], exponent[1:]
        if sign == "-" and len(digits) == 2 and digits[0] == "0":
            digits = digits[1]  # Go cleans e-07 up to e-7, but keeps e+21 as is
        return f"{mantissa}e{sign}{digits}"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _encode(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        items = sorted((str(key), item) for key, item in value.items())
        return "{" + ",".join(f"{_encode(key)}:{_encode(item)}" for key, item in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(item) for item in value) + "]"
    raise TypeError(f"cannot marshal {type(value).__name__}")


def marshal(value: Any) -> bytes:
    """Serialize like ``json.Marshal`` of Go maps, slices, strings, numbers."""
    return _escape_html(_encode(value)).encode("utf-8")


def decode_text(body: bytes) -> str:
    """Bytes to text the way Go's decoder sees them (invalid UTF-8 becomes U+FFFD)."""
    return body.decode("utf-8", errors="replace")


def loads_generic(body: bytes) -> Any:
    """Decode into Go's ``interface{}`` shapes: every number becomes a float64.

    Raises ``ValueError`` on malformed JSON (``json.JSONDecodeError`` is one).
    """
    return json.loads(decode_text(body), parse_int=float, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    # Go refuses NaN and Infinity literals; Python would accept them.
    raise ValueError(f"invalid literal {name}")
