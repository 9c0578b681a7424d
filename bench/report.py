"""Markdown for the results: the machine, the versions, the tables, the targets."""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Final


@dataclasses.dataclass(frozen=True, slots=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    fmt: Callable[[float], str]


def _int(x: float) -> str:
    return f"{x:,.0f}"


def _ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _mb(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _yes(x: float) -> str:
    return "yes" if x >= 1 else "no"


METRICS: Final = (
    Metric("small_c1_rps", "small GET c=1", "req/s", True, _int),
    Metric("small_c1_p50", "small GET c=1", "p50 ms", False, _ms),
    Metric("small_c1_p99", "small GET c=1", "p99 ms", False, _ms),
    Metric("small_c64_rps", "small GET c=64", "req/s", True, _int),
    Metric("small_c64_p50", "small GET c=64", "p50 ms", False, _ms),
    Metric("small_c64_p99", "small GET c=64", "p99 ms", False, _ms),
    Metric("small_c64_cpu_us", "small GET c=64", "tunnel CPU us per request", False, _int),
    Metric("big_mbs", "GET /big 64 MiB", "MB/s", True, _mb),
    Metric("echo_mbs", "POST /echo 1 MiB", "MB/s", True, _mb),
    Metric("sse_first_ms", "SSE", "first event ms", False, _ms),
    Metric("sse_incremental", "SSE", "incremental, every run", True, _yes),
    Metric("rss_mib", "tunnel processes", "peak RSS MiB", False, _mb),
    Metric("cpu_s", "tunnel processes", "CPU s per round", False, lambda x: f"{x:.1f}"),
)
#: Figures with no meaning for the direct path (it has no processes of its own).
OWN_PROCESS_METRICS: Final = frozenset({"rss_mib", "cpu_s", "small_c64_cpu_us"})


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0 or math.isinf(value):
        return None
    return value / reference


def _cell(metric: Metric, value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "failed"
    return metric.fmt(value)


def _ratio_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


Figures = dict[str, dict[str, float]]  # path key -> metric key -> median value


def table(figures: Figures, labels: dict[str, str]) -> str:
    """Values, then the ratio to direct and to ssh -R, one column per path."""
    keys = list(figures)
    head = "| figure | " + " | ".join(labels[k] for k in keys) + " |"
    rule = "|---|" + "---:|" * len(keys)
    rows = [head, rule]
    for metric in METRICS:
        rows.append(
            f"| {metric.label}: {metric.unit} | "
            + " | ".join(_cell(metric, figures[k].get(metric.key)) for k in keys)
            + " |"
        )
    for ref, name in (("direct", "direct"), ("ssh", "ssh -R")):
        if ref not in figures:
            continue
        rows.append(f"| **ratio to {name}** |" + " |" * len(keys))
        for metric in METRICS:
            if metric.key == "sse_incremental" or (
                ref == "direct" and metric.key in OWN_PROCESS_METRICS
            ):
                continue
            cells = [
                _ratio_cell(ratio(figures[k].get(metric.key), figures[ref].get(metric.key)))
                for k in keys
            ]
            better = "higher" if metric.higher_is_better else "lower"
            name = f"{metric.label}: {metric.unit} ({better} is better)"
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def machine() -> str:
    model, cores = "unknown CPU", os.cpu_count() or 0
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read(), re.MULTILINE)
        model = found.group(1).strip() if found else model
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cores} cores, {model}, {mem:.0f} GiB RAM, Linux {platform.release()}"


def _tool_version(argv: Sequence[str], pattern: str) -> str:
    if not shutil.which(argv[0]):
        return "not installed"
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    found = re.search(pattern, done.stdout + done.stderr)
    return found.group(0) if found else "unknown"


def versions() -> str:
    packages = ["molecule-edge", "uvicorn", "uvloop", "httptools", "websockets", "aiohttp"]
    found = []
    for name in packages:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (absent)")
    tools = [
        _tool_version(["nginx", "-v"], r"nginx/\S+"),
        _tool_version(["ssh", "-V"], r"OpenSSH_\S+"),
        _tool_version(["wrk", "-v"], r"wrk \S+"),
    ]
    return ", ".join([f"Python {platform.python_version()}", *found, *tools])


def header(command: str) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"- date: {now}",
            f"- machine: {machine()}",
            f"- versions: {versions()}",
            f"- command: `{command}`",
        ]
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    text: str
    status: str  # "met", "not met", "pending"
    evidence: str


def targets_markdown(targets: Sequence[Target]) -> str:
    rows = ["| target | status | evidence |", "|---|---|---|"]
    rows += [f"| {t.text} | **{t.status}** | {t.evidence} |" for t in targets]
    return "\n".join(rows)
