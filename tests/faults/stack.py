"""What the fault and security suites share: a counting origin, tunnels made of real
processes, timed callers and a probe that proves the relay stays responsive.

Processes and the origin come from the end-to-end helpers (:mod:`tests.e2e.procs`,
:mod:`tests.e2e.origin`); this module only adds what those suites need on top.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import math
import statistics
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp

from tests.e2e.origin import Origin
from tests.e2e.procs import AgentProc, Procs, RelayProc, issue_token, start_agent

MIB = 1024 * 1024


class CountingOrigin(Origin):
    """The end-to-end origin, counting every request that reaches it.

    ``arrivals[(method, id)]`` counts requests by their ``id`` query parameter *when the
    head arrives*, before any body is read, so a request cut off mid-upload still counts
    and a replay of it shows as a second arrival. ``paths`` keeps every raw path seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: Counter[tuple[str, str]] = Counter()
        self.paths: list[str] = []

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["raw_path"].decode("latin-1"))
            query = parse_qs(scope["query_string"].decode("latin-1"))
            if "id" in query:
                self.arrivals[(scope["method"], query["id"][-1])] += 1
        await super().app(scope, receive, send)

    @property
    def total(self) -> int:
        """Requests that reached this origin so far."""
        return len(self.paths)


@dataclasses.dataclass
class Tunnel:
    relay: RelayProc
    agent: AgentProc
    token: str
    name: str

    @property
    def url(self) -> str:
        """The public path-based URL (ends with "/")."""
        return self.agent.url

    def at(self, path: str) -> str:
        return self.url + path


def open_tunnel(
    procs: Procs,
    state_dir: Path,
    target: str,
    *relay_args: str,
    name: str = "demo",
    port: int = 0,
    agent_args: tuple[str, ...] = (),
) -> Tunnel:
    """A relay (``relay_args``), a token for ``name`` and ``edge-agent http target``."""
    relay = procs.add(RelayProc(state_dir, *relay_args, port=port, name=f"relay-{name}"))
    token = issue_token(state_dir, name)
    agent = procs.add(start_agent(relay, token, target, *agent_args, name=f"agent-{name}"))
    return Tunnel(relay, agent, token, name)


def add_agent(
    procs: Procs, relay: RelayProc, name: str, target: str, *args: str
) -> tuple[AgentProc, str]:
    """Another tunnel on ``relay``: a token for ``name`` and its agent."""
    token = issue_token(relay.state_dir, name)
    return procs.add(start_agent(relay, token, target, *args, name=f"agent-{name}")), token


@dataclasses.dataclass
class Outcome:
    """What one caller got: a status and a complete body, a cut body, or a failure."""

    status: int | None = None
    body: bytes = b""
    error: str = ""  # exception type when the exchange did not complete
    seconds: float = 0.0
    ended: float = 0.0  # time.monotonic() when the exchange ended

    @property
    def definite(self) -> bool:
        """An answer or a closed connection: everything but a timeout (a hang)."""
        return self.error != "TimeoutError"


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    within: float,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> Outcome:
    """One exchange, bounded by ``within`` seconds; never raises."""
    outcome = Outcome()
    start = time.monotonic()
    try:
        async with asyncio.timeout(within):
            async with http.request(method, url, data=data, headers=headers) as resp:
                outcome.status = resp.status
                outcome.body = await resp.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        outcome.error = type(exc).__name__
    outcome.ended = time.monotonic()
    outcome.seconds = outcome.ended - start
    return outcome


async def trickle(total: int, piece: int, pause: float) -> AsyncIterator[bytes]:
    """A request body of ``total`` bytes sent ``piece`` bytes at a time, ``pause`` s apart."""
    sent = 0
    while sent < total:
        size = min(piece, total - sent)
        yield b"u" * size
        sent += size
        await asyncio.sleep(pause)


class HealthProbe:
    """Asks the relay's ``/_edge/healthz`` every ``interval`` s on a thread of its own
    (so it runs whatever the tests' event loops do), each time on a new connection;
    ``latencies`` are the answer times in seconds (a failed probe counts as inf).

    Use it as a context manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(self, port: int, interval: float = 0.1, timeout: float = 10.0) -> None:
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    def start(self) -> HealthProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    def __enter__(self) -> HealthProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            start = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                conn.request("GET", "/_edge/healthz")
                ok = conn.getresponse().status == 200
            except OSError:
                ok = False
            finally:
                conn.close()
            self.latencies.append(time.monotonic() - start if ok else math.inf)

    @property
    def worst(self) -> float:
        return max(self.latencies, default=math.inf)

    def summary(self) -> str:
        if not self.latencies:
            return "no health probes"
        ms = [x * 1000 for x in self.latencies]
        return (
            f"{len(ms)} health probes: median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms"
        )
