"""Pools across the nodes of a relay cluster.

A pooled name (token issued with ``--pool``, agents with ``--pool``) may have members on
several nodes at once: each node that holds members publishes ``edge:pool:<name>|<node>``
(:mod:`relay.cluster.node`), and no member replaces another. Then:

* a node that holds members serves the name itself, over its own members
  (:mod:`relay.pools`: fewest open streams first, retries among them);
* a node that holds none forwards each request to one of the nodes that do
  (:func:`pick`): the one with the fewest exchanges this node has in flight to it, equals
  taking turns, a node whose link failed (or broke before an answer) or that refused
  in the last :data:`DOWN_SECONDS` last (a dying node can still complete a TCP handshake
  in its kernel, and what is written then is lost with it);
* a forwarded request that reached no agent is sent to another node of the pool
  (:func:`retry`, from the copy :mod:`relay.pools` keeps up to ``REPLAY_LIMIT`` bytes):
  when no link to its node could be opened (the node is dead: no byte left this node), or
  when that node refused it because it holds no member any more (its last one died or
  left: :class:`relay.cluster.hop.HopNotHeld`). A request whose bytes went down a link to
  a node that then failed is never sent again (that node may have handed it to an agent:
  no double POST); its caller gets 503 ``node_unreachable``.

:class:`PoolNodeMetrics` puts ``edge_cluster_pool_nodes`` (nodes holding members of each
pooled name, this one included) and ``edge_cluster_pool_retries`` on ``/_edge/metrics``;
the members here are ``edge_pool_sessions``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.cluster.hop import LinkPool, NodeStream
from relay.pools import MAX_POOL_SERIES, MAX_RETRIES

if TYPE_CHECKING:
    from relay.cluster.node import Directory
    from relay.exchange import Exchange

log = logging.getLogger(__name__)

#: Seconds a node whose link could not be opened, or that refused a hop for the pool,
#: is picked only when no other can be.
DOWN_SECONDS: Final = 3.0


def pick(nodes: list[str], links: LinkPool, turn: int) -> str:
    """The node of ``nodes`` (not empty) with the fewest exchanges in flight from here,
    among equals the first from position ``turn``; nodes that failed lately last."""
    now = asyncio.get_running_loop().time()
    best = nodes[0]
    rank: tuple[bool, int] | None = None
    count = len(nodes)
    for i in range(count):
        node = nodes[(turn + i) % count]
        down = now - links.down.get(node, -DOWN_SECONDS) < DOWN_SECONDS
        mine = (down, links.busy.get(node, 0))
        if rank is None or mine < rank:
            best, rank = node, mine
    return best


def retry(exchange: Exchange, stream: NodeStream, directory: Directory, turn: int) -> bool:
    """Send ``exchange`` to another node of its pool when ``stream`` certainly got it to
    no agent; False when it cannot be (the caller answers the error)."""
    if not (stream.unsent or stream.refused):
        return False
    if exchange.replay is None or exchange.sent or exchange.tries >= MAX_RETRIES:
        return False
    tried = stream.tried | {stream.node}
    nodes = [node for node in directory.owners(exchange.name) if node not in tried]
    if not nodes:
        return False
    links = stream.pool
    node = pick(nodes, links, turn)
    data = b"".join(exchange.replay)
    exchange.tries += 1
    exchange.stream = again = NodeStream(links, node, exchange, data, False, frozenset(tried))
    if again.link is not None:
        exchange.resume_writing()  # the first stream paused the caller until its link
    log.info("cluster_pool_retry", extra={"agent": exchange.name, "node": node})
    return True


class PoolNodeMetrics(Collector):
    """The cluster's side of the pools, read at scrape time."""

    def __init__(self, directory: Directory, local: Callable[[], dict[str, int]]) -> None:
        self.directory = directory
        self.local = local  # pooled names with members here -> how many
        self.retries = 0  # forwarded exchanges sent to another node of their pool

    def collect(self) -> Iterator[Metric]:
        nodes = GaugeMetricFamily(
            "edge_cluster_pool_nodes",
            "Nodes holding members of each pooled name (this node included when it holds "
            "some; edge_pool_sessions counts the members here).",
            labels=["tunnel"],
        )
        local = self.local()
        names = sorted(set(local) | set(self.directory.pools))[:MAX_POOL_SERIES]
        for name in names:
            others = len(self.directory.pools.get(name, ()))
            nodes.add_metric([name], others + (1 if local.get(name) else 0))
        yield nodes
        yield CounterMetricFamily(
            "edge_cluster_pool_retries",
            "Forwarded exchanges sent to another node of their pool (they reached no agent).",
            value=self.retries,
        )

    def describe(self) -> list[Metric]:
        return []  # samples vary; do not collect at registration
