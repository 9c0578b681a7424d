"""Resuming a session that carries extra names (HELLO ``tunnels``, :mod:`relay.shared`).

While such a session is parked its extra names stay in the registry and route to it:
their requests open streams on the parked session and wait for the grace as the first
name's do. A resuming HELLO must list the same tunnels as the session's first HELLO
(:func:`mismatch`: as many entries, each asking for the name it was granted or for
none); its WELCOME then answers each entry again (:func:`regrant`): the name granted at
that index, so streams in flight keep their tunnel index, or ``refused`` for an entry
that was refused at first or whose name was dropped meanwhile. Each extra token is
checked again (a token revoked during the grace loses its name, not the session).
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

import wire
from wire import ErrorCode, TunnelGrant, TunnelRequest

if TYPE_CHECKING:
    from relay.agents import AgentSession

log = logging.getLogger(__name__)

#: The ``refused`` text of an entry that has no name in the resumed session.
NOT_SERVED = "this tunnel is not served by the resumed session (refused or dropped before)"


def mismatch(old: AgentSession, asked: int, hello: wire.Hello) -> str | None:
    """Why ``hello`` cannot resume ``old``, whose first HELLO listed ``asked`` extra
    tunnels (None: its tunnels are the session's)."""
    if len(hello.tunnels) != asked:
        return f"the HELLO lists {len(hello.tunnels)} extra tunnels; the session has {asked}"
    for extra in old.extras:
        request = hello.tunnels[extra.index - 1]
        if request.name is not None and request.name != extra.name:
            return f"tunnel {extra.index} asks for another name than {extra.name}"
    return None


def regrant(old: AgentSession, hello: wire.Hello) -> tuple[TunnelGrant, ...] | None:
    """The resuming WELCOME's ``tunnels`` answer (None when the HELLO lists none); the
    extras' caller credentials become the HELLO's."""
    if not hello.tunnels:
        return None
    extras = {extra.index: extra for extra in old.extras}
    grants: list[TunnelGrant] = []
    for index, request in enumerate(hello.tunnels, start=1):
        extra = extras.get(index)
        if extra is None or old.state.registry.lookup(extra.name) is not extra:
            grants.append(TunnelGrant(request.name, refused=NOT_SERVED))
            continue
        if not _token_holds(old, extra.token_sha256, request):
            extra.close(ErrorCode.UNAUTHORIZED, "the relay token is no longer valid")
            refused = f"the relay token for {extra.name} is invalid or was revoked"
            grants.append(TunnelGrant(request.name, refused=refused))
            continue
        extra.caller_auth = request.caller_auth
        urls = old.state.settings.tunnel_urls(extra.name, old.port)
        grants.append(TunnelGrant(extra.name, urls))
    return tuple(grants)


def _token_holds(old: AgentSession, held: str | None, request: TunnelRequest) -> bool:
    """Whether ``request`` presents the token the name was granted with (none in open
    mode), still valid."""
    if request.token is None:
        return held is None
    record = old.state.store.authenticate(request.token)
    return record is not None and held is not None and hmac.compare_digest(record.sha256, held)
