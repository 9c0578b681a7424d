"""Wiring a relay process into the cluster: its registry, token store, hops and node.

:class:`ClusterRegistry` is the one-process registry plus publishing: a name this node
claims is announced to the cluster, a name it no longer holds is withdrawn, and a name
another node holds is "known" here (503 while it moves, never 404). A pooled name is
announced as this node's share of its pool instead (:mod:`relay.cluster.pooling`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from relay import h1, pools
from relay.cluster import pooling, redisconn
from relay.cluster.errors import ClusterConfigError
from relay.cluster.hop import (
    HOP_HEADER,
    HopForbidden,
    HopMetrics,
    HopNotHeld,
    LinkPool,
    NodeStream,
    hop_head,
    hop_value,
    secret_matches,
)
from relay.cluster.node import ClusterNode
from relay.cluster.tokens import RedisTokenStore
from relay.errors import AgentOffline, NodeUnreachable, PublicError
from relay.registry import InMemoryRegistry
from wire import ErrorCode

if TYPE_CHECKING:
    from relay.agents import AgentSession
    from relay.app import RelayApp
    from relay.config import Settings
    from relay.exchange import Exchange
    from relay.public import PublicConnection, Route
    from relay.state import RelayState

log = logging.getLogger(__name__)


class ClusterRegistry(InMemoryRegistry):
    """:class:`InMemoryRegistry` that publishes the names it holds (see the module doc)."""

    def __init__(self, node: ClusterNode) -> None:
        super().__init__()
        self.node = node
        self.held: set[str] = set()
        self.pooled: set[str] = set()  # held names published as a share of a pool

    def claim(self, session: AgentSession) -> AgentSession | None:
        old = super().claim(session)
        name = session.name
        self.held.add(name)
        if session.pool:
            self.pooled.add(name)
            self.node.join_pool(name, len(self.members(name)))
            return old
        if name in self.pooled:  # a session that does not pool replaced the pool
            self.pooled.discard(name)
            self.node.leave_pool(name)
        self.node.publish(name)
        return old

    def release(self, session: AgentSession) -> None:
        super().release(session)
        name = session.name
        if name in self.held and not self.members(name):
            self.held.discard(name)
            if name in self.pooled:
                self.pooled.discard(name)
                self.node.leave_pool(name)
            else:
                self.node.withdraw(name)

    def pools(self) -> dict[str, int]:
        """Pooled names held here -> their members here."""
        return {name: len(self.members(name)) for name in self.pooled}

    def lookup(self, name: str) -> AgentSession | None:
        # A session whose name moved to another node drains here; new requests go there.
        session = super().lookup(name)
        return session if session is None or name in self.held else None

    def known(self, name: str) -> bool:
        directory = self.node.directory
        return super().known(name) or name in directory.remote or name in directory.pools


class Cluster:
    """What a node adds to :class:`relay.state.RelayState` (``state.cluster``)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.cluster is not None and settings.node_url is not None  # checked
        self.node_url = settings.node_url
        self.node = ClusterNode(settings.cluster, settings.node_url, self._held, self._pools)
        self.registry = ClusterRegistry(self.node)
        self.pools = pooling.PoolNodeMetrics(self.node.directory, self.registry.pools)
        self._turn = 0  # where a pick among a pool's nodes starts: equals take turns
        self.store = RedisTokenStore(self.node.client, self.node.where())
        self.hops: HopMetrics | None = None
        self.links: LinkPool | None = None
        self.app: RelayApp | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _held(self) -> set[str]:
        return set(self.registry.held)

    def _pools(self) -> dict[str, int]:
        return self.registry.pools()

    def owner(self, name: str) -> str | None:
        """The node URL of another node that serves ``name`` (of a pool's nodes, the one
        :func:`relay.cluster.pooling.pick` picks), or None."""
        directory = self.node.directory
        if name not in directory.pools:
            return directory.remote.get(name)
        nodes = directory.owners(name)
        if len(nodes) == 1 or self.links is None:
            return nodes[0]
        self._turn += 1
        return pooling.pick(nodes, self.links, self._turn)

    async def start(self, app: RelayApp) -> None:
        """Join: reach Redis, read tokens and the directory. ClusterConfigError if not."""
        import redis

        self.app = app
        metrics = app.state.metrics
        self.hops = HopMetrics(metrics)
        self.links = LinkPool(self.hops, lambda: self.node.secrets)
        metrics.registry.register(self.pools)
        metrics.gauge(
            "edge_cluster_nodes", "Other nodes holding sessions.", self.node.directory.nodes
        )
        metrics.gauge(
            "edge_cluster_remote_tunnels",
            "Tunnel names held by other nodes (this node forwards their requests).",
            lambda: len(self.node.directory.remote),
        )
        metrics.gauge("edge_cluster_redis_up", "1 while Redis answers.", lambda: int(self.node.up))
        self.node.on_taken = self._taken
        self.node.on_tokens = self.tokens_changed
        try:
            await self.store.load()
        except redis.RedisError as exc:
            raise ClusterConfigError(f"cannot read the token store in Redis: {exc}") from exc
        self.store.refresh()
        await self.node.start()

    async def stop(self) -> None:
        for task in [*self._tasks, *self.store.tasks]:
            task.cancel()
        if self.links is not None:
            self.links.close()
        await self.node.stop()

    # -- hops (the public side's hooks) -----------------------------------------------------

    def arrived(self, conn: PublicConnection, head: h1.Head) -> bool:
        """Whether ``head`` was forwarded by another node (then its connection is trusted
        as a front proxy). Raises HopForbidden for an X-Edge-Hop without the secret."""
        value = hop_value(head)
        if value is None:
            return False
        if not secret_matches(value, self.node.secrets):
            log.warning("cluster_hop_forged", extra={"client": conn.client_ip})
            raise HopForbidden()
        conn.trusted = True
        if self.hops is not None:
            self.hops.received()
        return True

    def forward(self, conn: PublicConnection, head: h1.Head, where: Route, node: str) -> None:
        """Send the request to ``node``, which holds ``where.name``'s session."""
        assert self.links is not None and self.hops is not None  # started
        raw = h1.rewrite_head(
            head,
            target=head.target,
            forwarding=conn.forwarding,
            host=head.host,
            prefix=None,
            trusted=conn.trusted,
            strip=(HOP_HEADER,),
        )
        raw = hop_head(raw, self.node.secrets[0])
        links = self.links
        head_only = head.framing is h1.Framing.NONE and head.upgrade is None
        pooled = where.name in self.node.directory.pools

        def stream(exchange: Exchange) -> NodeStream:
            if pooled:  # a copy, to send it to another node of the pool (relay.pools)
                exchange.replay = []
                pools.keep(exchange, raw)
            return NodeStream(links, node, exchange, raw, head_only)

        conn.start_exchange(head, where, raw, stream)
        self.hops.out(node)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("cluster_hop", extra={"agent": where.name, "node": node})

    def not_here(self, name: str, head: h1.Head) -> None:
        """A hop for ``name``, which this node does not serve: raise HopNotHeld when
        other nodes serve its pool (the entry node tries one of them). The refusal
        carries the secret the hop carried, which the entry node surely knows: were it
        ever passed on to a caller, it would tell them nothing new."""
        value = hop_value(head)
        if name in self.node.directory.pools and value:
            raise HopNotHeld(value.decode("ascii", "replace"))

    def instead(self, session: AgentSession) -> AgentSession | None:
        """``session`` serves its name here but takes no new exchange (draining, paused):
        None when other nodes hold members of its pool (the request goes there)."""
        return None if session.name in self.node.directory.pools else session

    def refusal(self, exchange: Exchange) -> HopNotHeld | None:
        """A hop whose exchange no member here can take (it reached none): the refusal
        that sends it back to the entry node for another node of the pool, or None."""
        if exchange.name not in self.node.directory.pools:
            return None
        for name, value in exchange.headers:
            if name == HOP_HEADER:  # checked against the secret when it arrived
                return HopNotHeld(value.decode("ascii", "replace"))
        return None

    def failed(self, exchange: Exchange, stream: NodeStream) -> PublicError | None:
        """A forwarded exchange failed before any answer: None when another node of
        its pool took it, else the caller's error."""
        self._turn += 1
        if pooling.retry(exchange, stream, self.node.directory, self._turn):
            self.pools.retries += 1
            return None
        if stream.refused:
            return AgentOffline()
        if stream.unsent:
            return NodeUnreachable()
        return NodeUnreachable(
            "the relay node that holds this tunnel closed the connection before answering"
        )

    def _taken(self, name: str) -> None:
        """Another node now holds ``name``: the sessions here go (GOAWAY REPLACED), a
        pool's members too (a session that does not pool replaces the whole pool)."""
        self.registry.held.discard(name)
        if name in self.registry.pooled:
            self.registry.pooled.discard(name)
            self.node.leave_pool(name)
        if self.app is None:
            return
        for session in self.registry.members(name):
            session.retire(
                ErrorCode.REPLACED,
                "replaced by a session for this name on another relay node",
                self.app.state.settings.drain_timeout,
            )

    def tokens_changed(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload_tokens())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_tokens(self) -> None:
        import redis

        try:
            await self.store.load()
        except redis.RedisError as exc:
            log.error("cluster_tokens_unreadable", extra={"detail": str(exc)})
            return
        if self.store.refresh() and self.app is not None:
            self.app.enforce_tokens()


def check(settings: Settings) -> None:
    """``--cluster`` needs ``--node-url`` and redis-py. Raises ClusterConfigError."""
    if settings.cluster is None:
        if settings.node_url is not None:
            raise ClusterConfigError("--node-url needs --cluster")
        return
    if settings.node_url is None:
        raise ClusterConfigError("--cluster needs --node-url (how other nodes reach this one)")
    if settings.open_mode:
        # Open mode guards a name only by the agent key its node saw; a cluster would let
        # a machine take a name held on another node. It is for one local relay.
        raise ClusterConfigError("--open is for one local relay; a cluster needs tokens")
    if (why := redisconn.import_error()) is not None:
        raise ClusterConfigError(why)


def cluster_state(settings: Settings) -> RelayState:
    """The state of a cluster node (nothing reaches Redis before :meth:`Cluster.start`)."""
    from relay.metrics import Metrics
    from relay.state import RelayState

    check(settings)
    cluster = Cluster(settings)
    state = RelayState(
        settings,
        cluster.store,
        registry=cluster.registry,
        metrics=Metrics(settings.metrics_per_tunnel),
    )
    state.cluster = cluster
    return state
