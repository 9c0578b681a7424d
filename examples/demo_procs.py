"""The demo's processes: started quietly with their output in a log file, waited for by
a line they print, and stopped for sure (their own process groups, and whatever they
started in other groups, such as the command of ``edge-agent run``).

Failures of a demo step are :class:`StepFailed`; it carries the log whose last lines
explain it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import psutil

ROOT: Final = Path(__file__).resolve().parents[1]
#: How often a wait for a log line reads the log again, in seconds.
POLL: Final = 0.05
#: Seconds the processes get after SIGTERM before SIGKILL (edge-agent stops its command
#: within this when nothing is in flight).
STOP_GRACE: Final = 8.0


class StepFailed(Exception):
    """A demo step went wrong: ``step`` names it, ``log`` is the process log to show."""

    def __init__(self, step: str, reason: str, log: Path | None = None) -> None:
        super().__init__(f'demo failed at step "{step}": {reason}')
        self.step = step
        self.log = log


class NotReady(Exception):
    """A process exited, or did not print its ready line in time."""


def free_port() -> int:
    """A port free on 127.0.0.1 right now (for a process that must know it up front)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(log: Path, lines: int) -> list[str]:
    try:
        return log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


class Child:
    """One process, leader of its own session so a terminal's Ctrl-C does not reach it
    (the demo stops it itself); stdout and stderr go to ``log``."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` (multi-line) in the log, waiting up to ``timeout``
        seconds; :class:`NotReady` if the process exits or time runs out first."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            exited = self.popen.poll()
            if match := regex.search(self.log.read_text(errors="replace")):
                return match
            if exited is not None:
                raise NotReady(f"{self.name} exited with code {exited} before it was ready")
            if time.monotonic() > deadline:
                raise NotReady(f"{self.name} was not ready after {timeout:.0f} s")
            time.sleep(POLL)

    def descendants(self) -> list[psutil.Process]:
        try:
            return list(psutil.Process(self.popen.pid).children(recursive=True))
        except psutil.Error:  # already gone
            return []


class Children:
    """Every process the demo started, and what they started; :meth:`stop_all` ends
    them all, also after a failure or Ctrl-C."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.seen: dict[int, psutil.Process] = {}

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def remember_descendants(self) -> None:
        """Note the grandchildren now: one whose parent dies is re-parented and could
        not be found from the parent any more."""
        for child in self.children:
            for proc in child.descendants():
                self.seen[proc.pid] = proc

    def stop_all(self) -> None:
        """SIGTERM every process group at once (edge-agent stops its command itself),
        then SIGKILL whatever is left after :data:`STOP_GRACE` seconds."""
        self.remember_descendants()
        for child in self.children:
            _signal_group(child.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in self.children:
            try:
                child.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for child in self.children:
            _signal_group(child.popen.pid, signal.SIGKILL)
            child.popen.wait()
        _kill(self.seen.values())


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):  # the group is gone
        pass


def _kill(procs: Iterable[psutil.Process]) -> None:
    """SIGKILL the processes still running (psutil checks they are the same processes,
    not new ones that reuse the pids) and reap them."""
    alive = []
    for proc in procs:
        try:
            proc.kill()
            alive.append(proc)
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
