"""Pools: several agent sessions serving one name at once.

An agent whose HELLO says ``pool`` joins its name's sessions instead of replacing them
(:class:`relay.registry.InMemoryRegistry` keeps them; its ``lookup`` spreads new
exchanges over the healthy ones, fewest open streams first). This module holds the
rest of what pools need:

* **Admission** (:func:`check`): only HTTP tunnels pool (a TCP tunnel's port and a TLS
  name's SNI route belong to one session); a token must have been issued with
  ``--pool``; in open mode the name's sessions must present the same agent key (the rule
  :func:`relay.agents.may_take` already applies before the upgrade: without a token,
  only the machine that holds a name may add to it); at most :data:`MAX_POOL_SESSIONS`
  sessions per name. A refusal is a GOAWAY with the reason, as for tunnel kinds.
* **Retry** (:func:`retry`): when a pool member drops, an exchange whose bytes never
  went to that member's link, or that the agent refused unseen (GOAWAY's last stream
  id, RESET REFUSED_STREAM), is opened again on another member, from a copy of the
  request the relay keeps while it is small (:data:`REPLAY_LIMIT`). An exchange whose
  bytes were handed to the member's socket is never retried: the agent may have
  processed them (no double POST); its caller gets the relay's error as before.
* **Visibility**: log lines ``pool_joined`` / ``pool_left`` with the pool's size, and
  :class:`PoolMetrics` (``edge_pool_sessions``, ``edge_pool_session_streams``,
  ``edge_pool_retries_total``) on ``/_edge/metrics``.
"""

from __future__ import annotations

import hmac
import itertools
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.kinds import Refused
from relay.registry import least_busy
from relay.state import RelayState
from tunnel import Stream
from wire import ErrorCode, Hello, LocalProtocolError, StreamKind

if TYPE_CHECKING:
    from relay.agents import AgentSession
    from relay.exchange import Exchange

log = logging.getLogger(__name__)

#: Most sessions one name's pool holds; one more is refused with LIMIT_EXCEEDED (the
#: agent retries later).
MAX_POOL_SESSIONS: Final = 32

#: Request bytes (head as rewritten, and body) the relay keeps to replay an exchange on
#: another pool member; a larger request is not retried. Kept only for pool sessions.
REPLAY_LIMIT: Final = 64 * 1024

#: Times one exchange is opened again before the relay gives up and answers its error.
MAX_RETRIES: Final = 2

#: Most pooled names with per-session series on ``/_edge/metrics`` (bounded cardinality;
#: the retry counter counts every pool).
MAX_POOL_SERIES: Final = 100

_SERIALS: Final = itertools.count(1)  # pool sessions' numbers (labels and logs)


def check(state: RelayState, name: str, hello: Hello, has_token: bool) -> None:
    """Raise :class:`Refused` unless a session for ``name`` may join its pool."""
    if hello.tunnel is not StreamKind.HTTP:
        raise Refused(
            ErrorCode.UNAUTHORIZED,
            "pools serve HTTP tunnels only (a TCP or TLS tunnel is one session): leave out --pool",
        )
    if has_token:
        record = state.store.record(name)
        if record is None or not record.pool:
            raise Refused(
                ErrorCode.UNAUTHORIZED,
                f"the relay token for {name} may not pool (the relay operator grants it: "
                f"edge-relay token issue {name} --pool --replace)",
            )
    if len(state.registry.members(name)) >= MAX_POOL_SESSIONS:
        raise Refused(
            ErrorCode.LIMIT_EXCEEDED,
            f"the pool of {name} is full ({MAX_POOL_SESSIONS} sessions); retry later",
        )


def size(state: RelayState, name: str) -> int:
    """Sessions that serve ``name`` now."""
    return len(state.registry.members(name))


def members(session: AgentSession) -> list[AgentSession]:
    """The other sessions of ``session``'s pool."""
    return [m for m in session.state.registry.members(session.name) if m is not session]


def stale(state: RelayState, session: AgentSession) -> list[AgentSession]:
    """Sessions of the pool ``session`` joins that an earlier session of the same agent
    left behind: same token, same agent key (``X-Edge-Agent-Key``, which ``edge-agent``
    keeps per process when it has a token). An agent reconnects only after its session
    ended on its side, so the relay's end of that one is dead or dying: the new session
    replaces it at once instead of leaving it to the keepalive. Not in open mode, where
    the key is the machine's and two agents of one machine pool."""
    key = session.claim.key_sha256
    if key is None or session.token_sha256 is None:
        return []
    return [
        member
        for member in state.registry.members(session.name)
        if member.pool
        and member.claim.key_sha256 is not None
        and hmac.compare_digest(member.claim.key_sha256, key)
    ]


