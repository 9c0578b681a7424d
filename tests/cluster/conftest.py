"""Fixtures of the cluster suite: a real redis-server (Debian's package, installed when
missing) on a free loopback port, relay nodes as real ``edge-relay serve --cluster``
processes, and small origins that say which agent served a request."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.deploy.tools import require
from tests.e2e.procs import AgentProc, Procs, RelayProc, free_port, run_cli, wait_port


class RedisServer:
    """redis-server on 127.0.0.1:``port``, persisting every write (append-only file), as
    a production Redis does: a restart keeps the tokens."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always",
                "--dir", str(self.workdir), "--daemonize", "no"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, timeout=10)

    def stop(self) -> None:
        """SIGKILL: Redis dies as a crashed machine's would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = require("redis-server", "redis-server")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


class NameOrigin:
    """An HTTP origin that answers JSON naming its agent (and what it was sent)."""

    def __init__(self, name: str) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                size = int(self.headers.get("content-length") or 0)
                self._answer(self.rfile.read(size))

            def _answer(self, body: bytes) -> None:
                data = {"agent": outer.name, "path": self.path, "size": len(body),
                        "headers": {k.lower(): v for k, v in self.headers.items()}}  # fmt: skip
                out = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: object) -> None:
                pass

        self.name = name
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_node(
    procs: Procs,
    redis: RedisServer,
    state_dir: Path,
    label: str,
    *args: str,
    host: str = "127.0.0.1",
    port: int = 0,
) -> RelayProc:
    """A relay node on a port chosen first (its node URL must name it), on ``host`` (a
    loopback address: nodes on several addresses are several machines)."""
    port = port or free_port()
    node = f"http://{host}:{port}"
    flags = ["--cluster", redis.url, "--node-url", node, "--host", host, *args]
    relay = procs.add(RelayProc(state_dir, *flags, port=port, name=label))
    relay.url = node
    return relay


def issue(redis: RedisServer, name: str) -> str:
    done = run_cli("edge-relay", "token", "issue", name, "--cluster", redis.url)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def start_agent(
    procs: Procs, relays: list[RelayProc], token: str, origin: NameOrigin, label: str
) -> AgentProc:
    flags = [arg for relay in relays for arg in ("--relay", relay.url)]
    agent = procs.add(AgentProc(str(origin.port), *flags, "--token", token, name=label))
    agent.url = agent.wait_url()
    return agent


def get_json(url: str, timeout: float = 5.0) -> tuple[int, dict[str, object]]:
    response = httpx.get(url, timeout=timeout)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, {}


def wait_status(url: str, status: int, timeout: float) -> float:
    """Seconds until ``url`` answers ``status`` (TimeoutError after ``timeout``)."""
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < timeout:
        try:
            last = httpx.get(url, timeout=2.0).status_code
        except httpx.HTTPError as exc:
            last = exc
        if last == status:
            return time.monotonic() - start
        time.sleep(0.05)
    raise TimeoutError(f"{url}: still {last!r} after {timeout} s, not {status}")
