"""A relay process's metrics, exposed by prometheus-client at ``/_edge/metrics``.

Every relay gets its own :class:`~prometheus_client.CollectorRegistry` (never the global
default: tests run several relays in one process). What moves on every request or every
chunk is kept cheap:

* what every request moves (requests by status class, per tunnel, and the two
  histograms) is plain Python: lists of ``int`` indexed by status class, and
  :class:`_Buckets` (a ``bisect`` and two additions per observation), turned into
  samples by a collector only when Prometheus scrapes; prometheus-client's own
  ``Counter.inc`` and ``Histogram.observe`` cost 18 Python calls per request (a lock
  and a check per increment), the biggest item in the relay's profile of a small GET;
* labelled children of the rarer counters (errors, resets) are created once and cached;
* bytes in/out are plain ``int`` attributes (``metrics.bytes_in += n``, per chunk), and
  gauges (sessions, streams) are read from the live objects at scrape time.

Measured cost of what one forwarded request does (:meth:`Metrics.first_byte` plus
:meth:`Metrics.request_done` with a tunnel and a start time; ``timeit``, 100,000 calls,
CPython 3.11, best of 5): 1.75-1.8 us against 7.6-7.8 us with prometheus-client's
metrics, both on the same loaded 2-core machine (the latter measured 2.2 us on a quiet
one); ``tests/relay/test_metrics.py`` keeps it under 10 us for slow, shared machines.

Per-tunnel series (``tunnel="name"``) exist only while the relay holds at most
``--metrics-per-tunnel`` tunnels (0: never): past it, a tunnel without a series gets
none (its requests still count in the totals). A tunnel's series go when its last
session ends.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from wire import ErrorCode

#: Histogram buckets of request duration and time to first byte, in seconds: from a
#: local round trip (a few ms) to A2A tasks that take minutes.
BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip

#: ``--metrics-per-tunnel`` default: per-tunnel series while at most this many tunnels.
DEFAULT_PER_TUNNEL: Final = 100

#: Content type of the text exposition format.
CONTENT_TYPE: Final = b"text/plain; version=0.0.4; charset=utf-8"

_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")
_REQUESTS_HELP: Final = "Public requests answered, by status class (499: the caller left first)."
_TUNNEL_REQUESTS_HELP: Final = (
    "Public requests answered per tunnel, by status class (capped: --metrics-per-tunnel)."
)
#: Index in ``_CLASSES`` of the last class, which also counts any status outside 1xx-5xx.
_LAST: Final = len(_CLASSES) - 1


class _Buckets:
    """A histogram's state: a count per bucket (the last one past every bound) and the
    sum of the observed values."""

    __slots__ = ("counts", "help", "name", "total")

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value

    def family(self) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(self.name, self.help, buckets=buckets, sum_value=self.total)


class _Live(Collector):
    """Samples read at scrape time: gauges from callables, counters and histograms from
    the plain values the request path moves."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        for name, (help_text, read) in sorted(m.gauges.items()):
            yield GaugeMetricFamily(name, help_text, value=read())
        bytes_total = CounterMetricFamily(
            "edge_tunnel_bytes",
            "Bytes through tunnels, heads included: in = from public callers, out = to them.",
            labels=["direction"],
        )
        bytes_total.add_metric(["in"], m.bytes_in)
        bytes_total.add_metric(["out"], m.bytes_out)
        yield bytes_total
        requests = CounterMetricFamily("edge_requests", _REQUESTS_HELP, labels=["class"])
        for name, count in zip(_CLASSES, m.by_class, strict=True):
            requests.add_metric([name], count)
        yield requests
        per_tunnel = CounterMetricFamily(
            "edge_tunnel_requests", _TUNNEL_REQUESTS_HELP, labels=["tunnel", "class"]
        )
        for tunnel, counts in sorted(m.tunnel_counts.items()):
            for name, count in zip(_CLASSES, counts, strict=True):
                per_tunnel.add_metric([tunnel, name], count)
        yield per_tunnel
        yield m.duration.family()
        yield m.first_byte_time.family()

    def describe(self) -> list[Metric]:
        return []  # samples vary; do not collect at registration


