"""The peer benchmark's verdicts: "met" only against a figure of the same run."""

from __future__ import annotations

from bench.compare import SSE_TARGET, targets


def _sse(figures: dict[str, dict[str, float]]) -> tuple[str, str]:
    found = [t for t in targets(figures, {}, {}) if t.text == SSE_TARGET]
    assert len(found) == 1
    return found[0].status, found[0].evidence


def test_sse_is_pending_without_a_direct_figure() -> None:
    status, evidence = _sse({"edge": {"sse_first_ms": 1.0, "sse_incremental": 1.0}})
    assert status == "pending" and "direct" in evidence


def test_sse_is_judged_against_direct() -> None:
    edge = {"sse_first_ms": 1.3, "sse_incremental": 1.0}
    assert _sse({"edge": edge, "direct": {"sse_first_ms": 1.0}})[0] == "met"
    assert _sse({"edge": edge, "direct": {"sse_first_ms": 0.5}})[0] == "not met"
    late = {"sse_first_ms": 1.0, "sse_incremental": 0.0}
    assert _sse({"edge": late, "direct": {"sse_first_ms": 1.0}})[0] == "not met"
