"""Which session serves which tunnel name, behind one small interface.

Everything else in the relay reaches sessions only through :class:`SessionRegistry`.
Today the only implementation is :class:`InMemoryRegistry` (one relay process). A
multi-node relay adds another implementation (for example a Redis hash of name -> node
with a TTL refreshed by each node) whose ``lookup`` returns the local session or a route
to the node that holds it. ``lookup`` is synchronous: it runs once per public request,
on the relay's hot path, and a cluster answers it from a local cache kept fresh by
pub/sub.
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
        """The session that serves ``name`` now, or None."""
        ...

    def claim(self, session: AgentSession) -> AgentSession | None:
        """Make ``session`` the one for ``session.name``. Returns the session it replaced
        (the caller retires it with GOAWAY REPLACED), or None."""
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
        self._by_name: dict[str, AgentSession] = {}
        # Replaced sessions still draining in-flight streams: they count as connected.
        self._retiring: set[AgentSession] = set()
        self._last_seen: dict[str, float] = {}  # insertion order = age order

    def lookup(self, name: str) -> AgentSession | None:
        return self._by_name.get(name)

    def claim(self, session: AgentSession) -> AgentSession | None:
        old = self._by_name.get(session.name)
        self._by_name[session.name] = session
        if old is not None:
            self._retiring.add(old)
        return old

    def release(self, session: AgentSession) -> None:
        self._retiring.discard(session)
        if self._by_name.get(session.name) is session:
            del self._by_name[session.name]
        self._last_seen.pop(session.name, None)
        self._last_seen[session.name] = time.monotonic()
        while len(self._last_seen) > MAX_KNOWN_NAMES:
            del self._last_seen[next(iter(self._last_seen))]

    def local_sessions(self) -> list[AgentSession]:
        return [*self._by_name.values(), *self._retiring]

    def in_use(self, name: str) -> bool:
        return name in self._by_name

    def known(self, name: str) -> bool:
        if name in self._by_name:
            return True
        seen = self._last_seen.get(name)
        return seen is not None and time.monotonic() - seen < KNOWN_NAME_TTL

    def __len__(self) -> int:
        return len(self._by_name)
