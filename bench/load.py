"""Load generators: wrk for request rates and throughput, a small client for SSE timing.

wrk (Debian's 4.1) runs with ``--latency`` and a Lua ``done()`` hook that prints its
summary as one JSON line, so nothing is read back from wrk's rounded text. Every run is
bounded by ``-d`` and, in case wrk hangs, by a subprocess timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Final

from bench.origin import SSE_EVENTS, SSE_PERIOD
from bench.procs import BenchError

#: Per-request timeout inside wrk; its default of 2 s would count a slow 64 MiB
#: response as an error instead of as a slow one.
WRK_TIMEOUT: Final = "30s"
#: Size of each POST /echo body.
ECHO_BODY: Final = 1024 * 1024
#: Seconds an SSE measurement may take before it counts as failed.
SSE_TIMEOUT: Final = 10.0

WRK_SCRIPT: Final = """\
local size = tonumber(os.getenv("BENCH_BODY_SIZE") or "0")
if size > 0 then
  wrk.method = "POST"
  wrk.body = string.rep("x", size)
  wrk.headers["Content-Type"] = "application/octet-stream"
end
function done(s, latency, requests)
  local e = s.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us":%.0f,"requests":%.0f,"bytes":%.0f,"connect":%.0f,' ..
    '"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,' ..
    '"p50_us":%.0f,"p99_us":%.0f,"mean_us":%.1f}\\n',
    s.duration, s.requests, s.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


@dataclasses.dataclass(frozen=True, slots=True)
class WrkResult:
    seconds: float
    requests: int
    bytes: int
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0


def write_wrk_script(workdir: Path) -> Path:
    path = workdir / "bench.lua"
    path.write_text(WRK_SCRIPT)
    return path


def wrk(
    url: str, *, connections: int, seconds: float, script: Path, body_size: int = 0
) -> WrkResult:
    """Run wrk against ``url`` for ``seconds`` (whole: wrk takes no fractions)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    argv += ["--timeout", WRK_TIMEOUT, "-s", str(script), url]
    env = {**os.environ, "BENCH_BODY_SIZE": str(body_size)}
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from exc
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return _parse(json.loads(line.removeprefix("BENCH_JSON ")))
    raise BenchError(f"wrk printed no summary (exit {done.returncode}): {done.stderr.strip()}")


def _parse(raw: dict[str, float]) -> WrkResult:
    errors = sum(int(raw[k]) for k in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(
        seconds=raw["duration_us"] / 1e6,
        requests=int(raw["requests"]),
        bytes=int(raw["bytes"]),
        errors=errors,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SseResult:
    first_event_ms: float  # request written -> first event read
    max_lag_ms: float  # worst lateness of an event against the origin's schedule
    events: int

    @property
    def incremental(self) -> bool:
        """Every event arrived before the origin wrote the one after next.

        A buffering hop delivers events in bursts (or all at the end); then some event
        is late by many periods.
        """
        return self.events == SSE_EVENTS and self.max_lag_ms < 2 * SSE_PERIOD * 1000


async def _sse_once(url: str) -> SseResult:
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        request += "Accept: text/event-stream\r\nConnection: close\r\n\r\n"
        start = time.perf_counter()
        writer.write(request.encode("ascii"))
        arrivals = await _read_events(reader, start)
    finally:
        writer.close()
    if not arrivals:
        return SseResult(float("inf"), float("inf"), 0)
    first = arrivals[0]
    lags = [t - first - i * SSE_PERIOD for i, t in enumerate(arrivals)]
    return SseResult(first * 1000, max(lags) * 1000, len(arrivals))


async def _read_events(reader: asyncio.StreamReader, start: float) -> list[float]:
    """Arrival time of each ``data:`` line, seconds after ``start``.

    The response is chunked or not depending on the path; either way each event's
    ``data: event N`` text is contiguous, so counting it in the raw bytes is enough.
    """
    arrivals: list[float] = []
    buffer = b""
    while len(arrivals) < SSE_EVENTS:
        chunk = await reader.read(65536)
        if not chunk:
            break
        now = time.perf_counter() - start
        buffer += chunk
        while (index := buffer.find(b"data: event ")) >= 0 and b"\n" in buffer[index:]:
            arrivals.append(now)
            buffer = buffer[buffer.index(b"\n", index) + 1 :]
    return arrivals


def sse(url: str) -> SseResult:
    """One SSE request: time to the first event and the lateness of the others."""

    async def bounded() -> SseResult:
        return await asyncio.wait_for(_sse_once(url), SSE_TIMEOUT)

    try:
        return asyncio.run(bounded())
    except (TimeoutError, OSError):
        return SseResult(float("inf"), float("inf"), 0)


class Downloader:
    """Downloads ``url`` again and again on a thread until :meth:`stop`, counting bytes.

    A raw HTTP/1.1 client reading into one reused buffer, so the reader costs little CPU
    next to the path it loads. A download still in flight at :meth:`stop` is cut off.
    """

    def __init__(self, url: str) -> None:
        self.url = urllib.parse.urlsplit(url)
        self.bytes = 0
        self.completed = 0
        self.error: str | None = None
        self.started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._began = 0.0
        self.seconds = 0.0

    def start(self) -> Downloader:
        self._began = time.perf_counter()
        self._thread.start()
        if not self.started.wait(SSE_TIMEOUT):
            self.stop()
            raise BenchError(f"download of {self.url.geturl()} did not start: {self.error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(SSE_TIMEOUT)
        self.seconds = time.perf_counter() - self._began

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.completed += self._once()
        except OSError as exc:
            self.error = str(exc)
            self.started.set()

    def _once(self) -> bool:
        """One download; True if it ran to the end (not cut off by :meth:`stop`)."""
        u = self.url
        target = u.path + (f"?{u.query}" if u.query else "")
        request = f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n\r\n"
        buffer = memoryview(bytearray(1024 * 1024))
        with socket.create_connection(
            (u.hostname or "127.0.0.1", u.port or 80), SSE_TIMEOUT
        ) as sock:
            sock.sendall(request.encode("ascii"))
            while not self._stop.is_set():
                n = sock.recv_into(buffer)
                if not n:
                    return True
                self.bytes += n
                self.started.set()
        return False
