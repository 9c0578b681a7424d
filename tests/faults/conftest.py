"""Fixtures of the fault suite: real ``edge-relay`` and ``edge-agent`` processes on
127.0.0.1 (from :mod:`tests.e2e.procs`) and one counting origin for the session.

Every process a test starts is stopped in a ``finally`` (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.procs import Procs
from tests.faults.stack import CountingOrigin


@pytest.fixture(scope="session")
def origin() -> Iterator[CountingOrigin]:
    with CountingOrigin() as server:
        yield server


@pytest.fixture
def procs() -> Iterator[Procs]:
    with Procs() as started:
        yield started
