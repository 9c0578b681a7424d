"""Runs last: the relay answered its health endpoint quickly during every attack of
this suite (the probe started with the relay, see ``conftest.py``)."""

from __future__ import annotations

import math

from tests.security.conftest import Edge

#: Slowest acceptable health answer during the attacks, in seconds (a wide margin on a
#: shared machine; a relay stalled by an attack takes seconds or never answers).
HEALTH_WITHIN = 2.0


def test_health_answered_fast_throughout(edge: Edge) -> None:
    probe = edge.probe
    print(f"\nduring the security suite: {probe.summary()}")
    assert len(probe.latencies) >= 10, "the probe ran alongside the attacks"
    assert math.inf not in probe.latencies, "a health request failed"
    assert probe.worst < HEALTH_WITHIN
