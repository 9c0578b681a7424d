"""What every part of a running relay shares: settings, token store, registry, counters."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from relay.config import Settings
from relay.grace import ResumeBook
from relay.metrics import Metrics
from relay.penalty import Offenders, Penalties
from relay.registry import InMemoryRegistry, SessionRegistry
from relay.tcp import TcpPorts
from relay.tokens import TokenStore

if TYPE_CHECKING:
    from relay.cluster.setup import Cluster


@dataclasses.dataclass(slots=True)
class RelayState:
    settings: Settings
    store: TokenStore
    registry: SessionRegistry = dataclasses.field(default_factory=InMemoryRegistry)
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    #: The listening ports of TCP tunnels.
    tcp: TcpPorts = dataclasses.field(default_factory=TcpPorts)
    #: Set by a graceful shutdown: new public requests get 503, new agents are refused.
    draining: bool = False
    #: Resumable sessions by id (:mod:`relay.grace`).
    resumes: ResumeBook = dataclasses.field(default_factory=ResumeBook)
    #: Agents cut off for a protocol error, and how long they wait (:mod:`relay.penalty`).
    penalties: Penalties = dataclasses.field(default_factory=Penalties)
    #: Public addresses that keep sending malformed heads (:mod:`relay.penalty`).
    offenders: Offenders = dataclasses.field(default_factory=Offenders)
    #: The cluster side of a ``--cluster`` node (relay.cluster); None: one process.
    cluster: Cluster | None = None

    @classmethod
    def create(cls, settings: Settings) -> RelayState:
        if settings.cluster is not None or settings.node_url is not None:
            from relay.cluster.setup import cluster_state

            return cluster_state(settings)
        store = TokenStore(settings.state_dir)
        store.refresh()
        return cls(settings, store, metrics=Metrics(settings.metrics_per_tunnel))
