"""Extra tunnels on one agent session (HELLO ``tunnels``, docs/protocol.md section 10.5).

An agent that serves several HTTP tunnels lists the extra ones in its HELLO; the
session's own name comes from the upgrade as always. Each extra entry is checked here as
:func:`relay.agents.authorize` checks an upgrade (its own token, hashed and compared in
constant time by the token store; the name rule; reserved names; open mode's live
names), and is granted or refused on its own: a refusal is a reason in the WELCOME's
``tunnels`` answer, and the session and its other names go on.

Each granted name is a :class:`SharedName` in the registry: to the public side it looks
like a session (``lookup`` returns it, with its own caller auth and token), but its
streams are opened on the parent's tunnel session with its tunnel index. Revoking its
token or a newer session taking its name drops that name only; the parent's end drops
them all.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import wire
from relay.agents import AgentSession, Claim, Phase, _free_name, may_take
from relay.config import RESERVED_NAMES
from wire import ErrorCode, StreamKind, TunnelGrant, TunnelRequest
from wire.rules import valid_name

if TYPE_CHECKING:
    from relay.state import RelayState

log = logging.getLogger(__name__)


class Refusal(Exception):
    """An extra tunnel is not granted; the message is the WELCOME's ``refused`` text."""


class SharedName(AgentSession):
    """A name served by another session's connection (tunnel ``index`` of ``parent``).

    It is never a session of its own: the hooks of the tunnel session are the
    parent's; the streams, their count and their limits are the parent's too.
    """

    shared = True

    def __init__(
        self,
        parent: AgentSession,
        index: int,
        name: str,
        token_sha256: str | None,
        caller_auth: tuple[wire.CallerCredential, ...],
    ) -> None:
        # Not AgentSession.__init__: no session, timer or HELLO of its own.
        self.state = parent.state
        self.parent = parent
        self.index = index
        self.claim = Claim(name, token_sha256, parent.claim.key_sha256)
        self.client = parent.client
        self.port = parent.port
        self.name = name
        self.kind = StreamKind.HTTP
        self.token_sha256 = token_sha256
        self.caller_auth = caller_auth
        self.phase = Phase.ACTIVE
        self.pool = False  # a shared name never pools (HELLO's pool is the first name's)
        self.pool_id = 0
        self.session = parent.session
        self.closed = parent.closed
        self.extras = []
        self._hellos = 0
        self._timer = None

    @property
    def accepting(self) -> bool:
        return self.phase is Phase.ACTIVE and self.parent.accepting

    @property
    def open_streams(self) -> int:
        return 0  # counted once, on the parent

    def retire(self, code: ErrorCode, reason: str, deadline: float) -> None:
        """Replaced (or the relay drains): the name stops taking streams at once; the
        parent's in-flight streams for it finish as the parent's do."""
        self.drop(code, reason)

    def close(self, code: ErrorCode, reason: str, ws_code: int = 0) -> None:
        """Revoked: only this name goes; the connection and its other names stay."""
        self.drop(code, reason)

    def drop(self, code: ErrorCode, reason: str) -> None:
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        registry = self.state.registry
        registry.release(self)
        if not registry.in_use(self.name):
            self.state.metrics.tunnel_gone(self.name)
        log.info(
            "tunnel_dropped",
            extra={
                "agent": self.name,
                "via": self.parent.name,
                "code": code.name,
                "detail": reason,
            },
        )


def grant_all(
    parent: AgentSession, name: str, hello: wire.Hello
) -> tuple[tuple[TunnelGrant, ...] | None, list[SharedName]]:
    """WELCOME's ``tunnels`` answer for ``hello`` and the names to register after it
    (``name``: the parent's own)."""
    if not hello.tunnels:
        return None, []
    taken = {name}
    grants: list[TunnelGrant] = []
    names: list[SharedName] = []
    for index, request in enumerate(hello.tunnels, start=1):
        try:
            extra, token_sha256 = _check(parent.state, parent.claim, request, taken)
        except Refusal as exc:
            log.info("tunnel_refused", extra={"agent": request.name or "-", "detail": str(exc)})
            grants.append(TunnelGrant(request.name, refused=str(exc)))
            continue
        taken.add(extra)
        urls = parent.state.settings.tunnel_urls(extra, parent.port)
        grants.append(TunnelGrant(extra, urls))
        names.append(SharedName(parent, index, extra, token_sha256, request.caller_auth))
    return tuple(grants), names


def register(names: list[SharedName]) -> None:
    """Make each granted name route to its parent's connection; a session that held the
    name before is retired (GOAWAY REPLACED, or only that name if it was shared too)."""
    for shared in names:
        state = shared.state
        old = state.registry.claim(shared)
        if old is not None:
            reason = f"replaced by a new session for {shared.name} from {shared.client}"
            old.retire(ErrorCode.REPLACED, reason, state.settings.drain_timeout)
        log.info("tunnel_shared", extra={"agent": shared.name, "via": shared.parent.name})


def _check(
    state: RelayState, claim: Claim, request: TunnelRequest, taken: set[str]
) -> tuple[str, str | None]:
    """The name to grant and its token's hash; raises Refusal with the reason."""
    name = request.name
    if name is not None and not valid_name(name):
        raise Refusal(f"the name {name[:64]!r} is not a lowercase DNS label (a-z, 0-9, -)")
    if request.token is not None:
        record = state.store.authenticate(request.token)
        if record is None:
            raise Refusal(f"the relay token for {name or 'this tunnel'} is invalid or was revoked")
        if name is not None and name != record.name:
            raise Refusal(f"the relay token is for the name {record.name}, not {name}")
        name, token_sha256 = record.name, record.sha256
    elif not state.settings.open_mode:
        raise Refusal(f"a relay token is required for {name or 'this tunnel'}")
    else:
        name, token_sha256 = name or _free(state, taken), None
        _check_open(state, claim, name)
    if name in RESERVED_NAMES:
        raise Refusal(f"the name {name} is reserved")
    if name in taken:
        raise Refusal(f"the name {name} is already served by this connection")
    return name, token_sha256


def _check_open(state: RelayState, claim: Claim, name: str) -> None:
    if state.store.owns(name):
        raise Refusal(f"the name {name} belongs to a token")
    if not may_take(state.registry.lookup(name), claim.key_sha256):
        raise Refusal(f"the name {name} is in use by an agent on another machine")


def _free(state: RelayState, taken: set[str]) -> str:
    while (name := _free_name(state)) in taken:
        pass
    return name
