"""The agent's side of resumption that needs no network: how fast it comes back, and
what its HELLO asks for."""

from __future__ import annotations

import random

from edge_agent.resume import RESUME_WAIT_FIRST, RESUME_WAIT_MAX, resume_wait, ticket
from wire.resume import ResumeTicket


def test_a_parked_session_reconnects_quickly_with_jitter_and_a_cap() -> None:
    random.seed(7)
    for attempt in range(1, 40):
        bound = min(RESUME_WAIT_FIRST * 2 ** (attempt - 1), RESUME_WAIT_MAX)
        waits = [resume_wait(attempt) for _ in range(200)]
        assert all(bound / 2 <= w <= bound for w in waits), attempt
        assert max(waits) - min(waits) > bound / 4  # spread: agents dropped together part
    assert resume_wait(1) <= RESUME_WAIT_FIRST


def test_without_a_parked_session_hello_only_asks_for_resumption() -> None:
    assert ticket(None) == ResumeTicket()
    assert not ticket(None).resuming
