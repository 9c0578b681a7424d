"""Real processes for end-to-end tests: start, read their output, stop them for sure."""

from __future__ import annotations

import contextlib
import http.server
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def http_servers(
    handler: type[http.server.BaseHTTPRequestHandler], count: int = 1
) -> Iterator[list[int]]:
    """``count`` threaded HTTP servers on 127.0.0.1 answering with ``handler``; their ports."""
    running = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(count)]
    for server in running:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield [int(server.server_address[1]) for server in running]
    finally:
        for server in running:
            server.shutdown()
            server.server_close()


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


class ProcessExited(RuntimeError):
    """The process ended before printing what was waited for."""


class Proc:
    """A subprocess whose merged output is kept (for assertions and failure reports)."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str] | None = None):
        self.name = name
        self.args = list(args)
        self.lines: list[str] = []
        self.stamps: list[float] = []  # time.monotonic() when each line was read
        self._queue: queue.Queue[str] = queue.Queue()
        self._eof = threading.Event()
        # ``env`` is the whole environment when given (see clean_env).
        full_env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
            cwd=ROOT,  # so ``--app tests.e2e...`` imports, as from a checkout
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.stamps.append(time.monotonic())
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line.rstrip("\n"))
        self._eof.set()

    def wait_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Wait for an output line matching ``pattern`` (searched in lines seen so far too)."""
        regex = re.compile(pattern)
        for line in list(self.lines):
            if m := regex.search(line):
                return m
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self._eof.is_set():
                    raise ProcessExited(
                        f"{self.name} exited ({self.popen.poll()}) before printing {pattern!r}:"
                        f"\n{self.output()}"
                    ) from None
                continue
            if m := regex.search(line):
                return m
        raise TimeoutError(f"{self.name}: no line matching {pattern!r}:\n{self.output()}")

    def output(self) -> str:
        return "\n".join(self.lines[-200:])

    def stamp(self, pattern: str, nth: int = 1) -> float:
        """When the ``nth`` line matching ``pattern`` was read (``time.monotonic()``)."""
        regex = re.compile(pattern)
        seen = 0
        for stamp, line in zip(list(self.stamps), list(self.lines), strict=False):
            if regex.search(line):
                seen += 1
                if seen == nth:
                    return stamp
        raise LookupError(f"{self.name}: no line #{nth} matching {pattern!r}")

    def count(self, pattern: str) -> int:
        """Output lines so far that match ``pattern``."""
        regex = re.compile(pattern)
        return sum(1 for line in list(self.lines) if regex.search(line))

    def wait_count(self, pattern: str, n: int, timeout: float = 20.0) -> None:
        """Wait until at least ``n`` output lines match ``pattern``."""
        deadline = time.monotonic() + timeout
        while self.count(pattern) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: < {n} lines {pattern!r}:\n{self.output()}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def wait(self, timeout: float = 20.0) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left."""
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(5)


# -- the two commands under test ----------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without EDGE_* settings (they would change what the
    commands do), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    return env | {"PYTHONUNBUFFERED": "1"} | extra


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a short command (``edge-relay token issue ...``) to completion."""
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        cwd=ROOT,
        check=False,
    )


def issue_token(state_dir: Path, name: str) -> str:
    done = run_cli("edge-relay", "token", "issue", name, "--state-dir", str(state_dir))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class RelayProc(Proc):
    """``edge-relay serve`` on 127.0.0.1 (port 0 unless given: the bound port is read
    from its ``relay_listening`` log line)."""

    def __init__(
        self, state_dir: Path, *args: str, port: int = 0, name: str = "relay", tls: bool = False
    ) -> None:
        argv = [
            str(BIN / "edge-relay"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            *args,
        ]
        super().__init__(name, argv, env=clean_env())
        self.state_dir = state_dir
        try:
            match = self.wait_line(r"relay_listening port=(\d+)")
        except BaseException:
            self.stop()
            raise
        self.port = int(match.group(1))
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def refusals(self) -> int:
        return self.count(r"agent_refused")


class AgentProc(Proc):
    """``edge-agent http ...``; :meth:`wait_url` returns the public URL it printed."""

    def __init__(self, *args: str, name: str = "agent", env: dict[str, str] | None = None) -> None:
        argv = [str(BIN / "edge-agent"), "http", *args]
        super().__init__(name, argv, env=clean_env(**(env or {})))
        self.url = ""

    def wait_url(self, timeout: float = 20.0) -> str:
        """The path-routed URL (``.../a/NAME/``): a loopback relay also prints
        ``http://NAME.localhost:PORT/`` first, which Python's resolver does not know."""
        return self.wait_line(r"^Forwarding (\S+/a/[a-z0-9-]+/) -> ", timeout).group(1)


def start_agent(relay: RelayProc, token: str | None, *args: str, name: str = "agent") -> AgentProc:
    """An agent for ``relay`` (``args``: the target and extra flags), with its URL printed."""
    flags = ["--relay", relay.url]
    if token is not None:
        flags += ["--token", token]
    agent = AgentProc(*args, *flags, name=name)
    try:
        agent.url = agent.wait_url()
    except BaseException:
        agent.stop()
        raise
    return agent


_P = TypeVar("_P", bound=Proc)


class Procs:
    """Every process a test (or module) started; :meth:`stop_all` stops them for sure
    (also when a ``with Procs() as procs:`` block ends, however it ends)."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()

    def add(self, proc: _P) -> _P:
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.alive():
                proc.signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            proc.stop(timeout=5.0)
        self.procs.clear()


class PeakRss:
    """Samples the resident memory of some processes in a thread (every ``interval`` s)
    while the ``with`` block runs; ``peak`` and ``start`` are in bytes, by pid."""

    def __init__(self, *pids: int, interval: float = 0.05) -> None:
        import psutil

        self._procs = {pid: psutil.Process(pid) for pid in pids}
        self.interval = interval
        self.start = {pid: p.memory_info().rss for pid, p in self._procs.items()}
        self.peak = dict(self.start)
        self.samples = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss", daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(5)

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            for pid, proc in self._procs.items():
                try:
                    rss = proc.memory_info().rss
                except Exception:  # the process ended: nothing more to measure
                    continue
                self.peak[pid] = max(self.peak[pid], rss)
            self.samples += 1
