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
from bench.procs import BenchError, Children, free_port, listening_socket, wait_listening

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


def _node(children: Children, workdir: Path, redis: str, index: int) -> str:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "edge-relay"), "serve", "--port", str(port), "--cluster", redis,
            "--node-url", url, "--state-dir", str(workdir / f"node{index}")]  # fmt: skip
    child = children.start(f"node{index}", argv)
    wait_listening(port, child=child)
    return url


def _origin(children: Children) -> int:
    sock = listening_socket()
    argv = [sys.executable, "-m", "bench.origin", "--fd", str(sock.fileno())]
    child = children.start("origin", argv, pass_fds=[sock.fileno()], cwd=Path.cwd())
    port: int = sock.getsockname()[1]
    sock.close()
    wait_http_ok(f"http://127.0.0.1:{port}/small", child=child)
    return port


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
    nodes = [_node(children, workdir, redis, i) for i in range(3)]
    origin = _origin(children)
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
    victim = next(c for c in children._children if c.name == "node0")
    victim.proc.send_signal(signal.SIGKILL)
    failover = _failover(nodes[0], nodes[2])
    return _report(rps, failover, rounds, seconds, command)


def _report(
    rps: dict[str, list[float]], failover: float, rounds: int, seconds: float, command: str
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
        f"Failover: SIGKILL of the owner node -> URL answers through another node in "
        f"{failover:.2f} s.",
        "",
    ]
    return "\n".join(lines)
