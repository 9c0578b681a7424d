"""The agent's half of session resumption (``docs/protocol.md`` section 10.5).

Every session asks for resumption in its first HELLO. When the relay offered it and the
WebSocket dies without a close frame (a reset, a keepalive timeout, a dead NAT
mapping), the session is *parked*: its streams and the connections to the local target
stay open (their bytes wait in the streams, whose producers are paused), and the
reconnect loop connects again at once, then at short jittered intervals
(:func:`resume_wait`), for as long as the relay's grace. The new session's HELLO carries
the old one's id, secret and message count; if the relay's WELCOME says ``received``, the
new connection carries the old session on (:func:`adopt`) and nothing is lost. Any other
WELCOME is a fresh session: the old one's streams are aborted (:func:`abandon`).
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Final

import tunnel
from tunnel import resume as runtime
from wire import Welcome
from wire.resume import ResumeError, ResumeTicket

if TYPE_CHECKING:
    from edge_agent.session import TunnelSession

logger = logging.getLogger(__name__)

#: The first reconnect after a drop of a resumable session waits this long, the next
#: ones twice as long each time, up to :data:`RESUME_WAIT_MAX`; each wait is cut by a
#: random factor in [0.5, 1] so that agents dropped together (a relay restart) spread.
RESUME_WAIT_FIRST: Final = 0.2
RESUME_WAIT_MAX: Final = 2.0


def resume_wait(attempt: int) -> float:
    """Seconds before reconnect attempt ``attempt`` (1, 2...) of a parked session."""
    bound = min(RESUME_WAIT_FIRST * 2.0 ** min(attempt - 1, 16), RESUME_WAIT_MAX)
    return bound * random.uniform(0.5, 1.0)


def ticket(old: TunnelSession | None) -> ResumeTicket:
    """HELLO's ``resume``: resume ``old`` if it is parked, else just ask for it."""
    offer = old.resumable if old is not None else None
    if old is None or offer is None or old.parked is None:
        return ResumeTicket()
    return ResumeTicket(offer.session, old.secret, old.session.received)


def expired(old: TunnelSession) -> bool:
    """Whether the relay's grace for a parked session is over (it is surely gone)."""
    offer, parked = old.resumable, old.parked
    return offer is None or parked is None or time.monotonic() - parked.since > offer.grace


def should_park(session: TunnelSession) -> bool:
    """Whether a session whose link just died is kept for resumption."""
    conn = session.session.conn
    link = session.link
    return (
        session.resumable is not None
        and not (session.draining or session.closing)
        and not (conn.goaway_sent or conn.goaway_received)
        and link.broken
    )


def adopt(new: TunnelSession, old: TunnelSession, welcome: Welcome) -> bool:
    """``new``'s connection resumed ``old``'s session: ``new`` carries it on (its own
    session object, fresh and empty, is dropped). False: the relay's count cannot be
    served (the connection is closed and ``old`` abandoned)."""
    assert welcome.resume is not None and welcome.resume.received is not None
    link = new.session.handover()
    if not isinstance(link, tunnel.WsLink):
        return False
    try:
        done = runtime.carry_on(old.session, link, welcome.resume.received, old.parked)
    except ResumeError as exc:
        logger.warning("resume_failed", extra={"agent": old.tunnel_name, "detail": str(exc)})
        link.abort()
        abandon(old, "the relay's count cannot be served")
        return False
    old.session.hooks = new
    new.session = old.session
    new.welcome = old.welcome
    new.ready_at = old.ready_at
    new.resumable, new.secret = old.resumable, old.secret
    old.parked = None
    new.resumed_detail = runtime.summary(done)
    logger.info("session_resumed", extra={"agent": new.tunnel_name, "detail": new.resumed_detail})
    return True


def abandon(old: TunnelSession, reason: str) -> None:
    """The parked session cannot come back: its streams are aborted (their local
    connections closed)."""
    if old.parked is None:
        return
    old.parked = None
    logger.info(
        "session_not_resumed",
        extra={"agent": old.tunnel_name, "streams": old.active_streams, "detail": reason},
    )
    old.session.resend = None  # lost() now ends it, aborting every stream
    old.session.lost()
