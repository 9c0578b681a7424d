"""Scale figures for molecule-edge.

* ``idle-agents``: relay RSS per idle connected agent, at 1,000 and 10,000 simulated
  agents (bench.simagent, a few load processes), over a baseline of a few agents.
* ``busy-tunnel``: small GET p99 on a tunnel while 1 GiB downloads run through the same
  tunnel, against the same tunnel's idle p99 (molecule-edge, and ssh -R for reference).
* ``relay-restart``: 1,000 simulated agents connected for longer than the agent's
  ``healthy_after``; the relay is stopped (SIGTERM) and started again on the same
  port; time until every agent is back, and the WELCOMEs per second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Final

from bench import report
from bench.fleet import Fleet, Relay, reconnect_spread, require_relay
from bench.load import Downloader, write_wrk_script, wrk
from bench.paths import ALL_PATHS, BenchPath, path_keys, wait_http_ok
from bench.procs import BenchError, Children, listening_socket, raise_nofile
from bench.report import Target
from bench.simagent import agent_policy

#: Agents that stay connected through the baseline, so the relay's code paths and
#: allocator pools are warm before memory is compared.
BASELINE_AGENTS: Final = 20
#: Seconds to let the relay settle after a level is reached, before sampling RSS.
SETTLE: Final = 3.0
RELAY_KIB_PER_AGENT: Final = 35.0
BUSY_P99_FACTOR: Final = 5.0
RESTART_WITHIN: Final = 15.0
RESTART_MAX_SHARE: Final = 0.25
GIB: Final = 1024**3


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(
    mode: str, args: argparse.Namespace, children: Children, workdir: Path, command: str
) -> str:
    body = {"idle-agents": idle_agents, "busy-tunnel": busy_tunnel, "relay-restart": restart}
    return report.header(command) + "\n\n" + body[mode](args, children, workdir)


def _counts(args: argparse.Namespace, default: str) -> list[int]:
    return [int(n) for n in (args.agents or default).split(",") if n.strip()]


# --- idle agents -----------------------------------------------------------------------


def idle_agents(args: argparse.Namespace, children: Children, workdir: Path) -> str:
    require_relay()
    levels = sorted(_counts(args, "1000,10000"))
    raise_nofile(max(levels) + 4096)
    relay = Relay(children, workdir)
    relay.start()
    fleet = Fleet(children, workdir, relay.url)
    fleet.grow(BASELINE_AGENTS)
    fleet.wait_all_up(60)
    time.sleep(SETTLE)
    base = relay.rss()
    rows = ["| agents | relay RSS MiB | relay KiB per agent | load processes MiB |"]
    rows.append("|---:|---:|---:|---:|")
    results: list[tuple[int, float]] = []
    for level in levels:
        log(f"idle-agents: connecting {level} agents")
        fleet.grow(level + BASELINE_AGENTS)
        fleet.wait_all_up(60 + level / 50)
        time.sleep(SETTLE)
        rss = relay.rss()
        per_agent = (rss - base) / level / 1024
        results.append((level, per_agent))
        rows.append(
            f"| {level:,} | {rss / 2**20:.1f} | {per_agent:.1f} | {fleet.rss() / 2**20:.0f} |"
        )
    targets = [
        Target(
            f"relay memory per idle agent ≤ {RELAY_KIB_PER_AGENT:.0f} KiB at {level:,}",
            "met" if kib <= RELAY_KIB_PER_AGENT else "not met",
            f"{kib:.1f} KiB",
        )
        for level, kib in results
    ]
    note = (
        f"Baseline: relay RSS {base / 2**20:.1f} MiB with {BASELINE_AGENTS} agents connected; "
        "per-agent figures are (RSS - baseline) / agents, RSS as the kernel reports it."
    )
    return "\n".join([*rows, "", note, "", report.targets_markdown(targets)]) + "\n"


# --- busy tunnel -----------------------------------------------------------------------


BUSY_GOAL: Final = f"small GET p99 during a 1 GiB download ≤ {BUSY_P99_FACTOR:.0f}x idle p99"


def busy_tunnel(args: argparse.Namespace, children: Children, workdir: Path) -> str:
    seconds = args.seconds or (5.0 if args.quick else 10.0)
    script = write_wrk_script(workdir)
    origin = start_origin(children)
    rows = ["| path | idle p50 ms | idle p99 ms | busy p50 ms | busy p99 ms | p99 ratio |"]
    rows += ["|---|---:|---:|---:|---:|---:|"]
    targets: list[Target] = []
    notes: list[str] = []
    for key in path_keys(args.paths, "edge,ssh"):
        path = _start_path(key, children, workdir, origin, notes)
        if path is None:
            continue
        try:
            row, note, target = _busy_one(path, seconds, script)
        finally:
            path.stop()
        rows.append(row)
        notes.append(note)
        if key == "edge":
            targets.append(target)
    if not targets:
        targets.append(Target(BUSY_GOAL, "pending", "molecule-edge not measured"))
    how = f"wrk -c1 for {seconds:g} s per figure; 1 GiB GETs run back to back through the "
    text = [*rows, "", how + "same tunnel during the busy run.", ""]
    text += [f"- {n}" for n in notes] + ["", report.targets_markdown(targets)]
    return "\n".join(text) + "\n"


def _busy_one(path: BenchPath, seconds: float, script: Path) -> tuple[str, str, Target]:
    small = path.base_url + "/small"
    idle = wrk(small, connections=1, seconds=seconds, script=script)
    download = Downloader(f"{path.base_url}/big?size={GIB}").start()
    try:
        busy = wrk(small, connections=1, seconds=seconds, script=script)
    finally:
        download.stop()
    factor = busy.p99_ms / idle.p99_ms if idle.p99_ms else float("inf")
    row = (
        f"| {path.label} | {idle.p50_ms:.2f} | {idle.p99_ms:.2f} | {busy.p50_ms:.2f} "
        f"| {busy.p99_ms:.2f} | {factor:.1f}x |"
    )
    note = (
        f"{path.label}: the downloads moved {download.bytes / GIB:.2f} GiB at "
        f"{download.mb_per_s:.0f} MB/s during the busy run ({download.completed} complete "
        f"1 GiB downloads); small GETs: {busy.requests:,} busy vs {idle.requests:,} idle."
    )
    evidence = f"{factor:.1f}x ({busy.p99_ms:.2f} ms vs {idle.p99_ms:.2f} ms)"
    status = "met" if factor <= BUSY_P99_FACTOR else "not met"
    return row, note, Target(BUSY_GOAL, status, evidence)


def start_origin(children: Children) -> int:
    """The bench origin (``bench.origin``) on a free loopback port, answering; its port."""
    sock = listening_socket()
    argv = [sys.executable, "-m", "bench.origin", "--fd", str(sock.fileno())]
    child = children.start("origin", argv, pass_fds=[sock.fileno()], cwd=Path.cwd())
    port: int = sock.getsockname()[1]
    sock.close()
    wait_http_ok(f"http://127.0.0.1:{port}/small", child=child)
    return port


def _start_path(
    key: str, children: Children, workdir: Path, origin: int, notes: list[str]
) -> BenchPath | None:
    cls = ALL_PATHS[key]
    reason = cls.missing()
    if reason is None:
        path = cls(children, workdir)
        try:
            path.start(origin)
            return path
        except BenchError as exc:
            path.stop()
            reason = str(exc)
    notes.append(f"{cls.label} not measured: {reason}")
    log(f"skipping {cls.label}: {reason}")
    return None


# --- relay restart ---------------------------------------------------------------------


def restart(args: argparse.Namespace, children: Children, workdir: Path) -> str:
    require_relay()
    [count] = _counts(args, "1000")[:1]
    raise_nofile(count + 4096)
    policy = agent_policy()
    relay = Relay(children, workdir)
    relay.start()
    fleet = Fleet(children, workdir, relay.url)
    fleet.grow(count)
    last_up = fleet.wait_all_up(60 + count / 50)
    healthy_wait = last_up + policy.healthy_after + 1 - time.time()
    log(f"relay-restart: {count} agents up; waiting {healthy_wait:.0f} s until healthy")
    time.sleep(max(0.0, healthy_wait))
    stopped = time.time()
    relay.stop()
    relay.start()
    listening = time.time()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        fleet.poll()
        back, per_second = reconnect_spread(fleet.events, stopped, count)
        if per_second:
            break
        time.sleep(0.5)
    else:
        fleet.poll()
        back, per_second = reconnect_spread(fleet.events, stopped, count)
    return _restart_report(count, policy.source, stopped, listening, back, per_second)


def _restart_report(
    count: int, source: str, stopped: float, listening: float, back: float, per_second: list[int]
) -> str:
    peak = max(per_second, default=0)
    rows = [
        f"- agents: {count:,}; reconnect policy from {source}",
        f"- relay down (SIGTERM to listening again): {listening - stopped:.2f} s",
        f"- all agents back {back:.1f} s after the relay was stopped "
        f"({back - (listening - stopped):.1f} s after it listened again)",
        f"- most WELCOMEs in one second: {peak} ({peak / count:.0%} of the agents)",
        "",
        "| second after stop | " + " | ".join(str(i) for i in range(len(per_second))) + " |",
        "|---|" + "---:|" * len(per_second),
        "| agents back | " + " | ".join(str(n) for n in per_second) + " |",
        "",
        "",
    ]
    targets = [
        Target(
            f"{count:,} agents back within {RESTART_WITHIN:.0f} s of a relay restart",
            "met" if back <= RESTART_WITHIN else "not met",
            f"{back:.1f} s",
        ),
        Target(
            f"no second with more than {RESTART_MAX_SHARE:.0%} of them reconnecting",
            "met" if per_second and peak <= RESTART_MAX_SHARE * count else "not met",
            f"peak {peak} in one second ({peak / count:.0%})",
        ),
    ]
    return "\n".join(rows) + report.targets_markdown(targets) + "\n"
