"""What every part of a running relay shares: settings, token store, registry, counters."""

from __future__ import annotations

import dataclasses

from relay.config import Settings
from relay.grace import ResumeBook
from relay.metrics import Metrics
from relay.registry import InMemoryRegistry, SessionRegistry
from relay.tcp import TcpPorts
from relay.tokens import TokenStore


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

    @classmethod
    def create(cls, settings: Settings) -> RelayState:
        store = TokenStore(settings.state_dir)
        store.refresh()
        return cls(settings, store, metrics=Metrics(settings.metrics_per_tunnel))
