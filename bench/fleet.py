"""A relay under test and fleets of simulated agents connected to it (see bench.simagent)."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Final

import psutil

from bench.paths import edge_command, edge_missing
from bench.procs import BenchError, Child, Children, free_port, wait_listening

#: Simulated agents per load process (each agent is one socket in it).
AGENTS_PER_PROCESS: Final = 2500
#: Seconds a load process lives at most, whatever happens to the harness.
LOAD_MAX_SECONDS: Final = 900.0


def require_relay() -> None:
    """Simulated agents need only the relay."""
    reason = edge_missing(("edge-relay",))
    if reason is not None:
        raise BenchError(f"molecule-edge relay is not ready: {reason}")


class Relay:
    """``edge-relay serve --open`` on a fixed port, restartable on the same port."""

    def __init__(self, children: Children, workdir: Path) -> None:
        self.children = children
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.child: Child | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        argv = [*edge_command("edge-relay"), "serve", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--open", "--state-dir", str(self.workdir / "relay")]
        self.child = self.children.start(f"relay-{self.starts}", argv, cwd=self.workdir)
        wait_listening(self.port, child=self.child)

    def stop(self) -> None:
        if self.child is not None:
            self.children.stop(self.child)
            self.child = None

    def rss(self) -> int:
        """The relay process's resident memory, in bytes (median of a few samples)."""
        if self.child is None:
            raise BenchError("relay is not running")
        proc = psutil.Process(self.child.proc.pid)
        samples = []
        for _ in range(5):
            samples.append(proc.memory_info().rss)
            time.sleep(0.2)
        return int(statistics.median(samples))


@dataclasses.dataclass
class Event:
    kind: str  # "up" or "down"
    t: float  # unix time
    name: str


class Fleet:
    """Load processes holding simulated agents; their event files are read back here."""

    def __init__(self, children: Children, workdir: Path, relay_url: str) -> None:
        self.children = children
        self.workdir = workdir
        self.relay_url = relay_url
        self.size = 0
        self.processes: list[Child] = []
        self._files: list[tuple[Path, int]] = []  # event file, bytes read so far
        self.events: list[Event] = []
        self.up: set[str] = set()

    def grow(self, total: int) -> None:
        """Add load processes until ``total`` agents are configured."""
        while self.size < total:
            count = min(AGENTS_PER_PROCESS, total - self.size)
            index = len(self.processes)
            events = self.workdir / f"events-{index}.jsonl"
            argv = [sys.executable, "-m", "bench.simagent", "--relay", self.relay_url]
            argv += ["--count", str(count), "--prefix", f"sim{index}", "--events", str(events)]
            argv += ["--max-seconds", str(LOAD_MAX_SECONDS)]
            self.processes.append(self.children.start(f"simagent-{index}", argv, cwd=Path.cwd()))
            self._files.append((events, 0))
            self.size += count

    def poll(self) -> None:
        """Read new event lines from every load process."""
        for i, (path, offset) in enumerate(self._files):
            if not path.exists():
                continue
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            end = data.rfind(b"\n") + 1  # a partial last line waits for the next poll
            self._files[i] = (path, offset + end)
            for line in data[:end].splitlines():
                raw = json.loads(line)
                event = Event(raw["e"], raw["t"], raw["n"])
                self.events.append(event)
                (self.up.add if event.kind == "up" else self.up.discard)(event.name)

    def wait_all_up(self, timeout: float) -> float:
        """Wait until every agent is connected; returns the unix time of the last WELCOME."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            self.poll()
            if len(self.up) >= self.size:
                return max(e.t for e in self.events if e.kind == "up")
            time.sleep(0.2)
        raise BenchError(f"only {len(self.up)} of {self.size} agents connected in {timeout:.0f} s")

    def _check_alive(self) -> None:
        for child in self.processes:
            if child.proc.poll() is not None:
                raise BenchError(f"{child.name} exited: {child.tail()}")

    def rss(self) -> int:
        return sum(psutil.Process(c.proc.pid).memory_info().rss for c in self.processes)


def reconnect_spread(events: list[Event], since: float, size: int) -> tuple[float, list[int]]:
    """Seconds from ``since`` until each agent was up again, and WELCOMEs per second."""
    back: dict[str, float] = {}
    for event in events:
        if event.kind == "up" and event.t >= since and event.name not in back:
            back[event.name] = event.t - since
    if len(back) < size:
        return math.inf, []
    last = max(back.values())
    per_second = [0] * (int(last) + 1)
    for offset in back.values():
        per_second[int(offset)] += 1
    return last, per_second
