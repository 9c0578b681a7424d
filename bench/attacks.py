"""``scripts/bench attacks``: the attacks of the hostile-input review against a real relay.

One ``edge-relay --open`` with two real ``edge-agent http`` tunnels in front of the bench
origin: ``alice`` (the public-side attacks aim at it) and ``bob`` (the bystander). A
probe thread GETs ``/a/bob/small`` one request after another, 10 ms apart, the whole
run, and another the relay's own ``/_edge/healthz`` (which no agent serves). Each attack
runs in its own process (:mod:`bench.attackers`) for a bounded time, coming back each
time it is cut; for each one the report gives what the attacker got in and how the
relay ended it, bob's p99 during it against bob's idle p99 and against his p99 during
the control (``cpu-burn``: a process that only burns a core, as every attacker process
does on this same machine), the relay's CPU time, and its RSS (VmRSS from ``/proc``)
before, at its peak, and after: the run waits until RSS is back within
:data:`RSS_FACTOR` of the baseline (at most :data:`SETTLE_MAX` s), and samples it once
more :data:`SETTLE_MAX` s after the last attack.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import resource
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Final

from bench import report
from bench.attackers import ATTACKS
from bench.paths import edge_command, edge_missing, wait_http_ok
from bench.procs import BenchError, Child, Children, free_port, listening_socket, wait_listening

#: Targets of the issue: bob's p99 within this factor of idle, RSS back within this one.
P99_FACTOR: Final = 2.0
RSS_FACTOR: Final = 2.0
#: Seconds to wait for RSS to come back after an attack, and after the last one.
SETTLE_MAX: Final = 60.0
#: Bob's probe: seconds between requests, and the timeout of one.
PROBE_GAP: Final = 0.01
PROBE_TIMEOUT: Final = 10.0
#: Seconds each attack lasts (slow uploads: until the relay ended them, at most this).
ATTACK_SECONDS: Final = 10.0
UPLOAD_SECONDS: Final = 45.0

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")

DESCRIPTIONS: Final = {
    "cpu-burn": "control: no attack, one process busy on a core (as an attacker is)",
    "header-line": "unfinished header line (`X-Big: aaaa...`), 20 connections at a time",
    "header-name": "header name that never ends, 20 connections at a time",
    "goaway-flood": "GOAWAY flood from an agent",
    "reset-flood": "RESET frames for a closed stream",
    "response-flood": "response bytes (DATA) for a closed stream",
    "empty-data-flood": "empty DATA frames on an open stream",
    "slow-uploads": "1,030 slow uploads (Content-Length: 1000000, 1 byte / 20 s) to alice",
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def vm_rss(pid: int) -> int:
    """VmRSS of ``pid`` in bytes, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for {pid}")


class Probe(threading.Thread):
    """Bob's latency, sample after sample, each with the time it ended."""

    def __init__(self, port: int, path: str = "/a/bob/small") -> None:
        super().__init__(daemon=True)
        self.port = port
        self.path = path
        self.samples: list[tuple[float, float]] = []  # (end time, seconds)
        self.errors: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PROBE_TIMEOUT)
        while not self._halt.is_set():
            start = time.monotonic()
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
            end = time.monotonic()
            self.samples.append((end, end - start))
            if not ok:
                self.errors.append(end)
            self._halt.wait(PROBE_GAP)

    def stop(self) -> None:
        self._halt.set()
        self.join(PROBE_TIMEOUT + 5)

    def p99_ms(self, since: float, until: float) -> tuple[float, int, int]:
        """p99 in ms, number of samples, failures, between ``since`` and ``until``."""
        window = sorted(s for t, s in self.samples if since <= t <= until)
        failures = sum(1 for t in self.errors if since <= t <= until)
        if not window:
            return float("nan"), 0, failures
        return window[min(len(window) - 1, int(len(window) * 0.99))] * 1000, len(window), failures