def label(session: AgentSession) -> str:
    """How logs and metrics name a pool session: its address and its number."""
    return f"{session.client}#{session.pool_id}"


def joined(session: AgentSession, stale: list[AgentSession]) -> None:
    """``session`` joined its pool: number it, retire what its agent left, log it."""
    session.pool_id = next(_SERIALS)
    for old in stale:
        reason = f"replaced by a new session of the same agent from {session.client}"
        old.retire(ErrorCode.REPLACED, reason, session.state.settings.drain_timeout)
    log.info(
        "pool_joined",
        extra={
            "agent": session.name,
            "client": label(session),
            "pool_size": size(session.state, session.name),
        },
    )


def left(session: AgentSession) -> None:
    log.info(
        "pool_left",
        extra={
            "agent": session.name,
            "client": label(session),
            "pool_size": size(session.state, session.name),
        },
    )


def retryable(exchange: Exchange, code: ErrorCode) -> bool:
    """Whether the agent certainly never saw ``exchange``'s bytes, and a copy is kept."""
    stream = exchange.stream
    if exchange.replay is None or exchange.sent or exchange.tries >= MAX_RETRIES:
        return False
    if stream is not None and not isinstance(stream, Stream):
        return False  # held by another node (relay.cluster): its relay retries, not this one
    if code is ErrorCode.REFUSED_STREAM:
        return True  # the agent says it did not start it (GOAWAY's last id, or a RESET)
    return stream is not None and not stream.session.reached_link(stream.sid)


def retry(exchange: Exchange, state: RelayState, metrics: PoolMetrics) -> bool:
    """Open ``exchange`` again on another healthy session of its pool. False when none
    can take it (the caller answers the error it had)."""
    old = exchange.stream.session if isinstance(exchange.stream, Stream) else None
    others = [
        s
        for s in state.registry.members(exchange.name)
        if s.accepting and s.session is not old and s.session.conn.can_open()
    ]
    if not others or exchange.replay is None:
        return False
    session = least_busy(others)
    end = exchange.request_done and not exchange.watch.upgrade
    data = b"".join(exchange.replay)
    try:
        exchange.stream = session.session.open(StreamKind.HTTP, exchange, data, end=end)
    except LocalProtocolError:
        return False
    exchange.tries += 1
    metrics.retries += 1
    log.info("pool_retry", extra={"agent": exchange.name, "client": label(session)})
    return True


def keep(exchange: Exchange, data: bytes) -> None:
    """Keep request bytes for a replay, or give the replay up past :data:`REPLAY_LIMIT`."""
    replay = exchange.replay
    if replay is None:
        return
    exchange.kept += len(data)
    if exchange.kept > REPLAY_LIMIT:
        exchange.replay = None
    else:
        replay.append(data)


class PoolMetrics(Collector):
    """Samples of the pools, read from the registry at scrape time."""

    def __init__(self, state: RelayState) -> None:
        self.state = state
        self.retries = 0  # exchanges opened again on another member

    def collect(self) -> Iterator[Metric]:
        sessions = GaugeMetricFamily(
            "edge_pool_sessions", "Sessions serving each pooled name.", labels=["tunnel"]
        )
        streams = GaugeMetricFamily(
            "edge_pool_session_streams",
            "Open streams of each session of a pool (session: the agent's address#number).",
            labels=["tunnel", "session"],
        )
        for name, members in sorted(self._pools().items())[:MAX_POOL_SERIES]:
            sessions.add_metric([name], len(members))
            for member in members:
                streams.add_metric([name, label(member)], member.open_streams)
        yield sessions
        yield streams
        yield CounterMetricFamily(
            "edge_pool_retries",
            "Exchanges opened again on another pool member (their bytes never reached the "
            "first one).",
            value=self.retries,
        )

    def describe(self) -> list[Metric]:
        return []  # samples vary; do not collect at registration

    def _pools(self) -> dict[str, list[AgentSession]]:
        """The sessions of every name that a pooling session serves."""
        registry = self.state.registry
        names = {s.name for s in registry.local_sessions() if s.pool and s.name}
        pools = {name: registry.members(name) for name in names}
        return {name: members for name, members in pools.items() if members}
