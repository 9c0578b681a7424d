"""The public side: which tunnel a request is for, and the checks before it goes down.

Routing:

* host-based, when a wildcard domain D is configured: ``Host: <name>.D`` sends the whole
  path to tunnel ``name`` (no prefix);
* path-based, always: ``/a/<name>/rest`` sends ``/rest`` (query kept) to tunnel
  ``name`` with ``X-Forwarded-Prefix: /a/<name>``. ``/a/<name>`` alone is ``/``.

The name is read from the raw path (never percent-decoded) and must be a lowercase DNS
label, so ``%2e%2e``, ``..`` or an encoded slash can never select another tunnel.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Final

import wire
from relay.asgi import Receive, Scope, Send
from relay.config import RESERVED_NAMES, Settings, valid_name
from relay.errors import (
    AgentOffline,
    BadRequest,
    HeadersTooLarge,
    PublicError,
    RelayConfigError,
    RelayDraining,
    UnknownTunnel,
)
from relay.forward import open_and_forward
from relay.headers import (
    announced_length,
    check_caller,
    check_header_size,
    forwarded_headers,
    has_body,
    header_values,
    request_target,
)
from relay.state import RelayState
from wire import MAX_HEAD_SIZE

PATH_PREFIX: Final = "/a/"

# JSON may escape a latin-1 character as \u00XX (6 bytes): heads whose raw size could
# reach the frame limit after escaping are measured exactly before they are sent.
_ESCAPE_FACTOR: Final = 6


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    name: str
    rest: str  # raw path for the agent, before the query
    prefix: str | None  # X-Forwarded-Prefix (path routing only)


def _host(scope: Scope) -> str:
    values = header_values(scope, b"host")
    if len(values) != 1:
        return ""
    host = values[0].strip().lower()
    if host.startswith("["):
        return host  # an IPv6 literal never names a tunnel
    return host.rsplit(":", 1)[0] if ":" in host else host


def route(scope: Scope, settings: Settings) -> Route:
    """Find the tunnel a request is for. Raises UnknownTunnel or BadRequest."""
    raw_path = scope.get("raw_path") or scope["path"].encode("latin-1")
    path = raw_path.decode("latin-1")
    if settings.domain:
        host = _host(scope)
        suffix = "." + settings.domain.lower()
        label = host[: -len(suffix)] if host.endswith(suffix) else None
        # Reserved labels (www.D, relay.D...) are the relay's own host: path routing.
        if label is not None and label not in RESERVED_NAMES:
            if not valid_name(label):
                raise UnknownTunnel()
            return Route(label, path, None)
    if not path.startswith(PATH_PREFIX):
        raise UnknownTunnel()
    name, slash, rest = path[len(PATH_PREFIX) :].partition("/")
    if not name:
        raise UnknownTunnel()
    if not valid_name(name):
        raise BadRequest("invalid tunnel name")
    return Route(name, slash + rest, PATH_PREFIX + name)


async def handle_public(state: RelayState, scope: Scope, receive: Receive, send: Send) -> int:
    """Forward one public request. Returns the status sent (499: the caller left).

    Raises PublicError for every refusal before the agent's response head.
    """
    settings = state.settings
    if state.draining:
        raise RelayDraining()
    check_header_size(scope, settings.max_header_bytes)
    where = route(scope, settings)
    session = await state.registry.lookup(where.name)
    if session is None:
        raise await _missing(state, where.name)
    strip_auth = check_caller(scope, session.caller_auth, where.name)
    target = request_target(where.rest, scope.get("query_string", b""))
    headers = forwarded_headers(scope, where.prefix, strip_auth)
    length = announced_length(scope, settings.max_request_body)
    head = wire.RequestHead(scope["method"], target, tuple(headers))
    _check_head_size(head)
    return await open_and_forward(
        session,
        head,
        has_body(scope, length),
        receive,
        send,
        state.metrics,
        max_body=settings.max_request_body,
        response_timeout=settings.response_timeout,
        body_idle_timeout=settings.body_idle_timeout,
    )


async def _missing(state: RelayState, name: str) -> PublicError:
    """503 for a name that has a token or had a session lately, else 404."""
    with contextlib.suppress(RelayConfigError):
        state.store.refresh()  # a stat; re-reads only when the file changed
    if state.store.owns(name) or await state.registry.known(name):
        return AgentOffline()
    return UnknownTunnel()


def _check_head_size(head: wire.RequestHead) -> None:
    raw = len(head.target) + sum(len(n) + len(v) + 6 for n, v in head.headers)
    if raw * _ESCAPE_FACTOR + 64 < MAX_HEAD_SIZE:
        return
    if len(wire.frames.encode_request_head(head)) > MAX_HEAD_SIZE:
        raise HeadersTooLarge()
