"""The relay process's shared objects: state, open public connections, the token
watcher, revocation and the graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import tunnel
from relay import h1
from relay.agents import Phase, token_still_valid
from relay.errors import RelayConfigError
from relay.pools import PoolMetrics
from relay.state import RelayState
from wire import ErrorCode

if TYPE_CHECKING:
    from relay.public import PublicConnection

log = logging.getLogger(__name__)

#: How often a draining relay checks whether its streams are done, in seconds.
_DRAIN_POLL: Final = 0.05

#: Seconds a shutdown waits for agents to acknowledge the WebSocket close.
_CLOSE_WAIT: Final = 1.0


class RelayApp:
    """What every connection of one relay process shares."""

    def __init__(self, state: RelayState) -> None:
        self.state = state
        self.connections: set[PublicConnection] = set()
        #: Streams in flight per (tunnel, caller address), for --max-client-streams.
        self.client_streams: dict[tuple[str, str], int] = {}
        #: Host routing's domain D (``--domain``, or ``localhost`` on loopback) as the
        #: Host suffix ``.D`` it routes, encoded once; None without host routing.
        domain = state.settings.route_domain()
        self.route_suffix = b"." + domain.encode("ascii") if domain else None
        try:
            self.trusted_proxies = h1.parse_cidrs(state.settings.trusted_proxies)
        except ValueError as exc:
            raise RelayConfigError(f"--trusted-proxy: {exc}") from exc
        self._watcher: asyncio.Task[None] | None = None
        metrics = state.metrics
        metrics.gauge("edge_agents_connected", "Agent sessions connected.", self.agents)
        metrics.gauge("edge_streams_open", "Streams in flight over all sessions.", self.streams)
        metrics.gauge(
            "edge_tunnels_connected", "Tunnel names served by connected agents.", self.names
        )
        metrics.tunnels = self.agents  # read only when a tunnel has no series yet
        self.pools = PoolMetrics(state)
        metrics.registry.register(self.pools)

    def start(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch_tokens())

    async def stop(self) -> None:
        self.state.tcp.close_all()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def _watch_tokens(self) -> None:
        """Re-read the token store when it changes; close sessions it no longer admits."""
        while True:
            await asyncio.sleep(self.state.settings.token_poll_interval)
            try:
                changed = self.state.store.refresh()
            except RelayConfigError as exc:
                log.error("token_store_unreadable", extra={"detail": str(exc)})
                continue
            if changed:
                self.enforce_tokens()

    def enforce_tokens(self) -> None:
        for session in self.state.registry.local_sessions():
            if session.phase is Phase.CLOSED or token_still_valid(self.state, session):
                continue
            log.warning("agent_revoked", extra={"agent": session.name})
            session.close(ErrorCode.UNAUTHORIZED, "the relay token was revoked", tunnel.WS_POLICY)

    async def drain(self, grace: float, force: Callable[[], bool] = lambda: False) -> None:
        """Graceful shutdown: refuse new work, GOAWAY every agent, let streams finish.

        Returns when every stream ended, after ``grace`` seconds, or once ``force()``
        is true; then closes every agent WebSocket that is still open.
        """
        self.state.draining = True
        sessions = self.state.registry.local_sessions()
        log.info("relay_draining", extra={"agents": len(sessions), "streams": self.streams()})
        for session in sessions:
            session.retire(ErrorCode.NO_ERROR, "relay shutting down", grace)
        deadline = time.monotonic() + grace
        # Polling (not an event): it must also notice force(), set by a signal handler.
        while self.streams() and time.monotonic() < deadline and not force():  # noqa: ASYNC110
            await asyncio.sleep(_DRAIN_POLL)
        live = self.state.registry.local_sessions()
        for session in live:
            session.close(ErrorCode.NO_ERROR, "relay shutting down", tunnel.WS_GOING_AWAY)
        loop = asyncio.get_running_loop()
        waits = [loop.create_task(s.closed.wait()) for s in live]
        if waits:
            await asyncio.wait(waits, timeout=_CLOSE_WAIT)
            for task in waits:
                task.cancel()
        log.info("relay_drained", extra={"streams_left": self.streams()})

    def agents(self) -> int:
        live = self.state.registry.local_sessions()
        return sum(s.phase is not Phase.CLOSED and not s.shared for s in live)

    def names(self) -> int:
        """Names served: a connection may carry several (relay.shared)."""
        return sum(s.phase is not Phase.CLOSED for s in self.state.registry.local_sessions())

    def streams(self) -> int:
        return sum(s.open_streams for s in self.state.registry.local_sessions())
