"""``scripts/bench tcp``: raw TCP throughput through a tunnel, both directions.

Paths: ``direct`` (the client connects to the sink itself), ``ssh -R`` (OpenSSH remote
forwarding to a throwaway sshd, as in the ``paths`` mode) and ``molecule-edge``
(``edge-relay serve --open --tcp-ports`` plus ``edge-agent tcp``). bore is not among
them: neither PyPI, Debian nor npm carries it (the npm package ``bore-cli`` is another
project whose install downloads a binary), see docs/benchmarks.md.

Each round moves ``--mib`` MiB up (client to server, the server answers the count it
read) and then down (the server sends, the client counts) on one connection per
direction, through each path in turn; the figure is the median over rounds, with the
CPU seconds the path's own processes spent per GiB moved. The sink and the client run
in this process (threads; both mostly wait in send/recv), so the machine's other load
hits every path alike within a round. Target: molecule-edge >= 2x ssh -R.
"""

from __future__ import annotations

import re
import socket
import statistics
import struct
import threading
import time
from pathlib import Path
from typing import Final

from bench import report
from bench.paths import BenchPath, Direct, SshReverse, edge_command, edge_missing
from bench.procs import BenchError, Child, Children, free_port, sampling, wait_listening

#: Bytes per send/recv call on both ends.
CHUNK: Final = 256 * 1024
#: Target: molecule-edge's TCP throughput over ssh -R's, in both directions.
TARGET_OVER_SSH: Final = 2.0
#: Seconds one transfer may take before the round fails.
TRANSFER_TIMEOUT: Final = 120.0

MIB: Final = 1024 * 1024
_BLOCK: Final = bytes(CHUNK)


