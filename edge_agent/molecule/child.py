"""Supervising the agent process itself (``edge-agent run ... -- CMD ARGS``).

:class:`ChildSupervisor` starts the command with the platform's secrets added to its
environment, lets its stdout/stderr through (inherited file descriptors: nothing is
buffered or re-encoded), restarts it when it fails, and stops it when the run ends.

* Restarts wait ``backoff_initial * 2**(n-1)`` seconds (capped at ``backoff_max``) after
  the n-th consecutive failure; a child that stayed up ``healthy_after`` seconds starts
  the count again. A crash loop therefore settles at one start a minute, never a hot loop.
* Stopping sends SIGTERM to the child's process group (so a shell wrapper's children go
  too), waits ``stop_grace`` seconds, then SIGKILL. On Windows the child gets its own
  process group and CTRL_BREAK, then ``TerminateProcess``.
* Secret values are never logged; only their names are.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import IO, Any, Final

from edge_agent.molecule.errors import ChildStartError

logger = logging.getLogger(__name__)

#: Seconds a child must run before its failure count starts over.
HEALTHY_AFTER: Final = 30.0
#: Seconds between SIGTERM and SIGKILL when stopping.
STOP_GRACE: Final = 10.0


class Restart(enum.Enum):
    ON_FAILURE = "on-failure"  # restart after a non-zero exit or a signal
    ALWAYS = "always"  # restart after any exit
    NEVER = "never"


@dataclasses.dataclass(frozen=True, slots=True)
class ChildPolicy:
    restart: Restart = Restart.ON_FAILURE
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    healthy_after: float = HEALTHY_AFTER
    stop_grace: float = STOP_GRACE

    def __post_init__(self) -> None:
        if not 0 < self.backoff_initial <= self.backoff_max or self.stop_grace < 0:
            raise ValueError("need 0 < backoff_initial <= backoff_max and stop_grace >= 0")


class ChildSupervisor:
    """Runs ``argv`` until it exits for good or :meth:`stop` is called.

    Args:
        argv: the command and its arguments (no shell).
        secrets: added to the environment (they win over ``env``); see :meth:`set_secrets`.
        env: the base environment; ``None`` means this process's environment.
        stdout, stderr: where the child writes; ``None`` inherits ours (pass-through).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        secrets: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        policy: ChildPolicy | None = None,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not argv:
            raise ValueError("no command to run")
        self.argv = list(argv)
        self._secrets: dict[str, str] = {}
        self._base_env = env
        self._cwd = cwd
        self._policy = policy or ChildPolicy()
        self._stdout, self._stderr = stdout, stderr
        self._clock, self._sleep = clock, sleep
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self.starts = 0
        self.set_secrets(secrets or {})

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def set_secrets(self, secrets: Mapping[str, str]) -> None:
        """Secrets for the next start (a running child keeps its environment)."""
        valid = {k: v for k, v in secrets.items() if _valid_env(k, v)}
        skipped = sorted(set(secrets) - set(valid))
        if skipped:
            logger.warning("child_secrets_skipped keys=%s (not usable as variables)", skipped)
        self._secrets = valid

    async def run(self) -> int:
        """Start the child and keep it running per the restart policy.

        Returns the exit code of the last run once the policy says not to restart, or
        once :meth:`stop` was called. If cancelled, the child is stopped first.

        Raises:
            ChildStartError: the command cannot be started (checked at each start).
        """
        failures, code = 0, 0
        try:
            while not self._stopping:
                started = self._clock()
                code = await self._run_once()
                if self._stopping or not self._restarts_after(code):
                    break
                healthy = self._clock() - started >= self._policy.healthy_after
                failures = 1 if healthy else failures + 1
                await self._wait_before_restart(code, failures)
        finally:
            await self._terminate()
        logger.info("child_exited", extra={"code": code})
        return code

    async def stop(self) -> None:
        """Stop the child (SIGTERM, SIGKILL after the grace period); :meth:`run` returns."""
        self._stopping = True
        self._stopped.set()  # cuts a restart backoff short
        await self._terminate()

    async def _run_once(self) -> int:
        self._process = await self._spawn()
        self.starts += 1
        if self._stopping:  # stop() ran while we were starting it
            await self._terminate()
        logger.info(
            "child_started", extra={"pid": self._process.pid, "secrets": sorted(self._secrets)}
        )
        return await self._process.wait()

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = dict(os.environ if self._base_env is None else self._base_env)
        env.update(self._secrets)
        try:
            return await asyncio.create_subprocess_exec(
                *self.argv,
                env=env,
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=self._stderr,
                **_group_kwargs(),
            )
        except OSError as exc:
            raise ChildStartError(f"cannot start {self.argv[0]!r}: {exc.strerror}") from exc

    def _restarts_after(self, code: int) -> bool:
        restart = self._policy.restart
        return restart is Restart.ALWAYS or (restart is Restart.ON_FAILURE and code != 0)

    async def _wait_before_restart(self, code: int, failures: int) -> None:
        policy = self._policy
        delay = min(policy.backoff_initial * 2 ** (failures - 1), policy.backoff_max)
        logger.warning(
            "child_restart_scheduled",
            extra={"code": code, "in_seconds": round(delay, 1), "failures": failures},
        )
        sleeping = asyncio.ensure_future(self._sleep(delay))
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({sleeping, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            stopped.cancel()

    async def _terminate(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        _signal_group(process, kill=False)
        try:
            await asyncio.wait_for(process.wait(), self._policy.stop_grace)
        except TimeoutError:
            logger.warning("child_killed pid=%d after %.1fs", process.pid, self._policy.stop_grace)
            _signal_group(process, kill=True)
            await process.wait()


def _valid_env(name: str, value: str) -> bool:
    return bool(name) and "=" not in name and "\0" not in name and "\0" not in value


def _group_kwargs() -> dict[str, Any]:
    """Start the child as the leader of its own process group."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _signal_group(process: asyncio.subprocess.Process, *, kill: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if sys.platform == "win32":
            if kill:
                process.kill()
            else:
                process.send_signal(signal.CTRL_BREAK_EVENT)
            return
        try:
            os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except PermissionError:  # the group is gone and its id reused: signal the child only
            if kill:
                process.kill()
            else:
                process.terminate()
