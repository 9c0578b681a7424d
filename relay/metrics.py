"""Counters of a relay process, rendered in the Prometheus text format (version 0.0.4).

Hand-written on purpose: a few counters and gauges do not justify a dependency. Gauges
(agents connected, streams open) are read from the live objects at scrape time through
callables, so they can never drift from the truth.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from wire import ErrorCode


class Metrics:
    """Process-wide counters. Only ever touched from the event loop thread."""

    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()  # by status class
        self.bytes_in = 0  # request bytes sent down tunnels (heads as rewritten, bodies)
        self.bytes_out = 0  # response bytes written to public callers (heads included)
        self.resets: collections.Counter[tuple[str, str]] = collections.Counter()  # (by, code)
        self.sessions_replaced = 0
        self.sessions_total = 0
        self.protocol_errors = 0
        self.agent_refusals: collections.Counter[int] = collections.Counter()  # by status
        self.gauges: dict[str, tuple[str, Callable[[], int]]] = {}

    def gauge(self, name: str, help_text: str, read: Callable[[], int]) -> None:
        self.gauges[name] = (help_text, read)

    def request_done(self, status: int) -> None:
        self.requests[f"{status // 100}xx"] += 1

    def reset(self, by: str, code: ErrorCode) -> None:
        """Count a RESET sent (``by="relay"``) or received (``by="agent"``)."""
        self.resets[by, code.name] += 1

    def render(self) -> str:
        out: list[str] = []
        for name, (help_text, read) in sorted(self.gauges.items()):
            _family(out, name, "gauge", help_text, [("", read())])
        _family(
            out,
            "edge_requests_total",
            "counter",
            "Public requests answered, by status class.",
            [(f'class="{k}"', v) for k, v in sorted(self.requests.items())],
        )
        _family(
            out,
            "edge_tunnel_bytes_total",
            "counter",
            "Bytes through tunnels, heads included: in = from public callers, out = to them.",
            [('direction="in"', self.bytes_in), ('direction="out"', self.bytes_out)],
        )
        _family(
            out,
            "edge_stream_resets_total",
            "counter",
            "Stream resets, by who sent them and error code.",
            [(f'by="{by}",code="{code}"', v) for (by, code), v in sorted(self.resets.items())],
        )
        _family(
            out,
            "edge_agent_sessions_total",
            "counter",
            "Agent sessions established.",
            [("", self.sessions_total)],
        )
        _family(
            out,
            "edge_sessions_replaced_total",
            "counter",
            "Sessions replaced by a newer session for the same name.",
            [("", self.sessions_replaced)],
        )
        _family(
            out,
            "edge_protocol_errors_total",
            "counter",
            "Agent sessions closed for breaking the protocol.",
            [("", self.protocol_errors)],
        )
        _family(
            out,
            "edge_agent_refusals_total",
            "counter",
            "Agent upgrade requests refused before the WebSocket opened, by status.",
            [(f'status="{k}"', v) for k, v in sorted(self.agent_refusals.items())],
        )
        return "\n".join(out) + "\n"


def _family(
    out: list[str], name: str, kind: str, help_text: str, samples: list[tuple[str, int]]
) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        out.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")