class Sink:
    """The far end: ``u`` + bytes until EOF -> answers the u64 count; ``d`` + u64 n ->
    sends n bytes and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    @staticmethod
    def _one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(TRANSFER_TIMEOUT)
            try:
                mode = conn.recv(1)
                if mode == b"u":
                    total = 0
                    while data := conn.recv(CHUNK):
                        total += len(data)
                    conn.sendall(struct.pack("!Q", total))
                elif mode == b"d":
                    (size,) = struct.unpack("!Q", _exactly(conn, 8))
                    _send(conn, size)
            except OSError:
                return

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        piece = conn.recv(n - len(data))
        if not piece:
            raise OSError("connection closed early")
        data += piece
    return data


def _send(conn: socket.socket, size: int) -> None:
    view = memoryview(_BLOCK)
    while size > 0:
        n = min(size, CHUNK)
        conn.sendall(view[:n])
        size -= n


def upload(port: int, size: int) -> float:
    """Seconds to move ``size`` bytes to the sink through ``port``."""
    with socket.create_connection(("127.0.0.1", port), timeout=TRANSFER_TIMEOUT) as conn:
        started = time.perf_counter()
        conn.sendall(b"u")
        _send(conn, size)
        conn.shutdown(socket.SHUT_WR)
        (got,) = struct.unpack("!Q", _exactly(conn, 8))
        elapsed = time.perf_counter() - started
    if got != size:
        raise BenchError(f"upload: the sink read {got} of {size} bytes")
    return elapsed


def download(port: int, size: int) -> float:
    """Seconds to receive ``size`` bytes from the sink through ``port``."""
    with socket.create_connection(("127.0.0.1", port), timeout=TRANSFER_TIMEOUT) as conn:
        started = time.perf_counter()
        conn.sendall(b"d" + struct.pack("!Q", size))
        got = 0
        buf = bytearray(CHUNK)
        while n := conn.recv_into(buf):
            got += n
        elapsed = time.perf_counter() - started
    if got != size:
        raise BenchError(f"download: received {got} of {size} bytes")
    return elapsed


class SshTcp(SshReverse):
    """ssh -R to the sink; ready once the forwarded port accepts connections."""

    def ready(self, client: Child) -> None:
        return None  # the sink speaks no HTTP; the forwarded port already listens


class EdgeTcp(BenchPath):
    key, label = "edge", "molecule-edge"

    @staticmethod
    def missing() -> str | None:
        return edge_missing()

    def start(self, origin_port: int) -> None:
        http_port, first = free_port(), _free_range(4)
        relay = self._spawn(
            "relay",
            [
                *edge_command("edge-relay"),
                *("serve", "--host", "127.0.0.1", "--port", str(http_port), "--open"),
                *("--state-dir", str(self.workdir / "relay-state")),
                *("--tcp-ports", f"{first}-{first + 3}"),
            ],
        )
        wait_listening(http_port, child=relay)
        agent = self._spawn(
            "agent",
            [
                *edge_command("edge-agent"),
                *("tcp", str(origin_port), "--relay", f"http://127.0.0.1:{http_port}"),
                *("--name", "benchtcp"),
            ],
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.search(r"Forwarding tcp://127\.0\.0\.1:(\d+)", agent.log.read_text())
            if found:
                self.base_url = f"tcp://127.0.0.1:{found.group(1)}"
                return
            if agent.proc.poll() is not None:
                raise BenchError(f"edge-agent tcp exited: {agent.tail()}")
            time.sleep(0.1)
        raise BenchError(f"edge-agent tcp printed no address: {agent.tail()}")


def _free_range(count: int) -> int:
    for first in range(41000, 60000, 97):
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise BenchError(f"no {count} consecutive free ports")


def _port(path: BenchPath, sink: Sink) -> int:
    if isinstance(path, Direct):
        return sink.port
    return int(path.base_url.rsplit(":", 1)[1])


def run(mib: int, rounds: int, children: Children, workdir: Path, command: str) -> str:
    size = mib * MIB
    sink = Sink()
    paths: list[BenchPath] = []
    skipped: list[str] = []
    try:
        classes: tuple[type[BenchPath], ...] = (Direct, SshTcp, EdgeTcp)
        for cls in classes:
            why = cls.missing()
            if why:
                skipped.append(f"{cls.label}: {why}")
                continue
            path = cls(children, workdir)
            path.start(sink.port)
            paths.append(path)
        results = _measure(paths, sink, size, rounds)
    finally:
        for path in paths:
            path.stop()
        sink.close()
    return _markdown(command, mib, rounds, results, skipped)


def _measure(
    paths: list[BenchPath], sink: Sink, size: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {
        p.label: {"up": [], "down": [], "cpu": []} for p in paths
    }
    for number in range(rounds):
        for path in paths:
            port = _port(path, sink)
            with sampling(path.pids()) as sampler:
                up = upload(port, size)
                down = download(port, size)
            row = results[path.label]
            row["up"].append(size / up / 1e6)
            row["down"].append(size / down / 1e6)
            row["cpu"].append(sampler.cpu_seconds / (2 * size / 1024**3))
            print(
                f"round {number + 1}/{rounds} {path.label}: up {row['up'][-1]:.0f} MB/s, "
                f"down {row['down'][-1]:.0f} MB/s",
                flush=True,
            )
    return results


def _markdown(
    command: str,
    mib: int,
    rounds: int,
    results: dict[str, dict[str, list[float]]],
    skipped: list[str],
) -> str:
    med = {
        label: {k: statistics.median(v) for k, v in row.items()} for label, row in results.items()
    }
    lines = [
        report.header(command),
        "",
        f"TCP throughput, {mib} MiB each way per round, median of {rounds} rounds.",
        "",
        "| path | up MB/s | down MB/s | tunnel CPU s per GiB |",
        "|---|---|---|---|",
    ]
    for label, row in med.items():
        cpu = "-" if label == "direct" else f"{row['cpu']:.2f}"
        lines.append(f"| {label} | {row['up']:,.0f} | {row['down']:,.0f} | {cpu} |")
    edge, ssh = med.get("molecule-edge"), med.get("ssh -R")
    if edge and ssh:
        lines.append("")
        for way in ("up", "down"):
            ratio = edge[way] / ssh[way]
            met = "met" if ratio >= TARGET_OVER_SSH else "NOT met"
            lines.append(
                f"- {way}: molecule-edge / ssh -R = {ratio:.2f}x "
                f"(target >= {TARGET_OVER_SSH:g}x: {met})"
            )
    for line in skipped:
        lines.append(f"- not run: {line}")
    lines.append("- bore: not run (not on PyPI, Debian or npm; see docs/benchmarks.md)")
    return "\n".join(lines) + "\n"
