"""Side-by-side comparison of the paths, in interleaved rounds.

Every round runs the same loads through every path, in a rotated order, so that drift
on the (shared, noisy) machine hits all paths alike. Figures are medians over rounds;
ratios are taken between paths of the same run only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Final

from bench import report
from bench.load import ECHO_BODY, SseResult, WrkResult, sse, write_wrk_script, wrk
from bench.origin import BIG_SIZE
from bench.paths import ALL_PATHS, BenchPath, wait_http_ok
from bench.procs import BenchError, Children, listening_socket, process_tree, sampling
from bench.report import Figures, Target


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    rounds: int
    seconds: float  # each wrk run
    sse_runs: int  # SSE requests per path per round
    warmup: float

    @classmethod
    def quick(cls) -> Plan:
        return cls(rounds=2, seconds=2.0, sse_runs=3, warmup=1.0)

    @classmethod
    def full(cls) -> Plan:
        return cls(rounds=3, seconds=5.0, sse_runs=5, warmup=1.0)


Samples = dict[str, dict[str, list[float]]]  # path -> metric -> one value per round/run


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Comparison:
    def __init__(self, plan: Plan, children: Children, workdir: Path) -> None:
        self.plan = plan
        self.children = children
        self.workdir = workdir
        self.script = write_wrk_script(workdir)
        self.samples: Samples = defaultdict(lambda: defaultdict(list))
        self.errors: dict[str, int] = defaultdict(int)
        self.skipped: dict[str, str] = {}
        self.idle_rss: dict[str, float] = {}

    def start_origin(self) -> int:
        sock = listening_socket()
        argv = [sys.executable, "-m", "bench.origin", "--fd", str(sock.fileno())]
        child = self.children.start("origin", argv, pass_fds=[sock.fileno()], cwd=Path.cwd())
        port: int = sock.getsockname()[1]
        sock.close()  # the child holds its own copy
        wait_http_ok(f"http://127.0.0.1:{port}/small", child=child)
        return port

    def start_paths(self, keys: list[str], origin_port: int) -> list[BenchPath]:
        started = []
        for key in keys:
            cls = ALL_PATHS[key]
            reason = cls.missing()
            if reason is None:
                path = cls(self.children, self.workdir)
                try:
                    path.start(origin_port)
                except BenchError as exc:
                    path.stop()
                    reason = str(exc)
                else:
                    started.append(path)
                    for child in path.own():
                        self.idle_rss[child.name] = _rss_mib([child.proc.pid])
                    continue
            self.skipped[key] = reason
            log(f"skipping {cls.label}: {reason}")
        return started

    def run(self, paths: list[BenchPath]) -> None:
        for path in paths:
            self._warm(path)
        for round_no in range(self.plan.rounds):
            shift = round_no % len(paths)
            for path in paths[shift:] + paths[:shift]:
                log(f"round {round_no + 1}/{self.plan.rounds}: {path.label}")
                self._round(path)

    def _warm(self, path: BenchPath) -> None:
        wrk(path.base_url + "/small", connections=64, seconds=self.plan.warmup, script=self.script)

    def _round(self, path: BenchPath) -> None:
        with sampling(path.pids()) as sampler:
            self._small(path, 1)
            with sampling(path.pids()) as busy:
                requests = self._small(path, 64)
            if path.pids() and requests:
                self._add(path, "small_c64_cpu_us", busy.cpu_seconds / requests * 1e6)
            big = self._wrk(path, "/big", 1)
            self._add(path, "big_mbs", big.mb_per_s)
            echo = self._wrk(path, "/echo", 4, ECHO_BODY)
            self._add(path, "echo_mbs", echo.mb_per_s)
            self._sse(path)
        if path.pids():
            self._add(path, "rss_mib", sampler.peak_rss / 2**20)
            self._add(path, "cpu_s", sampler.cpu_seconds)

    def _small(self, path: BenchPath, connections: int) -> int:
        """Small GETs at this concurrency; returns how many requests completed."""
        result = self._wrk(path, "/small", connections)
        self._add(path, f"small_c{connections}_rps", result.rps)
        self._add(path, f"small_c{connections}_p50", result.p50_ms)
        self._add(path, f"small_c{connections}_p99", result.p99_ms)
        return result.requests

    def _wrk(self, path: BenchPath, target: str, connections: int, body: int = 0) -> WrkResult:
        result = wrk(
            path.base_url + target,
            connections=connections,
            seconds=self.plan.seconds,
            script=self.script,
            body_size=body,
        )
        self.errors[path.key] += result.errors
        return result

    def _sse(self, path: BenchPath) -> None:
        runs: list[SseResult] = [sse(path.base_url + "/sse") for _ in range(self.plan.sse_runs)]
        for result in runs:
            self._add(path, "sse_first_ms", result.first_event_ms)
        self._add(path, "sse_incremental", float(all(r.incremental for r in runs)))

    def _add(self, path: BenchPath, metric: str, value: float) -> None:
        self.samples[path.key][metric].append(value)

    def figures(self) -> Figures:
        out: Figures = {}
        for key, metrics in self.samples.items():
            out[key] = {m: _summary(m, values) for m, values in metrics.items()}
        return out


def _summary(metric: str, values: list[float]) -> float:
    if metric == "sse_incremental":
        return min(values)
    if metric == "rss_mib":
        return max(values)
    return statistics.median(values)


def _rss_mib(pids: list[int]) -> float:
    return sum(p.memory_info().rss for p in process_tree(pids)) / 2**20


# --- targets ---------------------------------------------------------------------------

#: The targets of the data path v2 (issue 10), each a ratio to ssh -R in the same run.
FIGURE_TARGETS: Final = (
    ("small GET c=1: req/s ≥ 1.2x ssh -R", "small_c1_rps", "ssh", 1.2, True),
    ("small GET c=1: p50 ≤ ssh -R", "small_c1_p50", "ssh", 1.0, False),
    ("small GET c=64: req/s ≥ 1.1x ssh -R", "small_c64_rps", "ssh", 1.1, True),
    ("small GET c=64: tunnel CPU per request < ssh -R", "small_c64_cpu_us", "ssh", 1.0, False),
    ("GET /big: MB/s ≥ 2.5x ssh -R", "big_mbs", "ssh", 2.5, True),
    ("POST /echo: MB/s ≥ 2x ssh -R", "echo_mbs", "ssh", 2.0, True),
)


def targets(figures: Figures, skipped: dict[str, str], idle_rss: dict[str, float]) -> list[Target]:
    edge = figures.get("edge")
    if edge is None:
        why = skipped.get("edge", "not measured")
        return [Target(t, "pending", f"molecule-edge not measured: {why}") for t in _all()]
    out = [_ratio_target(figures, *spec) for spec in FIGURE_TARGETS]
    out.append(_sse_target(figures))
    out.append(_agent_rss_target(idle_rss))
    return out


def _all() -> list[str]:
    return [spec[0] for spec in FIGURE_TARGETS] + [SSE_TARGET, AGENT_RSS_TARGET]


def _ratio_target(
    figures: Figures, text: str, metric: str, ref: str, factor: float, higher: bool
) -> Target:
    value, base = figures["edge"].get(metric), figures.get(ref, {}).get(metric)
    r = report.ratio(value, base)
    if r is None:
        return Target(text, "pending", f"{ref} not measured")
    met = r >= factor if higher else r <= factor
    return Target(text, "met" if met else "not met", f"{r:.2f}x {ref}")


SSE_TARGET: Final = "SSE: first event ≤ direct + 0.5 ms, always incremental"
SSE_EXTRA_MS: Final = 0.5
AGENT_RSS_TARGET: Final = "edge-agent idle RSS ≤ 32 MiB"
AGENT_RSS_LIMIT_MIB: Final = 32.0


def _agent_rss_target(idle_rss: dict[str, float]) -> Target:
    rss = idle_rss.get("edge-agent")
    if rss is None:
        return Target(AGENT_RSS_TARGET, "pending", "agent not measured")
    met = rss <= AGENT_RSS_LIMIT_MIB
    return Target(AGENT_RSS_TARGET, "met" if met else "not met", f"{rss:.1f} MiB")


def _sse_target(figures: Figures) -> Target:
    text = SSE_TARGET
    edge, direct = figures["edge"], figures.get("direct", {})
    if "sse_first_ms" not in direct or "sse_first_ms" not in edge:
        return Target(text, "pending", "direct not measured")
    first, base = edge.get("sse_first_ms", math.inf), direct.get("sse_first_ms", math.inf)
    incremental = edge.get("sse_incremental", 0.0) >= 1
    met = first - base <= SSE_EXTRA_MS and incremental
    evidence = f"+{first - base:.2f} ms over direct; incremental: {'yes' if incremental else 'no'}"
    return Target(text, "met" if met else "not met", evidence)


# --- output ------------------------------------------------------------------------------


def markdown(cmp: Comparison, command: str) -> str:
    figures = cmp.figures()
    labels = {key: ALL_PATHS[key].label for key in ALL_PATHS}
    parts = [report.header(command), "", report.table(figures, labels), ""]
    plan = cmp.plan
    parts.append(
        f"Medians over {plan.rounds} interleaved rounds; each wrk run lasts {plan.seconds:g} s "
        f"(one wrk thread; /big at c=1 ({BIG_SIZE >> 20} MiB responses), /echo at c=4 with "
        f"{ECHO_BODY >> 20} MiB bodies); SSE: {plan.sse_runs} requests per path per round. "
        "Peak RSS and CPU are the path's own processes over one round of all loads."
    )
    if cmp.idle_rss:
        idle = ", ".join(f"{name} {mib:.1f} MiB" for name, mib in cmp.idle_rss.items())
        parts.append(f"Idle RSS of each path process (with its children) before the loads: {idle}.")
    if any(cmp.errors.values()):
        bad = ", ".join(f"{labels[k]}: {n}" for k, n in cmp.errors.items() if n)
        parts.append(f"wrk reported errors (connect/read/write/status/timeout): {bad}.")
    for key, reason in cmp.skipped.items():
        parts.append(f"Not measured: {labels[key]}: {reason}.")
    parts += ["", "Targets (molecule-edge, same run):", ""]
    parts.append(report.targets_markdown(targets(figures, cmp.skipped, cmp.idle_rss)))
    return "\n".join(parts) + "\n"


def raw_json(cmp: Comparison) -> str:
    data = {
        "samples": cmp.samples,
        "figures": cmp.figures(),
        "errors": cmp.errors,
        "skipped": cmp.skipped,
        "idle_rss_mib": cmp.idle_rss,
        "plan": dataclasses.asdict(cmp.plan),
    }
    return json.dumps(data, indent=1, default=str)
