"""The agent endpoint, ``GET /_edge/connect``: refuse or accept, HELLO/WELCOME, serve.

Refusals happen BEFORE the WebSocket upgrade, as plain HTTP with the relay's JSON error,
so an agent can tell them apart:

* 401 ``agent_unauthorized``: token missing (and not open mode), unknown, or revoked;
* 403 ``name_forbidden``: the token is valid for another name, or the name is reserved
  (or owned by a token while the agent has none);
* 409 ``name_in_use``: open mode, and the name is held by a live session whose agent key
  (``X-Edge-Agent-Key``, a secret the agent keeps) the request does not present: without a
  token, only the machine that holds a name may take it over (a restarted agent whose
  old session the relay has not yet seen die);
* 400 ``bad_name`` / ``subprotocol_required`` / ``protocol_version`` (an agent that
  speaks only ``molecule-edge.v1``: upgrade it);
* 503 ``relay_draining``: the relay is shutting down (transient, retry).

After the upgrade the first frame must be HELLO within the hello timeout (10 s); its
name must equal the name of the connect URL or the token. A new session for a name
replaces the old one at once: the old one gets GOAWAY REPLACED (its reason says from
which address the new session came) and may finish its in-flight streams, while new
requests go to the new one; the new one's WELCOME says it replaced a session
(``replaced``: the old one's address).

A HELLO with ``pool`` joins the name's pool instead (:mod:`relay.pools`): nothing is
replaced, and the WELCOME's ``pool`` says how many sessions the pool holds with it.

A HELLO that resumes a session this relay still holds gets that session back instead
(:mod:`relay.grace`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hmac
import logging
import math
import secrets
from typing import Final
from urllib.parse import parse_qs

import tunnel
import wire
from relay import grace, kinds, penalty, pools
from relay.config import RESERVED_NAMES
from relay.errors import (
    AgentBackoff,
    AgentUnauthorized,
    BadAgentRequest,
    NameForbidden,
    NameInUse,
    RelayConfigError,
    RelayNotAccepting,
)
from relay.state import RelayState
from wire import ErrorCode
from wire.rules import AGENT_KEY_HEADER, MAX_AGENT_KEY, credential_sha256, valid_name

log = logging.getLogger(__name__)

#: HELLO frames an agent may re-send in one session. Each replaces its caller auth and
#: is logged; an honest agent re-sends one only when its caller credentials change
#: (rare), so a peer that sends more is flooding the relay's log (PROTOCOL_ERROR).
HELLO_FRAME_ALLOWANCE: Final = 64


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """What an upgrade request was allowed: a name (None: any free one), the token, and
    the SHA-256 of the agent key it presented (None: none)."""

    name: str | None
    token_sha256: str | None
    key_sha256: str | None = None


def _agent_key(values: list[bytes]) -> str | None:
    """SHA-256 of the ``X-Edge-Agent-Key`` header, or None. Raises BadAgentRequest."""
    if not values:
        return None
    key = values[0].decode("latin-1").strip()
    if len(values) > 1 or not key or len(key) > MAX_AGENT_KEY:
        raise BadAgentRequest("bad_agent_key", f"{AGENT_KEY_HEADER}: one value, 1-256 chars")
    return credential_sha256(key)


def may_take(live: AgentSession | None, key_sha256: str | None) -> bool:
    """Open mode: whether a session with this agent key may take a name ``live`` holds
    (any when none holds it; else only the same key, compared in constant time)."""
    if live is None or live.phase is Phase.CLOSED:
        return True
    held = live.claim.key_sha256
    return held is not None and key_sha256 is not None and hmac.compare_digest(held, key_sha256)


def _query_name(query: str) -> str | None:
    names = parse_qs(query, strict_parsing=False).get("name", [])
    if len(names) > 1:
        raise BadAgentRequest("bad_name", "name given more than once")
    if names and not valid_name(names[0]):
        raise BadAgentRequest("bad_name", "the name must be a lowercase DNS label")
    return names[0] if names else None


def _bearer(authorization: list[bytes]) -> str | None:
    if len(authorization) != 1:
        return None
    scheme, _, token = authorization[0].decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _check_subprotocol(offered: list[str]) -> None:
    if wire.SUBPROTOCOL in offered:
        return
    if wire.SUBPROTOCOL_V1 in offered:
        raise BadAgentRequest(
            "protocol_version",
            f"this relay speaks {wire.SUBPROTOCOL}; the agent speaks {wire.SUBPROTOCOL_V1}: "
            "upgrade edge-agent",
        )
    raise BadAgentRequest("subprotocol_required", f"offer subprotocol {wire.SUBPROTOCOL}")


def authorize(
    state: RelayState,
    query: str,
    authorization: list[bytes],
    offered: list[str],
    agent_key: list[bytes] = [],  # noqa: B006 (read only)
) -> Claim:
    """Decide on an upgrade request before accepting it. Raises AgentRefused."""
    if state.draining:
        raise RelayNotAccepting("the relay is shutting down; retry shortly")
    token = _bearer(authorization)
    name = _query_name(query)
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
            raise NameForbidden(
                f"the relay token is for the name {record.name}, not {name}: "
                f"use --name {record.name} or leave --name out"
            )
        claim = Claim(record.name, record.sha256, _agent_key(agent_key))
    elif not state.settings.open_mode:
        raise AgentUnauthorized("a relay token is required (Authorization: Bearer ...)")
    elif name is not None and state.store.owns(name):
        raise NameForbidden(f"the name {name} belongs to a token")
    else:
        claim = Claim(name, None, _agent_key(agent_key))
        if name is not None and not may_take(state.registry.lookup(name), claim.key_sha256):
            raise NameInUse(
                f"the name {name} is in use by an agent on another machine: "
                "pick another --name, or stop that agent first"
            )
    _check_subprotocol(offered)
    return claim


def check_penalty(state: RelayState, claim: Claim, client: str) -> None:
    """Refuse an agent cut off for a protocol error a moment ago (:mod:`relay.penalty`).
    Raises AgentBackoff."""
    wait = state.penalties.wait(penalty.key_of(claim.token_sha256, client))
    if wait > 0:
        seconds = math.ceil(wait)
        raise AgentBackoff(
            f"this agent was cut off for breaking the protocol; retry in {seconds} s", seconds
        )


class Phase(enum.Enum):
    HELLO = "hello"  # waiting for the first HELLO
    ACTIVE = "active"  # takes new streams
    DRAINING = "draining"  # GOAWAY sent: in-flight streams finish, no new ones
    CLOSED = "closed"


class AgentSession(tunnel.SessionHooks):
    """The relay's end of one agent WebSocket."""

    shared = False  # relay.shared.SharedName: a name carried by another session
    index = 0  # the tunnel index of this name in its session's OPEN frames

    def __init__(self, state: RelayState, claim: Claim, client: str, port: int | None) -> None:
        self.state = state
        self.claim = claim
        self.client = client
        self.port = port
        self.name = ""
        self.kind = wire.StreamKind.HTTP  # what the agent serves (HELLO's tunnel)
        self.token_sha256 = claim.token_sha256
        self.caller_auth: tuple[wire.CallerCredential, ...] = ()
        self.phase = Phase.HELLO
        self.urls: tuple[str, ...] = ()  # the public URLs granted (a resumption repeats them)
        self.resumable: grace.Resumable | None = None  # set when resumption was offered
        self.pool = False  # joined its name's pool (HELLO's pool)
        self.pool_id = 0  # its number in logs and metrics, once it joined
        self.session = tunnel.Session(
            wire.Connection(wire.Role.RELAY, state.settings.max_streams), self
        )
        self.closed = asyncio.Event()
        self.extras: list[AgentSession] = []  # names this connection also carries
        self._hellos = 0
        loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = loop.call_later(
            state.settings.hello_timeout, self._no_hello
        )

    # -- the forwarding side ------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        if not self.live:
            return False
        if self.pool and grace.is_parked(self):  # the other members serve, if any can
            return not any(m.live and not grace.is_parked(m) for m in pools.members(self))
        return True

    @property
    def live(self) -> bool:
        """Takes streams (parked or not)."""
        session = self.session
        return self.phase is Phase.ACTIVE and not (
            session.is_closed or session.conn.goaway_received
        )

    @property
    def open_streams(self) -> int:
        return len(self.session.streams)

    # -- hooks ------------------------------------------------------------------------------

    def on_hello(self, session: tunnel.Session, hello: wire.Hello) -> None:
        if self.phase is Phase.HELLO:
            self._welcome(hello)
            return
        self._hellos += 1
        if self._hellos > HELLO_FRAME_ALLOWANCE:
            session.fail(ErrorCode.PROTOCOL_ERROR, "too many HELLO frames")
            return
        if hello.caller_auth and self.kind is not wire.StreamKind.HTTP:
            self.close(ErrorCode.UNAUTHORIZED, kinds.NO_CALLER_AUTH, tunnel.WS_POLICY)
            return
        # A HELLO re-sent after WELCOME (same name, checked by wire) replaces caller_auth.
        self.caller_auth = hello.caller_auth
        for extra in self.extras:  # as many entries as the first HELLO (checked by wire)
            extra.caller_auth = hello.tunnels[extra.index - 1].caller_auth
        log.info("caller_auth_updated", extra={"agent": self.name})

    def on_goaway(self, session: tunnel.Session, event: wire.GoAwayReceived) -> None:
        log.info(
            "agent_goaway",
            extra={
                "agent": self.name,
                "code": event.code.name,
                "last_stream": event.last_stream_id,
            },
        )
        # Streams the agent never saw were not processed: safe for the caller to retry.
        for sid, stream in list(session.streams.items()):
            if sid > event.last_stream_id:
                handler = stream.handler  # a closed stream lets go of its handler
                stream.reset(ErrorCode.REFUSED_STREAM)
                handler.aborted(ErrorCode.REFUSED_STREAM, "agent draining")

    def on_protocol_error(self, session: tunnel.Session, code: ErrorCode, reason: str) -> None:
        self.state.metrics.protocol_error()
        self.state.penalties.strike(penalty.key_of(self.claim.token_sha256, self.client))
        log.warning(
            "protocol_error", extra={"agent": self.name, "code": code.name, "detail": reason}
        )

    def on_stream_closed(self, session: tunnel.Session, stream: tunnel.Stream) -> None:
        if self.phase is Phase.DRAINING and not session.streams:
            self.close(ErrorCode.NO_ERROR, "drained", tunnel.WS_NORMAL)

    def on_link_lost(self, session: tunnel.Session) -> bool:
        return self.phase is Phase.ACTIVE and grace.park(self)

    def on_session_closed(self, session: tunnel.Session) -> None:
        grace.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.phase is not Phase.HELLO:
            log.info("agent_disconnected", extra={"agent": self.name})
        self.phase = Phase.CLOSED
        for extra in self.extras:
            extra.close(ErrorCode.NO_ERROR, "its connection ended")
        if self.name:
            self.state.registry.release(self)
            if self.pool:
                pools.left(self)
            if not self.state.registry.in_use(self.name):
                self.state.metrics.tunnel_gone(self.name)
                self.state.tcp.release(self.name)
        self.closed.set()

    # -- life cycle ---------------------------------------------------------------------------

    def _welcome(self, hello: wire.Hello) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        name = self._choose_name(hello)
        if name is None:
            self.close(ErrorCode.UNAUTHORIZED, "the HELLO name is not allowed", tunnel.WS_POLICY)
            return
        if hello.resume is not None and hello.resume.resuming:
            old = grace.find(self, name, hello)
            if old is not None and grace.resume(self, old, hello):
                return
        settings = self.state.settings
        try:
            kinds.check_caller_auth(hello)
            if hello.pool:
                pools.check(self.state, name, hello, self.token_sha256 is not None)
            urls = kinds.grant(
                self.state, name, hello.tunnel, self.token_sha256 is not None, self.port
            )
        except kinds.Refused as exc:
            log.info("tunnel_kind_refused", extra={"agent": name, "detail": str(exc)})
            self.close(exc.code, str(exc), tunnel.WS_POLICY)
            return
        from relay import shared  # it builds on this module

        grants, extras = shared.grant_all(self, name, hello)
        registry = self.state.registry
        self.pool = hello.pool
        self.name = name
        stale = pools.stale(self.state, self) if self.pool else []
        live = None if self.pool else registry.lookup(name)
        replaced = live.client if live is not None else None
        welcome = wire.Welcome(
            name,
            urls,
            settings.max_streams,
            settings.max_request_body,
            replaced,
            hello.tunnel,
            len(registry.members(name)) - len(stale) + 1 if self.pool else 0,
            grants,
            grace.offer(self, hello),
        )
        self.urls = urls
        self.kind = hello.tunnel
        self.caller_auth = hello.caller_auth
        self.session.send_welcome(welcome)
        self.phase = Phase.ACTIVE
        reconnect = registry.known(name)  # connected now or lately: every session after the first
        others = [] if self.pool else registry.members(name)
        old = registry.claim(self)
        self.state.metrics.session_started(replaced=old is not None, reconnect=reconnect)
        if old is not None:
            reason = f"replaced by a new session for {name} from {self.client}"
            for other in others:  # one session, or every session of a pool
                other.retire(ErrorCode.REPLACED, reason, settings.drain_timeout)
            log.info("agent_replaced", extra={"agent": name, "client": self.client})
        if self.pool:
            pools.joined(self, stale)
        log.info(
            "agent_connected",
            extra={"agent": name, "client": self.client, "software": _printable(hello.agent)},
        )
        shared.register(extras)
        self.extras = list(extras)

    def _choose_name(self, hello: wire.Hello) -> str | None:
        """The session's name, or None when the HELLO asks for one it may not have."""
        claim = self.claim
        if claim.name is not None:
            return claim.name if hello.name in (None, claim.name) else None
        if hello.name is None:
            return _free_name(self.state)
        name = hello.name
        if not valid_name(name) or name in RESERVED_NAMES or self.state.store.owns(name):
            return None
        if not may_take(self.state.registry.lookup(name), claim.key_sha256):
            return None  # open mode: another machine's live name (HELLO named it, not the URL)
        return name

    def _no_hello(self) -> None:
        self._timer = None
        if self.phase is Phase.HELLO:
            log.info("agent_no_hello", extra={"client": self.client})
            self.close(ErrorCode.PROTOCOL_ERROR, "no HELLO in time", tunnel.WS_PROTOCOL_ERROR)

    def retire(self, code: ErrorCode, reason: str, deadline: float) -> None:
        """GOAWAY: take no new streams, let in-flight ones finish, close when they did
        (or after ``deadline`` seconds, failing what is left)."""
        if self.phase is not Phase.ACTIVE:
            return
        if grace.is_parked(self):  # no connection to drain over: its streams fail now
            self.close(code, reason)
            return
        self.phase = Phase.DRAINING
        self.session.goaway(code, reason)
        if not self.session.streams:
            self.close(code, reason, tunnel.WS_NORMAL)
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(deadline, self.close, code, "drain deadline")

    def discard(self) -> None:
        """This connection resumed another session (:func:`relay.grace.resume`): this
        object ends without a trace (its session handed the link over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.phase = Phase.CLOSED
        self.closed.set()

    def close(self, code: ErrorCode, reason: str, ws_code: int = tunnel.WS_NORMAL) -> None:
        """GOAWAY (if not sent yet) and close the WebSocket now; open streams fail."""
        if self.phase is not Phase.CLOSED:
            self.session.close(code, reason, ws_code)


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
