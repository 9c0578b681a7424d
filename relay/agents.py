"""The agent endpoint, ``GET /_edge/connect``: refuse or accept, HELLO/WELCOME, serve.

Refusals happen BEFORE the WebSocket upgrade, as plain HTTP with the relay's JSON error
(ASGI ``websocket.http.response`` extension, supported by uvicorn's websockets-sansio
implementation), so an agent can tell them apart:

* 401 ``agent_unauthorized``: token missing (and not open mode), unknown, or revoked;
* 403 ``name_forbidden``: the token is valid for another name, or the name is reserved
  (or owned by a token while the agent has none);
* 400 ``bad_name`` / ``subprotocol_required``;
* 503 ``relay_draining``: the relay is shutting down (transient, retry).

After the upgrade the first frame must be HELLO within the hello timeout (10 s);
its name must equal the name of the connect URL or the token. A new session for a name
replaces the old one at once: the old one gets GOAWAY REPLACED and may finish its
in-flight streams, while new requests go to the new one.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import secrets
from urllib.parse import parse_qs

import wire
from relay.asgi import Receive, Scope, Send, deny_websocket
from relay.config import RESERVED_NAMES, valid_name
from relay.errors import (
    AgentRefused,
    AgentUnauthorized,
    BadAgentRequest,
    NameForbidden,
    RelayConfigError,
    RelayNotAccepting,
)
from relay.session import WS_POLICY, AgentSession
from relay.state import RelayState
from wire import ErrorCode

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """What an upgrade request was allowed: a name (None: any free one) and the token."""

    name: str | None
    token_sha256: str | None


def _query_name(scope: Scope) -> str | None:
    try:
        query = parse_qs(scope.get("query_string", b"").decode("ascii"), strict_parsing=False)
    except UnicodeDecodeError:
        raise BadAgentRequest("bad_name", "the query string is not ASCII") from None
    names = query.get("name", [])
    if len(names) > 1:
        raise BadAgentRequest("bad_name", "name given more than once")
    if names and not valid_name(names[0]):
        raise BadAgentRequest("bad_name", "the name must be a lowercase DNS label")
    return names[0] if names else None


def _bearer(scope: Scope) -> str | None:
    values = [v for n, v in scope["headers"] if n == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def authorize(scope: Scope, state: RelayState) -> Claim:
    """Decide on an upgrade request before accepting it. Raises AgentRefused."""
    if state.draining:
        raise RelayNotAccepting("the relay is shutting down; retry shortly")
    token = _bearer(scope)
    name = _query_name(scope)
    if name in RESERVED_NAMES:
        raise NameForbidden(f"the name {name} is reserved")
    try:
        state.store.refresh()  # a token issued a moment ago works at once
    except RelayConfigError as exc:
        log.error("token_store_unreadable", extra={"detail": str(exc)})
        raise RelayNotAccepting("the relay cannot read its token store; retry later") from exc
    if token is not None:
        record = state.store.authenticate(token)
        if record is None:
            raise AgentUnauthorized("the relay token is invalid or was revoked")
        if name is not None and name != record.name:
            raise NameForbidden("the relay token is for another name")
        claim = Claim(record.name, record.sha256)
    elif not state.settings.open_mode:
        raise AgentUnauthorized("a relay token is required (Authorization: Bearer ...)")
    elif name is not None and state.store.owns(name):
        raise NameForbidden(f"the name {name} belongs to a token")
    else:
        claim = Claim(name, None)
    if wire.SUBPROTOCOL not in scope.get("subprotocols", []):
        raise BadAgentRequest("subprotocol_required", f"offer subprotocol {wire.SUBPROTOCOL}")
    return claim


async def serve_agent(state: RelayState, scope: Scope, receive: Receive, send: Send) -> None:
    """Run one agent WebSocket from the upgrade request to its end."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    client = _client(scope)
    try:
        claim = authorize(scope, state)
    except AgentRefused as exc:
        state.metrics.agent_refusals[exc.status] += 1
        log.info("agent_refused", extra={"status": exc.status, "code": exc.code, "client": client})
        await deny_websocket(send, exc)
        return
    await send({"type": "websocket.accept", "subprotocol": wire.SUBPROTOCOL})
    conn = wire.Connection(wire.Role.RELAY, state.settings.max_streams)
    session = AgentSession(conn, send, state.metrics, client)
    session.token_sha256 = claim.token_sha256
    writer = session.start_writer()
    try:
        if await _establish(state, session, claim, scope, receive):
            code = await session.run(receive)
            log.info("agent_disconnected", extra={"agent": session.name, "ws_code": code})
        else:
            await session.run(receive)
    finally:
        if session.name:
            await state.registry.release(session)
        writer.cancel()


async def _establish(
    state: RelayState, session: AgentSession, claim: Claim, scope: Scope, receive: Receive
) -> bool:
    hello = await session.handshake(receive, state.settings.hello_timeout)
    if hello is None:
        return False
    name = _choose_name(state, claim, hello)
    if name is None:
        session.close(ErrorCode.UNAUTHORIZED, "the HELLO name is not allowed", WS_POLICY)
        return False
    settings = state.settings
    server = scope.get("server")
    urls = settings.tunnel_urls(name, server[1] if server else None)
    welcome = wire.Welcome(name, urls, settings.max_streams, settings.max_request_body)
    session.welcome(name, welcome, hello)
    old = await state.registry.claim(session)
    state.metrics.sessions_total += 1
    if old is not None:
        old.retire(ErrorCode.REPLACED, "replaced by a newer session", settings.drain_timeout)
        state.metrics.sessions_replaced += 1
        log.info("agent_replaced", extra={"agent": name, "client": session.client})
    log.info(
        "agent_connected",
        extra={"agent": name, "client": session.client, "software": _printable(hello.agent)},
    )
    return True


def _choose_name(state: RelayState, claim: Claim, hello: wire.Hello) -> str | None:
    """The session's name, or None when the HELLO asks for one it may not have."""
    if claim.name is not None:
        return claim.name if hello.name in (None, claim.name) else None
    if hello.name is None:
        return _free_name(state)
    name = hello.name
    if not valid_name(name) or name in RESERVED_NAMES or state.store.owns(name):
        return None
    return name


def _free_name(state: RelayState) -> str:
    while True:
        name = secrets.token_hex(4)
        if not state.registry.in_use(name) and not state.store.owns(name):
            return name


def token_still_valid(state: RelayState, session: AgentSession) -> bool:
    """Whether the token (or open-mode status) that admitted ``session`` still holds."""
    current = state.store.current_hash(session.name)
    if session.token_sha256 is None:
        return current is None  # an open-mode name that now belongs to a token is lost
    return current is not None and hmac.compare_digest(current, session.token_sha256)


def _printable(text: str, limit: int = 80) -> str:
    """Agent-supplied text made safe for a log line (no control characters)."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit]) or "-"


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"
