"""Which session serves which tunnel name, behind one small interface.

Everything else in the relay reaches sessions only through :class:`SessionRegistry`.
Today the only implementation is :class:`InMemoryRegistry` (one relay process). A
multi-node relay adds another implementation (for example a Redis hash of name -> node
with a TTL refreshed by each node) whose ``lookup`` returns the local session or a route
to the node that holds it. ``lookup`` is synchronous: it runs once per public request,
on the relay's hot path, and a cluster answers it from a local cache kept fresh by
pub/sub.

Pools: a session whose HELLO asked to pool (``session.pool``) joins its name's
sessions instead of replacing them; ``lookup`` then answers the pool's healthy session
(ACTIVE, not draining) with the fewest open streams, so new exchanges spread over the
pool. A session that does not pool replaces every session of its name, as it always did.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from relay.agents import AgentSession

#: Seconds a name stays "known" after its last session ended: requests for it get 503
#: agent_offline (come back later) instead of 404 unknown_tunnel.
KNOWN_NAME_TTL: Final = 24 * 3600.0

#: Most remembered names; past it the oldest are forgotten first.
MAX_KNOWN_NAMES: Final = 100_000


class SessionRegistry(Protocol):
    def lookup(self, name: str) -> AgentSession | None:
        """The session that serves ``name`` now, or None (in a pool: the healthy member
        with the fewest open streams)."""
        ...

    def claim(self, session: AgentSession) -> AgentSession | None:
        """Make ``session`` the one for ``session.name``. Returns the session it replaced
        (the caller retires it with GOAWAY REPLACED), or None. A pooling session
        (``session.pool``) joins the name's sessions and replaces none (None)."""
        ...

    def members(self, name: str) -> list[AgentSession]:
        """Every session that serves ``name`` now (a pool's members; one or none)."""
        ...

    def release(self, session: AgentSession) -> None:
        """``session`` ended. A no-op if a newer session already took its name."""
        ...

    def local_sessions(self) -> list[AgentSession]:
        """Sessions connected to this process (for revocation, metrics, shutdown)."""
        ...

    def in_use(self, name: str) -> bool:
        """Whether some session holds ``name`` (for picking free random names)."""
        ...

    def known(self, name: str) -> bool:
        """Whether ``name`` had a session recently (offline rather than unknown)."""
        ...


class InMemoryRegistry:
    """The registry of a single relay process."""

    def __init__(self) -> None:
        # The sessions of each name: one, or a pool's members in the order they joined.
        self._by_name: dict[str, list[AgentSession]] = {}
        # Replaced sessions still draining in-flight streams: they count as connected.
        self._retiring: set[AgentSession] = set()
        self._last_seen: dict[str, float] = {}  # insertion order = age order
        self._turn = 0  # where a pool's search starts: equals take turns

    def lookup(self, name: str) -> AgentSession | None:
        sessions = self._by_name.get(name)
        if sessions is None:
            return None
        if len(sessions) == 1:
            return sessions[0]
        self._turn += 1
        return least_busy(sessions, self._turn)

    def claim(self, session: AgentSession) -> AgentSession | None:
        sessions = self._by_name.get(session.name)
        if session.pool and sessions is not None:
            sessions.append(session)
            return None
        self._by_name[session.name] = [session]
        if not sessions:
            return None
        self._retiring.update(sessions)
        return sessions[-1]

    def members(self, name: str) -> list[AgentSession]:
        return list(self._by_name.get(name, ()))

    def release(self, session: AgentSession) -> None:
        self._retiring.discard(session)
        sessions = self._by_name.get(session.name)
        if sessions is not None and session in sessions:
            sessions.remove(session)
            if not sessions:
                del self._by_name[session.name]
        self._last_seen.pop(session.name, None)
        self._last_seen[session.name] = time.monotonic()
        while len(self._last_seen) > MAX_KNOWN_NAMES:
            del self._last_seen[next(iter(self._last_seen))]

    def local_sessions(self) -> list[AgentSession]:
        return [s for sessions in self._by_name.values() for s in sessions] + [*self._retiring]

    def in_use(self, name: str) -> bool:
        return name in self._by_name

    def known(self, name: str) -> bool:
        if name in self._by_name:
            return True
        seen = self._last_seen.get(name)
        return seen is not None and time.monotonic() - seen < KNOWN_NAME_TTL

    def __len__(self) -> int:
        return len(self._by_name)


def least_busy(sessions: list[AgentSession], turn: int = 0) -> AgentSession:
    """The accepting session with the fewest open streams; among equals, the first from
    position ``turn`` on (a caller that moves ``turn`` makes equals take turns: a quiet
    pool, whose sessions all have no stream open, is served round robin). The first
    session when none accepts (the caller then answers 503)."""
    best: AgentSession | None = None
    fewest = 0
    count = len(sessions)
    for i in range(count):
        session = sessions[(turn + i) % count]
        if session.accepting and (best is None or session.open_streams < fewest):
            best, fewest = session, session.open_streams
    return best if best is not None else sessions[0]
