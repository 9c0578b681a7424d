"""Responses the relay writes itself: its JSON errors and its control endpoints.

The bytes are built here and nowhere else. A relay-made answer is only ever written
while no byte of an agent's response has gone to the caller (see :mod:`relay.exchange`).
"""

from __future__ import annotations

import http
import json
from html import escape as html_escape
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


#: What the tunnel's owner can do, by error code, for the page a browser gets.
_HINTS: Final = {
    "unknown_tunnel": "No tunnel has this name on this relay. Check the address.",
    "agent_offline": "The tunnel's agent is not connected. Its owner should start it.",
    "tunnel_revoked": "The relay's operator revoked this tunnel. It will not come back here.",
    "agent_unavailable": "The tunnel's agent is paused or draining. Try again shortly.",
    "target_unreachable": "The agent could not reach the local server. Its owner should start it.",
    "target_failed": "The local server failed to answer. Its owner should check its logs.",
    "target_timeout": "The local server did not answer in time.",
    "response_timeout": "The tunnel did not answer in time.",
    "caller_unauthorized": "This tunnel requires credentials.",
    "too_many_streams": "The tunnel is busy. Try again shortly.",
    "relay_draining": "The relay is restarting. Try again shortly.",
}


def wants_html(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the caller is a browser: its Accept names text/html."""
    return any(n == b"accept" and b"text/html" in v for n, v in headers)


def error_response(
    exc: PublicError | AgentRefused, close: bool = False, html: bool = False
) -> bytes:
    """The relay's error: JSON, or a small page for a browser (``html``); both carry
    ``x-edge-error``."""
    status, headers, body = http_error(exc)
    if html:
        body = _page(status, exc.code, json.loads(body)["error"]["message"])
        kept = [(n, v) for n, v in headers if n not in (b"content-type", b"content-length")]
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            *kept,
        ]
    return response(status, headers, body, close)


def _page(status: int, code: str, message: str) -> bytes:
    title = f"{status} {_REASONS.get(status, '')}".strip()
    hint = _HINTS.get(code, "")
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f'<title>{html_escape(title)}</title></head><body style="font-family:sans-serif">',
        f"<h1>{html_escape(title)}</h1><p>{html_escape(message)}</p>",
        f"<p>{html_escape(hint)}</p>" if hint else "",
        f"<p><small>edge-relay: {html_escape(code)}</small></p></body></html>",
    ]
    return "".join(parts).encode()


def json_response(status: int, obj: object) -> bytes:
    body = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return response(status, headers, body)


def text_response(status: int, text: bytes, content_type: bytes) -> bytes:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(text))]
    return response(status, headers, text)
