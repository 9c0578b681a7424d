"""Responses the relay writes itself: its JSON errors and its control endpoints.

The bytes are built here and nowhere else. A relay-made answer is only ever written
while no byte of an agent's response has gone to the caller (see :mod:`relay.exchange`).
"""

from __future__ import annotations

import http
import json
from typing import Final

from relay.errors import AgentRefused, PublicError, http_error

_REASONS: Final = {s.value: s.phrase for s in http.HTTPStatus}

#: Statuses after which the connection is closed (the request may be broken or stalled).
CLOSE_AFTER: Final = frozenset({400, 408, 431})


def response(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, close: bool = False
) -> bytes:
    """An HTTP/1.1 response with a complete body (``headers`` carry Content-Length)."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "").encode())]
    lines.extend(b"%s: %s\r\n" % pair for pair in headers)
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def error_response(exc: PublicError | AgentRefused, close: bool = False) -> bytes:
    status, headers, body = http_error(exc)
    return response(status, headers, body, close)


def json_response(status: int, obj: object) -> bytes:
    body = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return response(status, headers, body)


def text_response(status: int, text: bytes, content_type: bytes) -> bytes:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(text))]
    return response(status, headers, text)
