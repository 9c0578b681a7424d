"""Fixtures of the NAT suite: a fresh topology per test, removed however the test ends.

* ``nat_host`` (session): checks root and installs nftables/iproute2 if missing (else the
  whole suite is skipped with the reason printed); sweeps namespaces left by dead runs;
  removes this run's namespaces at the end of the session, at interpreter exit, and on
  SIGTERM (turned into KeyboardInterrupt so that pytest runs the finalizers).
* ``topo``: a :class:`~tests.nat.topology.Topology` built for one test and destroyed
  after it; when the test failed, the output of every process it started is printed.
"""

from __future__ import annotations

import atexit
import os
import signal
from collections.abc import Generator, Iterator
from pathlib import Path
from types import FrameType

import pytest

from tests.nat import netns, tools
from tests.nat.topology import Topology


def _sweep_ours() -> None:
    netns.sweep(include_pid=os.getpid())


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def nat_host() -> Iterator[None]:
    if reason := tools.prerequisites():
        print(f"NAT suite skipped: {reason}")
        pytest.skip(reason)
    removed = netns.sweep()
    if removed:
        print(f"removed namespaces left by earlier runs: {' '.join(removed)}")
    atexit.register(_sweep_ours)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _sweep_ours()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_failed_key] = report.failed
    return report


_failed_key = pytest.StashKey[bool]()


@pytest.fixture
def topo(nat_host: None, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Topology]:
    topology = Topology.build(tmp_path)
    try:
        yield topology
    finally:
        if request.node.stash.get(_failed_key, True) and topology.procs:
            print(f"process logs ({tmp_path}):\n{topology.process_logs()}")
        topology.destroy()