class RssPeak(threading.Thread):
    """The relay's VmRSS every 0.1 s; :meth:`take` gives the peak since the last call."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.1):
            self.peak = max(self.peak, vm_rss(self.pid))

    def take(self) -> int:
        peak, self.peak = self.peak, vm_rss(self.pid)
        return max(peak, self.peak)

    def stop(self) -> None:
        self._halt.set()
        self.join(2)


@dataclasses.dataclass
class Outcome:
    name: str
    result: dict[str, object]
    p99_ms: float
    samples: int
    failures: int
    rss_before: int
    rss_peak: int
    rss_after: int
    settled_s: float
    relay_cpu: float
    seconds: float
    health_p99_ms: float


class Stack:
    def __init__(self, children: Children, workdir: Path, relay_args: str = "") -> None:
        self.children = children
        self.workdir = workdir
        self.relay_args = shlex.split(relay_args)
        self.port = 0
        self.relay: Child | None = None

    def start(self) -> None:
        reason = edge_missing()
        if reason is not None:
            raise BenchError(f"molecule-edge is not ready: {reason}")
        origin = self._origin()
        self.port = free_port()
        argv = [*edge_command("edge-relay"), "serve", "--host", "127.0.0.1", "--open"]
        argv += ["--port", str(self.port), "--state-dir", str(self.workdir / "relay")]
        argv += self.relay_args
        self.relay = self.children.start("relay", argv, cwd=self.workdir)
        wait_listening(self.port, child=self.relay)
        relay_url = f"http://127.0.0.1:{self.port}"
        for name in ("alice", "bob"):
            argv = [*edge_command("edge-agent"), "http", str(origin), "--relay", relay_url]
            argv += ["--name", name, "--no-inspect", "--no-screen"]
            agent = self.children.start(name, argv, cwd=self.workdir)
            wait_http_ok(f"{relay_url}/a/{name}/small", child=agent)

    def _origin(self) -> int:
        sock = listening_socket()
        argv = [sys.executable, "-m", "bench.origin", "--fd", str(sock.fileno())]
        child = self.children.start("origin", argv, pass_fds=[sock.fileno()], cwd=Path.cwd())
        port: int = sock.getsockname()[1]
        sock.close()
        wait_http_ok(f"http://127.0.0.1:{port}/small", child=child)
        return port

    @property
    def pid(self) -> int:
        if self.relay is None or self.relay.proc.poll() is not None:
            raise BenchError("the relay is not running")
        return self.relay.proc.pid


def attack(stack: Stack, name: str, seconds: float) -> dict[str, object]:
    argv = [sys.executable, "-m", "bench.attackers", name, "--port", str(stack.port)]
    # Each attack from its own loopback address: a cut-off agent's address waits before it
    # may connect again (relay.penalty), which would hold back the next attack too.
    argv += ["--seconds", str(seconds), "--source", f"127.0.0.{10 + list(ATTACKS).index(name)}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"attack {name} did not end") from exc
    if done.returncode != 0:
        raise BenchError(f"attack {name} failed: {done.stderr.strip()[-500:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    result["attacker_cpu_s"] = round(used, 1)
    return result


def settle(pid: int, baseline: int, most: float) -> tuple[int, float]:
    """Wait until RSS is within RSS_FACTOR of ``baseline`` (at most ``most`` s)."""
    start = time.monotonic()
    while True:
        rss = vm_rss(pid)
        waited = time.monotonic() - start
        if rss <= baseline * RSS_FACTOR or waited >= most:
            return rss, waited
        time.sleep(1.0)


def run(args: argparse.Namespace, children: Children, workdir: Path, command: str) -> str:
    names = _names(args.attacks)
    seconds = args.seconds or (3.0 if args.quick else ATTACK_SECONDS)
    most = 10.0 if args.quick else SETTLE_MAX
    stack = Stack(children, workdir, args.relay_args)
    stack.start()
    probe = Probe(stack.port)
    health = Probe(stack.port, "/_edge/healthz")
    probe.start()
    health.start()
    time.sleep(2.0)  # warm: the tunnels' first requests, the allocator's pools
    idle_from = time.monotonic()
    time.sleep(seconds)
    idle = probe.p99_ms(idle_from, time.monotonic())
    health_idle = health.p99_ms(idle_from, time.monotonic())[0]
    baseline = vm_rss(stack.pid)
    log(f"bob idle p99 {idle[0]:.1f} ms ({idle[1]} samples); relay RSS {baseline >> 20} MiB")
    peaks = RssPeak(stack.pid)
    peaks.start()
    outcomes = []
    try:
        for name in names:
            outcomes.append(_one(stack, (probe, health), peaks, name, seconds, baseline, most))
        time.sleep(max(0.0, most - outcomes[-1].settled_s) if outcomes else 0.0)
        final = vm_rss(stack.pid)
        idle_after_from = time.monotonic()
        time.sleep(seconds)
        idle_after = probe.p99_ms(idle_after_from, time.monotonic())
    finally:
        peaks.stop()
        probe.stop()
        health.stop()
    return (
        report.header(command)
        + "\n\n"
        + _markdown(outcomes, idle, idle_after, health_idle, baseline, final, most)
    )


def _names(selection: str | None) -> list[str]:
    names = [n.strip() for n in (selection or ",".join(DESCRIPTIONS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in DESCRIPTIONS]
    if unknown:
        raise BenchError(
            f"unknown attacks: {', '.join(unknown)} (known: {', '.join(DESCRIPTIONS)})"
        )
    return names


def _one(
    stack: Stack,
    probes: tuple[Probe, Probe],
    peaks: RssPeak,
    name: str,
    seconds: float,
    baseline: int,
    most: float,
) -> Outcome:
    before = vm_rss(stack.pid)
    peaks.take()
    log(f"attack {name} ...")
    started = time.monotonic()
    cpu = cpu_seconds(stack.pid)
    result = attack(stack, name, UPLOAD_SECONDS if name == "slow-uploads" else seconds)
    took = time.monotonic() - started
    cpu = cpu_seconds(stack.pid) - cpu
    probe, health = probes
    p99, samples, failures = probe.p99_ms(started, time.monotonic())
    health_p99 = health.p99_ms(started, time.monotonic())[0]
    peak = peaks.take()
    after, waited = settle(stack.pid, baseline, most)
    log(f"  {json.dumps(result)}")
    log(f"  bob p99 {p99:.1f} ms; RSS {before >> 20} -> {peak >> 20} -> {after >> 20} MiB")
    log(f"  relay CPU {cpu:.1f} s in {took:.1f} s")
    return Outcome(
        name, result, p99, samples, failures, before, peak, after, waited, cpu, took, health_p99
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f}"


def _markdown(
    outcomes: list[Outcome],
    idle: tuple[float, int, int],
    idle_after: tuple[float, int, int],
    health_idle: float,
    baseline: int,
    final: int,
    most: float,
) -> str:
    control = next((o.p99_ms for o in outcomes if o.name == "cpu-burn"), None)
    lines = [
        f"bob idle p99: {idle[0]:.1f} ms before the attacks ({idle[1]} requests), "
        f"{idle_after[0]:.1f} ms after them; the relay's own `/_edge/healthz` p99 "
        f"{health_idle:.1f} ms idle; relay RSS baseline {_mib(baseline)} MiB, "
        f"{_mib(final)} MiB {most:.0f} s after the last attack. "
        "x control: bob's p99 over his p99 while one process only burns a core.",
        "",
        "| attack | what the relay let in, and how it ended | bob p99: ms (x idle, x control) "
        "| bob failures | healthz p99 | relay CPU | relay RSS MiB before / peak / after "
        "(s to settle) |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {DESCRIPTIONS[o.name]} | {_summary(o.result)} "
            f"| {o.p99_ms:.1f} ({_factor(o.p99_ms, idle[0])}, {_factor(o.p99_ms, control)}) "
            f"| {o.failures} of {o.samples} "
            f"| {o.health_p99_ms:.1f} ms | {o.relay_cpu:.1f} s in {o.seconds:.0f} s "
            f"| {_mib(o.rss_before)} / {_mib(o.rss_peak)} / {_mib(o.rss_after)} "
            f"({o.settled_s:.0f} s){_back(o.rss_after, baseline)} |"
        )
    return "\n".join(lines) + "\n"


def _factor(value: float, reference: float | None) -> str:
    if not reference:
        return "-"
    factor = value / reference
    return f"{factor:.1f}x" + ("" if factor <= P99_FACTOR else " **over 2x**")


def _back(rss: int, baseline: int) -> str:
    return "" if rss <= baseline * RSS_FACTOR else " **not back within 2x**"


def _summary(result: dict[str, object]) -> str:
    skip = {"attack"}
    return "; ".join(f"{k}: {v}" for k, v in result.items() if k not in skip).replace("|", "/")
