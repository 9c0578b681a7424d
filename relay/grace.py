"""The relay's half of session resumption (``docs/protocol.md`` section 10.5).

A session whose agent asked for resumption gets an id and a secret in its WELCOME (the
relay keeps the secret's SHA-256 only). When its WebSocket dies without a close frame,
the session is *parked* for ``--resume-grace`` seconds instead of ended: it keeps its
streams and their public connections, stays the one that serves its name, and takes new
requests, whose streams wait in it (bounded by the stream limit, the windows and the
grace). A new connection that presents the id and the secret, with the same token and
name, gets the session back (:func:`resume`): both ends re-send what the other did not
process, and nothing is lost. A stale session that is still attached to a connection
the relay has not seen die is taken over the same way (the newer connection wins).

A session that carries extra names (HELLO ``tunnels``) keeps them routed to it while
it is parked, and its resumption re-grants them at the same indexes
(:mod:`relay.regrant`). A parked pool member stays in its pool but takes no new
exchange while another member can (:attr:`relay.agents.AgentSession.accepting`); a pool
with no other member makes new requests wait, as a single session does.

When the grace runs out the session ends as if its connection had just dropped; streams
opened while it was parked never reached the agent, so their callers get 503 (safe to
retry) rather than 502. An agent that cannot prove the secret starts a new session,
which replaces the parked one at once (its streams fail). The grace lives in this
process's memory: a relay that restarts forgets every parked session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import secrets
from typing import TYPE_CHECKING

import tunnel
import wire
from relay import regrant
from tunnel import resume as runtime
from wire import ErrorCode
from wire.resume import ResumeError, ResumeOffer, ResumeTicket
from wire.rules import credential_sha256

if TYPE_CHECKING:
    from relay.agents import AgentSession

log = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class Resumable:
    """A session's resumption state: its id, its secret's SHA-256, its grace."""

    id: str
    secret_sha256: str
    grace: int
    tunnels: int = 0  # extra tunnels the first HELLO listed (a resumption lists as many)
    parked: runtime.Parked | None = None  # set while it has no connection
    timer: asyncio.TimerHandle | None = None


class ResumeBook:
    """The resumable sessions of this relay process, by id (connected or parked)."""

    def __init__(self) -> None:
        self._by_id: dict[str, AgentSession] = {}

    def add(self, agent: AgentSession) -> None:
        assert agent.resumable is not None
        self._by_id[agent.resumable.id] = agent

    def remove(self, agent: AgentSession) -> None:
        if agent.resumable is not None and self._by_id.get(agent.resumable.id) is agent:
            del self._by_id[agent.resumable.id]

    def get(self, session_id: str) -> AgentSession | None:
        return self._by_id.get(session_id)

    def parked(self) -> int:
        return sum(1 for a in self._by_id.values() if a.resumable and a.resumable.parked)

    def __len__(self) -> int:
        return len(self._by_id)


def offer(agent: AgentSession, hello: wire.Hello) -> ResumeOffer | None:
    """The WELCOME key for a new session whose HELLO asked for resumption (None: the
    agent did not ask, or the relay's grace is 0). Starts the session's resend log."""
    grace = agent.state.settings.resume_grace
    if hello.resume is None or grace <= 0:
        return None
    secret = secrets.token_urlsafe(32)  # 43 characters
    agent.resumable = Resumable(
        secrets.token_hex(16), credential_sha256(secret), grace, len(hello.tunnels)
    )
    runtime.enable(agent.session)
    agent.state.resumes.add(agent)
    return ResumeOffer(agent.resumable.id, secret, grace)


def find(agent: AgentSession, name: str, hello: wire.Hello) -> AgentSession | None:
    """The session ``hello`` resumes, if this relay holds it and the new connection
    proves it is that session's agent (secret, token, name, pool, tunnels); else None
    (logged why)."""
    ticket = hello.resume
    assert ticket is not None
    old = agent.state.resumes.get(ticket.session)
    why = _refusal(old, agent, name, ticket) or _shape(old, hello)
    if why is not None:
        log.info("resume_refused", extra={"agent": name, "client": agent.client, "detail": why})
        return None
    return old


def _refusal(
    old: AgentSession | None, new: AgentSession, name: str, ticket: ResumeTicket
) -> str | None:
    if old is None or old.resumable is None:
        return "unknown session (grace over, or the relay restarted)"
    if not hmac.compare_digest(old.resumable.secret_sha256, credential_sha256(ticket.secret)):
        return "wrong session secret"
    if old.name != name or not _same_token(old.token_sha256, new.token_sha256):
        return "another name or token"
    if not old.live:
        return "the session is ending"
    resend = old.session.resend
    if resend is None or not resend.can_replay(ticket.received):
        return f"cannot re-send from message {ticket.received}"
    return None


def _shape(old: AgentSession | None, hello: wire.Hello) -> str | None:
    """Why ``hello`` asks for another kind of session than ``old`` (None: the same)."""
    if old is None or old.resumable is None:
        return None
    if old.pool != hello.pool or old.kind is not hello.tunnel:
        return "another tunnel kind or pool"
    return regrant.mismatch(old, old.resumable.tunnels, hello)


def _same_token(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return hmac.compare_digest(a, b)


def resume(new: AgentSession, old: AgentSession, hello: wire.Hello) -> bool:
    """Answer ``new``'s HELLO with a resuming WELCOME and move its connection to
    ``old``, which re-sends what the agent did not process. ``new`` is discarded. The
    HELLO's caller credentials replace the old ones (they may have changed meanwhile)."""
    resumable, ticket = old.resumable, hello.resume
    assert resumable is not None and ticket is not None
    settings = new.state.settings
    offer = ResumeOffer(resumable.id, "", resumable.grace, old.session.received)
    new.session.send_welcome(
        wire.Welcome(
            old.name,
            old.urls,
            settings.max_streams,
            settings.max_request_body,
            tunnel=old.kind,
            pool=len(old.state.registry.members(old.name)) if old.pool else 0,
            tunnels=regrant.regrant(old, hello),
            resume=offer,
        )
    )
    link = new.session.handover()
    new.discard()
    if not isinstance(link, tunnel.WsLink):
        return False
    live = old.session.link
    if isinstance(live, tunnel.WsLink):  # not seen dead yet: the newer connection wins
        live.detach()
        live.abort()
    if resumable.timer is not None:
        resumable.timer.cancel()
        resumable.timer = None
    parked, resumable.parked = resumable.parked, None
    try:
        done = runtime.carry_on(old.session, link, ticket.received, parked)
    except ResumeError as exc:  # checked by find(); a race would land here
        log.warning("resume_failed", extra={"agent": old.name, "detail": str(exc)})
        link.abort()
        old.close(ErrorCode.INTERNAL_ERROR, "resumption failed")
        return False
    old.client = new.client
    if old.kind is wire.StreamKind.HTTP:
        old.caller_auth = hello.caller_auth
    old.state.metrics.session_started(replaced=False, reconnect=True)
    log.info(
        "session_resumed",
        extra={"agent": old.name, "client": old.client, "detail": runtime.summary(done)},
    )
    return True


def park(agent: AgentSession) -> bool:
    """The connection under ``agent`` died: keep the session for its grace if it is
    resumable and the connection failed rather than ended (a close frame, GOAWAY or a
    TCP FIN is an end: the agent's process closed it or died)."""
    resumable = agent.resumable
    session = agent.session
    link = session.link
    if resumable is None or session.conn.goaway_sent or session.conn.goaway_received:
        return False
    if isinstance(link, tunnel.WsLink) and not link.broken:
        return False  # the agent (or its kernel, if it died) closed it: not coming back
    resumable.parked = runtime.Parked.now(session)
    loop = asyncio.get_running_loop()
    resumable.timer = loop.call_later(resumable.grace, expire, agent)
    log.info(
        "agent_link_lost",
        extra={"agent": agent.name, "streams": len(session.streams), "grace": resumable.grace},
    )
    return True


def expire(agent: AgentSession) -> None:
    """The grace ran out: streams opened meanwhile are refused (never reached the
    agent: 503, safe to retry), the others fail as on a dropped connection."""
    resumable = agent.resumable
    if resumable is None or resumable.parked is None:
        return
    resumable.timer = None
    log.info("resume_grace_over", extra={"agent": agent.name, "grace": resumable.grace})
    refuse_waiting(agent, resumable.parked.top_stream)
    agent.close(ErrorCode.INTERNAL_ERROR, "the agent did not resume its session in time")


def refuse_waiting(agent: AgentSession, top: int) -> None:
    for sid, stream in list(agent.session.streams.items()):
        if sid > top:
            handler = stream.handler  # a closed stream lets go of its handler
            stream.reset(ErrorCode.REFUSED_STREAM, "the agent did not come back")
            handler.aborted(ErrorCode.REFUSED_STREAM, "the agent did not come back")


def forget(agent: AgentSession) -> None:
    """``agent``'s session ended: it can no longer be resumed."""
    resumable = agent.resumable
    if resumable is None:
        return
    if resumable.timer is not None:
        resumable.timer.cancel()
        resumable.timer = None
    agent.state.resumes.remove(agent)


def is_parked(agent: AgentSession) -> bool:
    return agent.resumable is not None and agent.resumable.parked is not None
