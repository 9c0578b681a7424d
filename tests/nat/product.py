"""The product placed in the topology, and the callers that use it from the internet.

* internet namespace: ``edge-relay serve`` on 0.0.0.0 (reached at 10.77.2.2), the dev
  platform, and every caller (httpx and the a2a-sdk client, run in a thread inside the
  namespace, see ``netns.Netns.call``);
* laptop namespace: the origins on 127.0.0.1 (the example A2A agent, or the stdlib
  ``sse_origin.py``) and ``edge-agent``, which reaches the relay only through the NAT.

Every process is started through ``Topology.spawn``, so the topology's teardown stops it.
Callers never use proxies from the environment (``trust_env=False``).
"""

from __future__ import annotations

import functools
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from tests.nat.netns import Netns, NsThread
from tests.nat.procs import NsProcess
from tests.nat.topology import INTERNET_IP, Topology

BIN: Final = Path(sys.executable).parent
REPO: Final = Path(__file__).resolve().parents[2]
SSE_ORIGIN: Final = Path(__file__).with_name("sse_origin.py")
A2A_EXAMPLE: Final = REPO / "examples" / "a2a_agent.py"
#: How long a process may take to listen or print its URL (a cold start imports a lot
#: on a shared 2-core machine).
START_TIMEOUT: Final = 60.0


@functools.cache
def unavailable(command: str) -> str | None:
    """``None`` when ``command`` (a console script, maybe with a subcommand) answers
    ``--help`` with exit 0, else why not."""
    script, *sub = command.split()
    if not (BIN / script).exists():
        return f"{script} is not installed in {BIN}"
    argv = [str(BIN / script), *sub, "--help"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{command} is not ready yet ({last})"
    return None


def require(*commands: str) -> None:
    """Skip the test, naming what is missing, unless every command is there."""
    reasons = [r for c in commands if (r := unavailable(c))]
    if reasons:
        reason = "product piece missing: " + "; ".join(reasons)
        print(reason)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def free_port(ns: Netns) -> int:
    return ns.call(_free_port)


@dataclass
class Relay:
    proc: NsProcess
    port: int
    state_dir: Path

    @property
    def url(self) -> str:
        """The relay as the laptop (and any caller) reaches it."""
        return f"http://{INTERNET_IP}:{self.port}"

    def issue_token(self, name: str) -> str:
        argv = [str(BIN / "edge-relay"), "token", "issue", name, "--state-dir", str(self.state_dir)]
        out = self.proc.ns.run(argv).stdout
        return [line.strip() for line in out.splitlines() if line.strip()][-1]


def start_relay(topo: Topology, public_url: str | None = None, extra: Sequence[str] = ()) -> Relay:
    port = free_port(topo.internet)
    state_dir = topo.log_dir / "relay-state"
    state_dir.mkdir(mode=0o700, exist_ok=True)
    argv = [str(BIN / "edge-relay"), "serve", "--host", "0.0.0.0", "--port", str(port)]
    argv += ["--public-url", public_url or f"http://{INTERNET_IP}:{port}"]
    argv += ["--state-dir", str(state_dir), *extra]
    proc = topo.spawn(topo.internet, "relay", argv)
    proc.wait_port(INTERNET_IP, port, timeout=START_TIMEOUT)
    return Relay(proc, port, state_dir)


@dataclass
class Platform:
    proc: NsProcess
    url: str
    admin: dict[str, str]  # the admin bearer header


def start_platform(topo: Topology) -> Platform:
    """``edge-devplatform serve`` in the internet namespace, in SaaS mode.

    SaaS mode lets agent URLs be RFC 1918 addresses: the relay's 10.77.2.2 stands for a
    relay the platform reaches over a private cloud network.
    """
    admin_token = secrets.token_urlsafe(24)
    argv = [str(BIN / "edge-devplatform"), "serve", "--host", "0.0.0.0", "--port", "0"]
    argv += ["--admin-token", admin_token, "--saas"]
    proc = topo.spawn(topo.internet, "devplatform", argv)
    pattern = r"edge-devplatform listening on http://\S+:(\d+)"
    port = int(proc.wait_output(pattern, timeout=START_TIMEOUT).group(1))
    return Platform(
        proc, f"http://{INTERNET_IP}:{port}", {"Authorization": f"Bearer {admin_token}"}
    )


def start_sse_origin(topo: Topology) -> int:
    """The stdlib origin on the laptop's 127.0.0.1; returns its port."""
    proc = topo.spawn(topo.laptop, "sse-origin", [sys.executable, str(SSE_ORIGIN)])
    return int(proc.wait_output(r"listening on (\d+)", timeout=START_TIMEOUT).group(1))


def start_a2a_example(topo: Topology) -> int:
    """The example A2A agent on the laptop's 127.0.0.1; returns its port."""
    argv = [sys.executable, str(A2A_EXAMPLE), "--host", "127.0.0.1", "--port", "0"]
    proc = topo.spawn(topo.laptop, "a2a-example", argv, cwd=REPO)
    pattern = r"Uvicorn running on http://127\.0\.0\.1:(\d+)"
    return int(proc.wait_output(pattern, timeout=START_TIMEOUT).group(1))


def start_agent_http(
    topo: Topology, relay: Relay, name: str, target_port: int, extra: Sequence[str] = ()
) -> tuple[NsProcess, str]:
    """``edge-agent http PORT`` on the laptop; returns it and the public URL it prints."""
    token = relay.issue_token(name)
    argv = [str(BIN / "edge-agent"), "http", str(target_port), "--relay", relay.url]
    argv += ["--token", token, "--name", name, *extra]
    proc = topo.spawn(topo.laptop, f"agent-{name}", argv)
    url = proc.wait_output(rf"(https?://\S+/a/{name}/)", timeout=START_TIMEOUT).group(1)
    return proc, url


# --- callers in the internet namespace -------------------------------------------------


def _request(method: str, url: str, timeout: float, kwargs: dict[str, Any]) -> httpx.Response:
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        return client.request(method, url, **kwargs)


def request(ns: Netns, method: str, url: str, timeout: float = 10.0, **kw: Any) -> httpx.Response:
    """One HTTP request made from inside ``ns`` (body read in full)."""
    return ns.call(_request, method, url, timeout, kw)


def poll(
    ns: Netns,
    url: str,
    until: Callable[[httpx.Response], bool],
    within: float,
    timeout: float = 5.0,
    interval: float = 1.0,
    headers: dict[str, str] | None = None,
) -> tuple[float, httpx.Response]:
    """GET ``url`` from ``ns`` until ``until(response)``; returns seconds taken and the response.

    Transport errors and timeouts count as "not yet". Raises AssertionError after ``within``
    seconds, naming the last answer.
    """
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < within:
        try:
            last = response = request(ns, "GET", url, timeout=timeout, headers=headers)
            if until(response):
                return time.monotonic() - start, response
            last = f"{response.status_code} {response.headers.get('x-edge-error')}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(interval)
    raise AssertionError(f"GET {url}: condition not met within {within} s; last: {last}")


def a2a_streaming_request(text: str, **metadata: float) -> dict[str, Any]:
    """A JSON-RPC SendStreamingMessage body (A2A 1.0) for the example agent."""
    message = {
        "role": "ROLE_USER",
        "messageId": str(uuid.uuid4()),
        "parts": [{"text": text}],
        "metadata": metadata,
    }
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendStreamingMessage",
        "params": {"message": message},
    }


