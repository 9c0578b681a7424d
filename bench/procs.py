"""Child processes of the benchmark: start, wait until they listen, stop, measure.

Every process the harness starts is a :class:`Child`, stopped by :meth:`Child.stop`
(SIGTERM, then SIGKILL after :data:`STOP_GRACE`), and every one is registered in the
:class:`Children` set that ``bench.run`` closes in a ``finally``, so a failed run
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import psutil

#: Seconds a child gets between SIGTERM and SIGKILL.
STOP_GRACE: Final = 5.0
#: Seconds to wait for a server to accept connections.
START_TIMEOUT: Final = 20.0
#: Resource sampling period, in seconds.
SAMPLE_PERIOD: Final = 0.1


class BenchError(Exception):
    """A path could not be set up or measured; the message says which step."""


def free_port() -> int:
    """A free loopback port. Racy by nature; use :func:`listening_socket` where possible."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listening_socket() -> socket.socket:
    """A listening socket on 127.0.0.1 with a free port, to hand to a child by fd."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=4096)
    sock.set_inheritable(True)
    return sock


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit toward ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(target, soft)


def wait_listening(port: int, timeout: float = START_TIMEOUT, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.proc.poll() is not None:
            raise BenchError(f"{child.name} exited with {child.proc.returncode}: {child.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclasses.dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_GRACE)


class Children:
    """The set of running children; :meth:`close` stops them all, newest first."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self._children: list[Child] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        pass_fds: Sequence[int] = (),
        cwd: Path | None = None,
    ) -> Child:
        """Start ``argv`` in its own process group, output to ``<logdir>/<name>.log``."""
        log = self.logdir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                pass_fds=tuple(pass_fds),
                cwd=cwd,
                start_new_session=True,  # its own group: stop() reaches its children too
            )
        child = Child(name, proc, log)
        self._children.append(child)
        return child

    def stop(self, child: Child, sig: int = signal.SIGTERM) -> None:
        child.stop(sig)
        if child in self._children:
            self._children.remove(child)

    def close(self) -> None:
        while self._children:
            self._children.pop().stop()


def process_tree(pids: Sequence[int]) -> list[psutil.Process]:
    """The processes ``pids`` and all their descendants that are alive now."""
    found: dict[int, psutil.Process] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            found[pid] = proc
            for kid in proc.children(recursive=True):
                found[kid.pid] = kid
    return list(found.values())


class ResourceSampler:
    """Samples RSS and CPU time of some process trees on a thread, every SAMPLE_PERIOD.

    ``peak_rss`` is the largest sum of RSS over the trees at one sample (shared pages
    count once per process, as ``ps`` shows them). ``cpu_seconds`` is the user+system
    time the trees spent between :meth:`start` and :meth:`stop`, counting processes that
    appeared in between (sshd forks one per session) from zero.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.peak_rss = 0
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ResourceSampler:
        self._sample(initial=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def cpu_seconds(self) -> float:
        return sum(last - self._first.get(pid, 0.0) for pid, last in self._last.items())

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD):
            self._sample()

    def _sample(self, initial: bool = False) -> None:
        rss = 0
        for proc in process_tree(self.pids):
            with contextlib.suppress(psutil.Error):
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
                cpu = times.user + times.system
                if initial:
                    self._first[proc.pid] = cpu
                self._last[proc.pid] = cpu
        self.peak_rss = max(self.peak_rss, rss)


@contextlib.contextmanager
def sampling(pids: Sequence[int]) -> Iterator[ResourceSampler]:
    sampler = ResourceSampler(pids).start()
    try:
        yield sampler
    finally:
        sampler.stop()
