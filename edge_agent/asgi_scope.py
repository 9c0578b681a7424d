"""The ASGI HTTP and WebSocket scopes for a tunnelled request, as uvicorn would build
them behind a proxy.

``X-Forwarded-*`` headers come from the relay, which drops whatever an untrusted public
caller sent and sets its own, so they are trusted here: ``X-Forwarded-Prefix`` becomes
``root_path`` (prepended to ``path`` and ``raw_path``, as uvicorn does), the last
``X-Forwarded-For`` entry (the relay's own hop) becomes ``client``,
``X-Forwarded-Host`` and ``X-Forwarded-Proto`` become ``server`` and ``scheme``.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import unquote

from edge_agent.headers import header_value, split_host, strip_hop_by_hop
from edge_agent.target import LocalRequest

ASGI_VERSION: Final = {"version": "3.0", "spec_version": "2.4"}


def build_scope(request: LocalRequest, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the ``http`` scope for ``request`` (``state``: lifespan state, copied)."""
    raw_path, _, query = request.target.partition("?")
    root_path = _root_path(header_value(request.headers, "x-forwarded-prefix"))
    scheme = header_value(request.headers, "x-forwarded-proto")
    scheme = scheme if scheme in ("http", "https") else "http"
    headers = strip_hop_by_hop(request.headers)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": dict(ASGI_VERSION),
        "http_version": "1.1",
        "method": request.method,
        "scheme": scheme,
        "root_path": root_path,
        "path": root_path + unquote(raw_path),  # %-escapes as UTF-8, like uvicorn
        "raw_path": (root_path + raw_path).encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "headers": [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers],
        "client": _client(header_value(request.headers, "x-forwarded-for")),
        "server": _server(header_value(request.headers, "x-forwarded-host"), scheme),
    }
    if state is not None:
        scope["state"] = dict(state)
    return scope


def build_websocket_scope(
    request: LocalRequest, state: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return the ``websocket`` scope for an upgrade ``request``: the HTTP scope's fields
    with ``ws``/``wss`` as the scheme, every request header (the handshake's included,
    as uvicorn gives them), the offered ``subprotocols`` and the denial-response
    extension."""
    scope = build_scope(request, state)
    del scope["method"]
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
    scope["headers"] = [
        (n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in request.headers
    ]
    scope["subprotocols"] = [
        token.strip()
        for name, value in request.headers
        if name.lower() == "sec-websocket-protocol"
        for token in value.split(",")
        if token.strip()
    ]
    scope["extensions"] = {"websocket.http.response": {}}
    return scope


def _root_path(prefix: str | None) -> str:
    if not prefix or not prefix.startswith("/") or "?" in prefix:
        return ""
    return prefix.rstrip("/")


def _client(forwarded_for: str | None) -> tuple[str, int] | None:
    if not forwarded_for:
        return None
    last = forwarded_for.rsplit(",", 1)[-1].strip()
    return (last, 0) if last else None


def _server(forwarded_host: str | None, scheme: str) -> tuple[str, int] | None:
    if not forwarded_host:
        return None
    return split_host(forwarded_host.strip(), 443 if scheme == "https" else 80)
