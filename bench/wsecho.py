"""``scripts/bench websocket``: WebSocket echo through molecule-edge against direct.

Three paths to the same echo (:mod:`bench.wsorigin`): ``direct`` (the websockets server
itself), ``edge`` (``edge-relay serve --open`` + ``edge-agent http PORT``, the
pass-through) and ``edge-app`` (``edge-agent http --app bench.wsorigin:app``, the
in-process ASGI app). The client is the websockets library on uvloop in this process,
deflate off, no keepalive pings.

Per round and path: one socket sends a small message and waits for its echo, again
and again for the load's duration (c=1: round trip p50/p99, messages/s), then
:data:`MANY` sockets do the same at once (messages/s). Rounds rotate the order of the
paths; figures are medians over rounds, and the added latency is the tunnel's p50 minus
direct's p50 of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Final

import uvloop
from websockets.asyncio.client import ClientConnection, connect

from bench import report
from bench.paths import EDGE_NAME, BenchPath, Direct, MoleculeEdge, edge_command, wait_http_ok
from bench.procs import BenchError, Children, free_port, listening_socket, wait_listening
from bench.report import Target

#: Sockets of the concurrent load.
MANY: Final = 32
#: Bytes per message (a small chat or RPC message).
MESSAGE: Final = b"m" * 64
#: The target of issue 11: round trip at c=1 at most direct's plus this, in ms.
ADDED_MS_TARGET: Final = 0.5
LABELS: Final = {"direct": "direct", "edge": "molecule-edge", "edge-app": "molecule-edge --app"}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class EdgeApp(BenchPath):
    """molecule-edge with the echo as an in-process ASGI app (``--app``)."""

    key, label = "edge-app", "molecule-edge --app"

    def start(self, origin_port: int) -> None:
        port = free_port()
        relay_url = f"http://127.0.0.1:{port}"
        relay = self._spawn(
            "relay",
            [
                *edge_command("edge-relay"),
                *("serve", "--host", "127.0.0.1", "--port", str(port), "--open"),
                *("--state-dir", str(self.workdir / "relay-state")),
            ],
        )
        wait_listening(port, child=relay)
        root = str(Path(__file__).resolve().parent.parent)  # so that bench.wsorigin imports
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        agent = self._spawn(
            "agent",
            [
                *edge_command("edge-agent"),
                *("http", "--app", "bench.wsorigin:app", "--relay", relay_url),
                *("--name", EDGE_NAME, "--no-inspect"),
            ],
            env={"PYTHONPATH": path},
        )
        self.base_url = f"{relay_url}/a/{EDGE_NAME}"
        wait_http_ok(self.base_url + "/small", child=agent)


def _ws_url(path: BenchPath) -> str:
    return path.base_url.replace("http://", "ws://", 1) + "/echo"


def _open(url: str) -> connect:
    return connect(url, compression=None, ping_interval=None, max_size=2**20)


async def _ping_pong(ws: ClientConnection, until: float, times: list[float] | None) -> int:
    count = 0
    clock = time.perf_counter
    while clock() < until:
        start = clock()
        await ws.send(MESSAGE)
        await ws.recv()
        if times is not None:
            times.append(clock() - start)
        count += 1
    return count


async def _one(url: str, seconds: float) -> tuple[list[float], float]:
    """c=1: the round trips (s) and messages/s."""
    async with _open(url) as ws:
        await _ping_pong(ws, time.perf_counter() + 0.3, None)  # warm the path
        times: list[float] = []
        started = time.perf_counter()
        count = await _ping_pong(ws, started + seconds, times)
        return times, count / (time.perf_counter() - started)


async def _many(url: str, seconds: float) -> float:
    """:data:`MANY` sockets at once: messages/s in all."""
    sockets = [await _open(url) for _ in range(MANY)]
    try:
        started = time.perf_counter()
        until = started + seconds
        counts = await asyncio.gather(*(_ping_pong(ws, until, None) for ws in sockets))
        return sum(counts) / (time.perf_counter() - started)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _measure(
    paths: list[BenchPath], rounds: int, seconds: float
) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for round_no in range(rounds):
        shift = round_no % len(paths)
        for path in paths[shift:] + paths[:shift]:
            log(f"round {round_no + 1}/{rounds}: {path.label}")
            times, rate = uvloop.run(_one(_ws_url(path), seconds))
            figures = samples[path.key]
            figures["c1_p50_ms"].append(statistics.median(times) * 1000)
            figures["c1_p99_ms"].append(_pct(times, 0.99) * 1000)
            figures["c1_mps"].append(rate)
            figures["many_mps"].append(uvloop.run(_many(_ws_url(path), seconds)))
    return samples


ROWS: Final = (
    ("c1_p50_ms", "c=1 round trip p50: ms", "{:.3f}"),
    ("c1_p99_ms", "c=1 round trip p99: ms", "{:.3f}"),
    ("c1_mps", "c=1 messages/s", "{:,.0f}"),
    ("many_mps", f"c={MANY} messages/s", "{:,.0f}"),
)


def _table(figures: dict[str, dict[str, float]]) -> str:
    keys = list(figures)
    rows = ["| figure | " + " | ".join(LABELS[k] for k in keys) + " |"]
    rows.append("|---|" + "---:|" * len(keys))
    for metric, label, fmt in ROWS:
        rows.append(
            f"| {label} | " + " | ".join(fmt.format(figures[k][metric]) for k in keys) + " |"
        )
    direct = figures.get("direct")
    if direct is not None:
        added = [f"{(figures[k]['c1_p50_ms'] - direct['c1_p50_ms']) * 1000:+.0f} us" for k in keys]
        rows.append("| c=1 added round trip vs direct (p50) | " + " | ".join(added) + " |")
        for metric in ("c1_mps", "many_mps"):
            label = next(lbl for m, lbl, _ in ROWS if m == metric)
            cells = [f"{figures[k][metric] / direct[metric]:.2f}x" for k in keys]
            rows.append(f"| {label}, ratio to direct | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _targets(figures: dict[str, dict[str, float]]) -> list[Target]:
    direct = figures.get("direct")
    out = []
    for key in ("edge", "edge-app"):
        text = f"{LABELS[key]}: WebSocket round trip ≤ direct + {ADDED_MS_TARGET} ms at c=1"
        if direct is None or key not in figures:
            out.append(Target(text, "pending", "not measured"))
            continue
        added = figures[key]["c1_p50_ms"] - direct["c1_p50_ms"]
        status = "met" if added <= ADDED_MS_TARGET else "not met"
        out.append(Target(text, status, f"p50 {added * 1000:+.0f} us over direct"))
    return out


def run(args: argparse.Namespace, children: Children, workdir: Path, command: str) -> str:
    rounds = args.rounds or (2 if args.quick else 3)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    sock = listening_socket()
    argv = [sys.executable, "-m", "bench.wsorigin", "--fd", str(sock.fileno())]
    origin = children.start("wsorigin", argv, pass_fds=[sock.fileno()], cwd=Path.cwd())
    port: int = sock.getsockname()[1]
    sock.close()
    wait_http_ok(f"http://127.0.0.1:{port}/small", child=origin)
    paths: list[BenchPath] = []
    for cls in (Direct, MoleculeEdge, EdgeApp):
        path = cls(children, workdir)
        try:
            path.start(port)
        except BenchError as exc:
            log(f"skipping {cls.label}: {exc}")
            path.stop()
            continue
        paths.append(path)
    if not paths:
        raise BenchError("no path could be started")
    samples = _measure(paths, rounds, seconds)
    figures = {k: {m: statistics.median(v) for m, v in ms.items()} for k, ms in samples.items()}
    return "\n\n".join(
        [
            report.header(command),
            f"WebSocket echo, {len(MESSAGE)}-byte messages, {rounds} rounds of {seconds:g} s "
            "per path and load, medians over rounds:",
            _table(figures),
            report.targets_markdown(_targets(figures)),
        ]
    )
