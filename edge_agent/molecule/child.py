"""Supervising the agent process itself (``edge-agent run ... -- CMD ARGS``).

:class:`ChildSupervisor` starts the command with the platform's secrets added to its
environment, lets its stdout/stderr through (inherited file descriptors: nothing is
buffered or re-encoded), restarts it when it fails, and stops it when the run ends.

* Restarts wait ``backoff_initial * 2**(n-1)`` seconds (capped at ``backoff_max``) after
  the n-th consecutive failure, each delay spread by up to ``±backoff_jitter`` of itself
  (so several agents restarted together do not hit the platform in step); a child that
  stayed up ``healthy_after`` seconds starts the count again.
* A crash loop ends: when a failure would need more than ``max_restarts`` restarts
  within ``restart_window`` seconds (default 5 in 10 minutes), :meth:`run` raises
  :class:`~edge_agent.molecule.errors.ChildCrashLoop` carrying the child's last exit
  code. ``max_restarts=None`` restarts forever.
* With ``secrets_refresh`` seconds and a ``refresh`` function, the secrets are pulled
  again on that period; when a value changed (or a key came or went) a running child is
  restarted gracefully with the new environment. Such a restart is planned: it waits
  for no backoff and does not count towards ``max_restarts``. A failed pull is logged
  and the child keeps its environment.
* Stopping sends SIGTERM to the child's process group (so a shell wrapper's children go
  too), waits ``stop_grace`` seconds, then SIGKILL. On Windows the child gets its own
  process group and CTRL_BREAK, then ``TerminateProcess``.
* Secret values are never logged; only their names are.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import IO, Any, Final

from edge_agent.molecule.errors import ChildCrashLoop, ChildStartError, MoleculeError

logger = logging.getLogger(__name__)

#: Seconds a child must run before its failure count starts over.
HEALTHY_AFTER: Final = 30.0
#: Seconds between SIGTERM and SIGKILL when stopping.
STOP_GRACE: Final = 10.0
#: Restarts allowed within :data:`RESTART_WINDOW` before the run gives up.
MAX_RESTARTS: Final = 5
RESTART_WINDOW: Final = 600.0

SecretsSource = Callable[[], Awaitable[Mapping[str, str]]]


class Restart(enum.Enum):
    ON_FAILURE = "on-failure"  # restart after a non-zero exit or a signal
    ALWAYS = "always"  # restart after any exit
    NEVER = "never"


@dataclasses.dataclass(frozen=True, slots=True)
class ChildPolicy:
    restart: Restart = Restart.ON_FAILURE
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    #: Each delay is multiplied by a random factor in ``[1 - jitter, 1 + jitter]``.
    backoff_jitter: float = 0.2
    healthy_after: float = HEALTHY_AFTER
    stop_grace: float = STOP_GRACE
    max_restarts: int | None = MAX_RESTARTS
    restart_window: float = RESTART_WINDOW
    #: Seconds between secret pulls while the child runs; None: pulled once, at start.
    secrets_refresh: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.backoff_initial <= self.backoff_max or self.stop_grace < 0:
            raise ValueError("need 0 < backoff_initial <= backoff_max and stop_grace >= 0")
        if not 0 <= self.backoff_jitter < 1:
            raise ValueError("backoff_jitter must be in [0, 1)")
        if self.max_restarts is not None and self.max_restarts < 0:
            raise ValueError("max_restarts must be >= 0 (or None: no limit)")
        if self.restart_window <= 0:
            raise ValueError("restart_window must be > 0 seconds")
        if self.secrets_refresh is not None and self.secrets_refresh <= 0:
            raise ValueError("secrets_refresh must be > 0 seconds")


class ChildSupervisor:
    """Runs ``argv`` until it exits for good or :meth:`stop` is called.

    Args:
        argv: the command and its arguments (no shell).
        secrets: added to the environment (they win over ``env``); see :meth:`set_secrets`.
        env: the base environment; ``None`` means this process's environment.
        stdout, stderr: where the child writes; ``None`` inherits ours (pass-through).
        refresh: pulls the secrets again (used every ``policy.secrets_refresh`` seconds).
        clock, sleep, uniform: injectable for tests (``sleep`` paces restarts only).
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
        refresh: SecretsSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not argv:
            raise ValueError("no command to run")
        self.argv = list(argv)
        self._secrets: dict[str, str] = {}
        self._base_env = env
        self._cwd = cwd
        self._policy = policy or ChildPolicy()
        self._stdout, self._stderr = stdout, stderr
        self._refresh = refresh
        self._clock, self._sleep, self._uniform = clock, sleep, uniform
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._reload = False  # the running child is being replaced on purpose
        self._stopped = asyncio.Event()
        self._restarts: collections.deque[float] = collections.deque()
        self._started_with: dict[str, str] = {}  # the secrets of the latest start
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
            logger.warning("child_secrets_skipped", extra={"keys": skipped})
        self._secrets = valid

    async def update_secrets(self, secrets: Mapping[str, str]) -> list[str]:
        """Use ``secrets`` from now on; restart a running child gracefully if they changed.

        Returns the names whose value changed, came or went (empty: nothing to do),
        compared with what the running child was started with (so a change that raced
        with a start is not missed), or with the previous secrets when none runs.
        """
        running = self.pid is not None
        before = self._started_with if running else self._secrets
        self.set_secrets(secrets)
        after = self._secrets
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if changed and self.pid is not None and not self._stopping:
            logger.warning("child_secrets_changed", extra={"keys": changed, "action": "restart"})
            self._reload = True
            await self._terminate()
        return changed

    async def run(self) -> int:
        """Start the child and keep it running per the restart policy.

        Returns the exit code of the last run once the policy says not to restart, or
        once :meth:`stop` was called. If cancelled, the child is stopped first.

        Raises:
            ChildStartError: the command cannot be started (checked at each start).
            ChildCrashLoop: it failed more often than ``max_restarts`` allows.
        """
        refresher = self._start_refresher()
        try:
            code = await self._supervise()
        finally:
            if refresher is not None:
                refresher.cancel()
                await asyncio.gather(refresher, return_exceptions=True)
            await self._terminate()
        logger.info("child_exited", extra={"code": code})
        return code

    async def stop(self) -> None:
        """Stop the child (SIGTERM, SIGKILL after the grace period); :meth:`run` returns."""
        self._stopping = True
        self._stopped.set()  # cuts a restart backoff short
        await self._terminate()

    async def _supervise(self) -> int:
        failures, code = 0, 0
        while not self._stopping:
            started = self._clock()
            code = await self._run_once()
            if self._reload and not self._stopping:
                self._reload = False
                continue  # replaced for new secrets: start again at once
            if self._stopping or not self._restarts_after(code):
                break
            healthy = self._clock() - started >= self._policy.healthy_after
            failures = 1 if healthy else failures + 1
            self._count_restart(code)
            await self._wait_before_restart(code, failures)
        return code

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
        self._started_with = dict(self._secrets)
        env.update(self._started_with)
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

    def _count_restart(self, code: int) -> None:
        """Note one more restart; raise ChildCrashLoop when it is over the limit."""
        limit, window = self._policy.max_restarts, self._policy.restart_window
        if limit is None:
            return
        now = self._clock()
        while self._restarts and now - self._restarts[0] > window:
            self._restarts.popleft()
        if len(self._restarts) >= limit:
            logger.error("child_restart_limit", extra={"code": code, "restarts": limit})
            raise ChildCrashLoop(
                f"the command {self.argv[0]!r} keeps failing: it exited with code {code} "
                f"after {limit} restarts within {window:g} s (the restart limit); giving up",
                code=code,
            )
        self._restarts.append(now)

    def _backoff(self, failures: int) -> float:
        policy = self._policy
        delay = min(policy.backoff_initial * 2.0 ** (failures - 1), policy.backoff_max)
        jitter = policy.backoff_jitter
        return delay * (1 + self._uniform(-jitter, jitter)) if jitter else delay

    async def _wait_before_restart(self, code: int, failures: int) -> None:
        delay = self._backoff(failures)
        logger.warning(
            "child_restart_scheduled",
            extra={"code": code, "in_seconds": round(delay, 2), "failures": failures},
        )
        sleeping = asyncio.ensure_future(self._sleep(delay))
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({sleeping, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            stopped.cancel()

    def _start_refresher(self) -> asyncio.Task[None] | None:
        interval = self._policy.secrets_refresh
        if interval is None or self._refresh is None:
            return None
        return asyncio.create_task(self._refresh_loop(self._refresh, interval))

    async def _refresh_loop(self, refresh: SecretsSource, interval: float) -> None:
        # Real time on purpose: the injected sleep paces restarts, and tests shrink it
        # to nothing, which would turn this loop into a busy one.
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                fresh = await refresh()
            except MoleculeError as exc:
                logger.warning("child_secrets_refresh_failed", extra={"error": str(exc)})
                continue
            await self.update_secrets(fresh)

    async def _terminate(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        _signal_group(process, kill=False)
        try:
            await asyncio.wait_for(process.wait(), self._policy.stop_grace)
        except TimeoutError:
            logger.warning(
                "child_killed", extra={"pid": process.pid, "after": self._policy.stop_grace}
            )
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
