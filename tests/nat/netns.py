"""Network namespaces for tests: names, commands, and code run inside a namespace.

Two ways into a namespace:

* a process: ``ip netns exec NAME argv...`` (see ``procs.NsProcess``), for the relay, the
  agent and the origins, which must be real processes;
* a thread: :meth:`Netns.call` runs a function in a fresh thread that first joins the
  namespace with ``setns(2)``. A network namespace is per thread in Linux, and a socket
  belongs for life to the namespace it was created in, so sockets made by ``call`` (a
  listening server, a client connection, a whole ``asyncio.run`` of an HTTP client) work
  from any thread afterwards. This keeps the test-side clients in the test process, where
  their results and timings are plain Python values.

Every namespace this suite makes is named ``medge-<pid>-<n>-<role>``, so a later run can
tell its own from leftovers of a dead run (see :func:`sweep`).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

T = TypeVar("T")

PREFIX: Final = "medge"
NETNS_DIR: Final = "/run/netns"
CLONE_NEWNET: Final = 0x40000000
#: Longest any one ip/nft/tc/sysctl command may take (they take milliseconds).
COMMAND_TIMEOUT: Final = 30.0
_NAME_RE: Final = re.compile(rf"^{PREFIX}-(\d+)-\d+-[a-z]+$")

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    """A namespace command failed; the message carries the command and its stderr."""


def run(
    argv: Sequence[str], *, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a host command (ip, nft, tc, sysctl) with its output captured."""
    proc = subprocess.run(
        list(argv),
        input=input,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc


class Netns:
    """One network namespace, addressed by name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def add(self) -> Netns:
        """Create the namespace, with its loopback up."""
        run(["ip", "netns", "add", self.name])
        self.ip("link", "set", "lo", "up")
        return self

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], *, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(self.exec_argv(argv), input=input, check=check)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", self.name, *args], check=check)

    def tc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["tc", "-n", self.name, *args], check=check)

    def nft(self, script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Load an nftables script (``nft -f -``) in this namespace."""
        return self.run(["nft", "-f", "-"], input=script, check=check)

    def sysctl(self, key: str, value: str) -> None:
        self.run(["sysctl", "-qw", f"{key}={value}"])

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a new thread inside this namespace; return or raise its result."""
        thread = NsThread(self, fn, *args)
        thread.start()
        value: T = thread.result(timeout=None)
        return value

    def pids(self) -> list[int]:
        out = run(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(p) for p in out.split()]

    def delete(self) -> None:
        """Kill whatever still runs inside, then remove the namespace (idempotent)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        run(["ip", "netns", "delete", self.name], check=False)


def enter(ns_name: str) -> None:
    """Move the calling thread into namespace ``ns_name`` (only this thread)."""
    fd = os.open(os.path.join(NETNS_DIR, ns_name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns({ns_name}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NsThread:
    """A thread that runs one function inside a namespace; :meth:`result` joins it.

    The thread is a daemon: a function that hangs must not keep the test run alive, and
    every caller passes a timeout to :meth:`result` when the function may block.
    """

    def __init__(self, ns: Netns, fn: Callable[..., T], *args: Any) -> None:
        self.ns = ns
        self._fn: Callable[..., Any] = fn
        self._args = args
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"in-{ns.name}", daemon=True)

    def start(self) -> NsThread:
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            enter(self.ns.name)
            self._value = self._fn(*self._args)
        except BaseException as exc:  # handed to the joining thread
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float | None) -> Any:
        """The function's return value; re-raises its exception; TimeoutError if still running."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self._fn!r} in {self.ns.name} still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value


def list_names() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def owner_pid(name: str) -> int | None:
    """The pid of the test run that made namespace ``name``, if it is one of ours."""
    m = _NAME_RE.match(name)
    return int(m.group(1)) if m else None


def _alive(pid: int) -> bool:
    """Whether test run ``pid`` still runs (a reused pid that is not Python counts as gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"python" in f.read()
    except OSError:
        return False


def sweep(*, include_pid: int | None = None) -> list[str]:
    """Remove our namespaces whose run is gone (and those of ``include_pid``).

    Namespaces of other live runs are left alone, so parallel runs do not break each other.
    Returns the names removed.
    """
    removed = []
    for name in list_names():
        pid = owner_pid(name)
        if pid is None or (pid != include_pid and _alive(pid)):
            continue
        Netns(name).delete()
        removed.append(name)
    return removed
