"""``scripts/bench cluster``: a relay cluster on one Redis, measured in one run.

Three nodes (``edge-relay serve --cluster``), one agent connected to node 0 with all three
as ``--relay``, the benchmark origin behind it. Rounds alternate wrk loads (small GETs)
on: the origin directly, the owner node (node 0), and a non-owner node (node 1, which
forwards every request to node 0 over its keep-alive links). Then failover: node 0 is
SIGKILLed and the time until the URL answers 200 through node 2 is measured (the agent
reconnects to another node, which publishes the name). Needs redis-server and wrk.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.load import write_wrk_script, wrk
from bench.paths import wait_http_ok
from bench.procs import (
    BenchError,
    Child,
    Children,
    free_port,
    wait_listening,
)
from bench.scale import start_origin

BIN = Path(sys.executable).parent


def _redis(children: Children, workdir: Path) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("cluster needs redis-server (apt-get install redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]
    child = children.start("redis", argv)
    wait_listening(port, child=child)
    return f"redis://127.0.0.1:{port}/0"


def _node(
    children: Children, workdir: Path, redis: str, index: int, port: int = 0
) -> tuple[str, Child]:
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "edge-relay"), "serve", "--port", str(port), "--cluster", redis,
            "--node-url", url, "--state-dir", str(workdir / f"node{index}")]  # fmt: skip
    child = children.start(f"node{index}", argv)
    wait_listening(port, child=child)
    return url, child


def _token(redis: str) -> str:
    argv = [str(BIN / "edge-relay"), "token", "issue", "bench", "--cluster", redis]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise BenchError(f"token issue failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _failover(dead: str, through: str) -> float:
    url = f"{through}/a/bench/small"
    start = time.monotonic()
    while time.monotonic() - start < 60:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise BenchError(f"{url} did not answer within 60 s after {dead} died")


def run(args: argparse.Namespace, children: Children, workdir: Path, command: str) -> str:
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    redis = _redis(children, workdir)
    started = [_node(children, workdir, redis, i) for i in range(3)]
    nodes = [url for url, _ in started]
    origin = start_origin(children)
    relays = [arg for node in nodes for arg in ("--relay", node)]
    agent = [str(BIN / "edge-agent"), "http", str(origin), *relays, "--token", _token(redis)]
    children.start("agent", agent)
    for node in nodes:
        wait_http_ok(f"{node}/a/bench/small")
    script = write_wrk_script(workdir)
    targets = {
        "direct": f"http://127.0.0.1:{origin}/small",
        "owner node": f"{nodes[0]}/a/bench/small",
        "non-owner node": f"{nodes[1]}/a/bench/small",
    }
    rps: dict[str, list[float]] = {key: [] for key in targets}
    for _ in range(rounds):
        for key, url in targets.items():
            result = wrk(url, connections=16, seconds=seconds, script=script)
            if result.errors:
                raise BenchError(f"{key}: {result.errors} errors")
            rps[key].append(result.rps)
    failovers = []
    for _ in range(2 if args.quick else 5):
        failovers.append(_kill_holder(children, workdir, redis, started))
    return _report(rps, failovers, rounds, seconds, command)


def _holder(nodes: list[str]) -> int:
    for index, node in enumerate(nodes):
        text = httpx.get(f"{node}/_edge/metrics", timeout=5).text
        if "\nedge_agents_connected 1.0" in text:
            return index
    raise BenchError("no node holds the agent's session")


def _kill_holder(
    children: Children, workdir: Path, redis: str, started: list[tuple[str, Child]]
) -> float:
    """SIGKILL the node that holds the session, time the URL through another, then start
    the killed node again (same port: same node URL)."""
    nodes = [url for url, _ in started]
    index = _holder(nodes)
    url, child = started[index]
    child.proc.send_signal(signal.SIGKILL)
    child.proc.wait(10)
    took = _failover(url, nodes[(index + 1) % len(nodes)])
    port = int(url.rsplit(":", 1)[1])
    started[index] = _node(children, workdir, redis, index + 10 * len(started), port)
    time.sleep(1.0)  # let the agent settle before the next kill
    return took


def _report(
    rps: dict[str, list[float]], failovers: list[float], rounds: int, seconds: float, command: str
) -> str:
    direct = sorted(rps["direct"])[len(rps["direct"]) // 2]
    lines = [
        f"# Relay cluster (`{command}`)",
        "",
        f"{rounds} rounds of {seconds:g} s per target, wrk -c16, GET /small; median req/s.",
        "",
        "| target | req/s (median) | of direct | per round |",
        "|---|---|---|---|",
    ]
    for key, values in rps.items():
        median = sorted(values)[len(values) // 2]
        each = ", ".join(f"{v:.0f}" for v in values)
        lines.append(f"| {key} | {median:.0f} | {median / direct:.2f}x | {each} |")
    owner = sorted(rps["owner node"])[rounds // 2]
    other = sorted(rps["non-owner node"])[rounds // 2]
    lines += [
        "",
        f"Non-owner / owner: {other / owner:.2f}x.",
        "Failover: SIGKILL of the node that holds the session -> the URL answers through "
        f"another node after (s): {', '.join(f'{t:.2f}' for t in failovers)}; "
        f"max {max(failovers):.2f}.",
        "",
    ]
    return "\n".join(lines)
