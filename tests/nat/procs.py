"""Real processes inside namespaces: output kept in a file, stopped for sure.

A process is started as ``ip netns exec NS argv...`` in a session of its own
(``ip netns exec`` execs the command, so the pid is the program's and its process group
holds everything it starts). Its stdout and stderr go to ``<log_dir>/<name>.log``, which
:meth:`NsProcess.output` reads back for assertions and failure reports.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from tests.nat.netns import Netns

#: How long a process may take to exit after SIGTERM before it gets SIGKILL.
STOP_GRACE: Final = 5.0
#: Poll interval while waiting for a port or an output line.
POLL: Final = 0.1


class ProcessFailed(RuntimeError):
    """A process exited or did not become ready; the message ends with its output."""


class NsProcess:
    def __init__(
        self,
        ns: Netns,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.ns = ns
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                ns.exec_argv(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )

    def __repr__(self) -> str:
        return f"NsProcess({self.name!r} in {self.ns.name}, pid {self.popen.pid})"

    def output(self, tail: int = 200) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-tail:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def _failed(self, what: str) -> ProcessFailed:
        return ProcessFailed(f"{self.name} {what}:\n{self.output()}")

    def wait_port(self, host: str, port: int, timeout: float = 30.0) -> None:
        """Wait until ``host:port`` accepts a TCP connection made from inside the namespace."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise self._failed(f"exited with {self.popen.returncode} before listening")
            if self.ns.call(_accepts, host, port):
                return
            time.sleep(POLL)
        raise self._failed(f"did not listen on {host}:{port} within {timeout} s")

    def wait_output(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Wait for a line of output matching ``pattern`` (searched from the start)."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            if m := regex.search(self.output(tail=100_000)):
                return m
            if not self.alive():
                raise self._failed(f"exited with {self.popen.returncode} before {pattern!r}")
            if time.monotonic() > deadline:
                raise self._failed(f"printed no {pattern!r} within {timeout} s")
            time.sleep(POLL)

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self) -> int:
        """SIGTERM the process group, SIGKILL it after ``STOP_GRACE``; return the exit code."""
        try:
            if self.alive():
                os.killpg(self.popen.pid, signal.SIGTERM)
                try:
                    self.popen.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    pass
            # Children that ignored SIGTERM (or outlived their parent) go too.
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.popen.wait(STOP_GRACE)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False
