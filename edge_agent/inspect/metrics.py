"""The agent's own metrics, in the Prometheus text format on the inspector's ``/metrics``.

Fed by the same per-exchange records as the request lines (one call per finished
exchange), and by the tunnel client's state read at scrape time. A private registry
(never prometheus-client's global one): several agents may run in one process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from edge_agent.port import ExchangeRecord

if TYPE_CHECKING:
    from edge_agent.inspect.launch import Inspector

#: Buckets of the duration histogram, seconds: sub-millisecond local answers up to
#: long A2A tasks.
BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class AgentMetrics:
    """Counters of one agent process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self._requests = Counter(
            "edge_agent_requests", "Exchanges served, by status class.", ["class"], registry=reg
        )
        self._resets = Counter(
            "edge_agent_stream_resets",
            "Exchanges that ended in a reset, by code.",
            ["code"],
            registry=reg,
        )
        self._duration = Histogram(
            "edge_agent_request_duration_seconds",
            "Time from the stream's opening to its end.",
            buckets=BUCKETS,
            registry=reg,
        )
        self._bytes = Counter(
            "edge_agent_bytes",
            "Bytes through the tunnel: in = requests, out = responses.",
            ["direction"],
            registry=reg,
        )
        self._in = self._bytes.labels("in")
        self._out = self._bytes.labels("out")

    def watch(
        self,
        connected: Callable[[], bool],
        streams: Callable[[], int],
        pool: Callable[[], int] = lambda: 0,
    ) -> None:
        """Gauges read from the tunnel client when scraped."""
        reg = self.registry
        Gauge(
            "edge_agent_pool_size",
            "Agents in this agent's pool when it joined, with it (0: not in a pool); "
            "edge_agent_requests counts this agent's share.",
            registry=reg,
        ).set_function(lambda: float(pool()))
        Gauge(
            "edge_agent_connected", "1 while the tunnel session is up.", registry=reg
        ).set_function(lambda: float(connected()))
        Gauge("edge_agent_streams_open", "Exchanges in flight.", registry=reg).set_function(
            lambda: float(streams())
        )

    def record(self, record: ExchangeRecord) -> None:
        status = record.status
        self._requests.labels(f"{status // 100}xx" if status else "none").inc()
        if record.reset is not None:
            self._resets.labels(record.reset.name).inc()
        self._duration.observe(record.duration_ms / 1000.0)
        self._in.inc(record.bytes_in)
        self._out.inc(record.bytes_out)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve_on(
    inspector: Inspector,
    connected: Callable[[], bool],
    streams: Callable[[], int],
    pool: Callable[[], int] = lambda: 0,
) -> Callable[[ExchangeRecord], None]:
    """Put a new set of metrics on the inspector's ``/metrics``; returns their record sink."""
    metrics = AgentMetrics()
    metrics.watch(connected, streams, pool)
    inspector.server.metrics = metrics
    return metrics.record
