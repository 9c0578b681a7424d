"""The runtime side of session resumption (the bookkeeping is :mod:`wire.resume`).

Both ends use it the same way: :func:`enable` gives a session its resend log once the
relay offered resumption; when its link dies the owner's ``on_link_lost`` keeps it
(:class:`Parked` says since when); :func:`carry_on` moves a new link to it and re-sends
what the peer did not process, and :func:`summary` is the line both ends log.
"""

from __future__ import annotations

import dataclasses
import time

from tunnel.link import WsLink
from tunnel.session import Session
from wire.resume import ResendLog, ResumeError, replayed_bytes


def enable(session: Session) -> None:
    """Keep what ``session`` sends from now on until the peer acknowledges it."""
    if session.resend is None:
        session.resend = ResendLog()


@dataclasses.dataclass(slots=True)
class Parked:
    """When a session lost its link (monotonic), and the highest stream id it had then."""

    since: float = dataclasses.field(default_factory=time.monotonic)
    top_stream: int = 0

    @classmethod
    def now(cls, session: Session) -> Parked:
        return cls(time.monotonic(), max(session.streams, default=0))


@dataclasses.dataclass(frozen=True, slots=True)
class Resumed:
    """What a resumption did: seconds without a link, streams carried on, bytes re-sent."""

    after: float
    streams: int
    resent: int


def carry_on(session: Session, link: WsLink, peer_received: int, parked: Parked | None) -> Resumed:
    """Move ``link`` to ``session`` and re-send from the peer's count.

    Raises ``wire.resume.ResumeError`` (nothing moved) when that cannot be done.
    """
    resend = session.resend
    if resend is None:
        raise ResumeError("the session keeps no resend log")
    resend.replay(peer_received)  # raises, with the reason, before anything moves
    link.rebind(session)
    replay = session.reattach(link, peer_received)
    if link.closed.done():  # it died already: park again (or end)
        session.lost()
    after = time.monotonic() - parked.since if parked is not None else 0.0
    return Resumed(after, len(session.streams), replayed_bytes(replay))


def summary(resumed: Resumed) -> str:
    """``resumed session after 3.2 s, 7 streams, 412 KiB re-sent``."""
    kib = resumed.resent / 1024
    amount = f"{kib:.0f} KiB" if kib >= 1 or not resumed.resent else f"{resumed.resent} B"
    return (
        f"resumed session after {resumed.after:.1f} s, {resumed.streams} streams, {amount} re-sent"
    )