A2A_HEADERS: Final = {"A2A-Version": "1.0", "Accept": "text/event-stream"}


@dataclass
class SseEvent:
    data: str
    arrived: float  # time.time(), comparable with the origin's "sent" on the same machine

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SseReader:
    """Reads one SSE response from inside a namespace in a background thread.

    ``events`` fills as events arrive. When the response ends, ``ended_cleanly`` is True
    (the body ended properly) or ``error`` holds the exception the client raised (for an
    aborted chunked body httpx raises ``RemoteProtocolError``).
    """

    ns: Netns
    method: str
    url: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    read_timeout: float = 120.0
    status: int | None = None
    events: list[SseEvent] = field(default_factory=list)
    ended_cleanly: bool = False
    error: BaseException | None = None
    _done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> SseReader:
        NsThread(self.ns, self._run).start()
        return self

    def _run(self) -> None:
        timeout = httpx.Timeout(10.0, read=self.read_timeout)
        try:
            with httpx.Client(timeout=timeout, trust_env=False) as client:
                kw: dict[str, Any] = {"headers": self.headers, "json": self.body}
                with client.stream(self.method, self.url, **kw) as response:
                    self.status = response.status_code
                    self._read(response)
            self.ended_cleanly = True
        except BaseException as exc:  # recorded for the test thread to judge
            self.error = exc
        finally:
            self._done.set()

    def _read(self, response: httpx.Response) -> None:
        data: list[str] = []
        for line in response.iter_lines():
            if line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif not line and data:
                self.events.append(SseEvent("\n".join(data), time.time()))
                data = []

    def wait_events(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            if self._done.is_set() or time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(self.events)} of {count} events; status {self.status}, "
                    f"clean end {self.ended_cleanly}, error {self.error!r}"
                )
            time.sleep(0.05)

    def wait_done(self, timeout: float) -> bool:
        return self._done.wait(timeout)