class Metrics:
    """One relay process's metrics. Only ever touched from the event loop thread."""

    def __init__(self, per_tunnel: int = DEFAULT_PER_TUNNEL) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.per_tunnel = per_tunnel
        #: How many tunnels the relay holds (set by the app; read only on a cache miss).
        self.tunnels: Callable[[], int] = lambda: 0
        self.bytes_in = 0  # request bytes sent down tunnels (heads as rewritten, bodies)
        self.bytes_out = 0  # response bytes written to public callers (heads included)
        self.gauges: dict[str, tuple[str, Callable[[], int]]] = {}
        reg = self.registry
        reg.register(_Live(self))
        self.by_class = [0] * len(_CLASSES)  # requests answered, by status class
        self._errors = Counter(
            "edge_relay_errors",
            "Requests the relay answered with its own error, by x-edge-error code.",
            ["code"],
            registry=reg,
        )
        self._error_children: dict[str, Counter] = {}
        self.duration = _Buckets(
            "edge_request_duration_seconds",
            "Forwarded requests: from the head's arrival to the exchange's end.",
        )
        self.first_byte_time = _Buckets(
            "edge_request_first_byte_seconds",
            "Forwarded requests: from the head's arrival to the response's first byte.",
        )
        self.tunnel_counts: dict[str, list[int]] = {}  # per tunnel, by status class
        self._resets = Counter(
            "edge_stream_resets",
            "Stream resets, by who sent them and error code.",
            ["by", "code"],
            registry=reg,
        )
        self._reset_children: dict[tuple[str, ErrorCode], Counter] = {}
        self._sessions = Counter("edge_agent_sessions", "Agent sessions established.", registry=reg)
        self._replaced = Counter(
            "edge_sessions_replaced",
            "Sessions replaced by a newer session for the same name.",
            registry=reg,
        )
        self._reconnects = Counter(
            "edge_agent_reconnects",
            "Sessions for a name that had one before (connected or within the known-name "
            "memory): every session per name after the first.",
            registry=reg,
        )
        self._protocol_errors = Counter(
            "edge_protocol_errors",
            "Agent sessions closed for breaking the protocol.",
            registry=reg,
        )
        self._blocked = Counter(
            "edge_public_blocked_connections",
            "Public connections cut on accept: their address kept sending malformed heads.",
            registry=reg,
        )
        self._refusals = Counter(
            "edge_agent_refusals",
            "Agent upgrade requests refused before the WebSocket opened, by status.",
            ["status"],
            registry=reg,
        )

    # -- registration -----------------------------------------------------------------------

    def gauge(self, name: str, help_text: str, read: Callable[[], int]) -> None:
        self.gauges[name] = (help_text, read)

    # -- per request (hot) ------------------------------------------------------------------

    def request_done(
        self,
        status: int,
        code: str | None = None,
        tunnel: str | None = None,
        started: float | None = None,
    ) -> None:
        """Count a public request: its status, the relay's error ``code`` if it answered
        with one, its ``tunnel`` when known, and its duration from ``started``
        (``time.monotonic()``) when it was forwarded."""
        index = status // 100 - 1
        if not 0 <= index <= _LAST:
            index = _LAST
        self.by_class[index] += 1
        if code is not None:
            child = self._error_children.get(code)
            if child is None:
                child = self._error_children[code] = self._errors.labels(code)
            child.inc()
        if started is not None:
            self.duration.observe(time.monotonic() - started)
        if tunnel is not None:
            counts = self.tunnel_counts.get(tunnel)
            if counts is None:
                counts = self._new_tunnel(tunnel)
                if counts is None:
                    return
            counts[index] += 1

    def first_byte(self, started: float) -> None:
        """The first byte of a forwarded request's response went out."""
        self.first_byte_time.observe(time.monotonic() - started)

    def _new_tunnel(self, tunnel: str) -> list[int] | None:
        if not self.per_tunnel or self.tunnels() > self.per_tunnel:
            return None
        counts = self.tunnel_counts[tunnel] = [0] * len(_CLASSES)
        return counts

    def tunnel_gone(self, tunnel: str) -> None:
        """The tunnel's last session ended: drop its series (bounded cardinality)."""
        self.tunnel_counts.pop(tunnel, None)

    def reset(self, by: str, code: ErrorCode) -> None:
        """Count a RESET sent (``by="relay"``) or received (``by="agent"``)."""
        child = self._reset_children.get((by, code))
        if child is None:
            child = self._reset_children[by, code] = self._resets.labels(by, code.name)
        child.inc()

    # -- sessions ---------------------------------------------------------------------------

    def session_started(self, replaced: bool, reconnect: bool) -> None:
        self._sessions.inc()
        if replaced:
            self._replaced.inc()
        if reconnect:
            self._reconnects.inc()

    def protocol_error(self) -> None:
        self._protocol_errors.inc()

    def connection_blocked(self) -> None:
        self._blocked.inc()

    def agent_refused(self, status: int) -> None:
        self._refusals.labels(str(status)).inc()

    # -- exposition -------------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def sample(self, name: str, **labels: str) -> float:
        """One sample's value (0 when it does not exist), e.g. for tests."""
        return self.registry.get_sample_value(name, labels) or 0.0
