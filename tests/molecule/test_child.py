"""ChildSupervisor with real (tiny Python) child processes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from edge_agent.logs import TextFormatter
from edge_agent.molecule.child import ChildPolicy, ChildSupervisor, Restart
from edge_agent.molecule.errors import ChildStartError

SECRET_VALUE = "value-that-must-not-be-logged"
FAST = ChildPolicy(backoff_initial=0.01, backoff_max=0.04, stop_grace=5.0)

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals in the child")


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def counting_script(tmp_path: Path, runs: Path, enough: int, failure: int) -> list[str]:
    """A child that adds an ``x`` to ``runs`` each time it runs, and exits with
    ``failure`` until ``runs`` holds ``enough`` of them, then 0."""
    return script(
        tmp_path,
        f"""
        import sys
        with open({str(runs)!r}, "a") as f:
            f.write("x")
        sys.exit(0 if len(open({str(runs)!r}).read()) >= {enough} else {failure})
        """,
    )


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def contents(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def wait_for_file(path: Path, limit: float = 10.0) -> str:
    """The file's text once the child wrote it (tiny local files: reading them inline)."""
    async with asyncio.timeout(limit):
        while not contents(path):  # noqa: ASYNC110 - a file, not an event
            await asyncio.sleep(0.01)
    return contents(path)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_secrets_reach_the_environment_and_never_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "env.json"
    argv = script(
        tmp_path,
        f"""
        import json, os
        keys = ("API_KEY", "PATH_LIKE", "FROM_BASE")
        open({str(out)!r}, "w").write(json.dumps({{k: os.environ.get(k) for k in keys}}))
        """,
    )
    secrets = {"API_KEY": SECRET_VALUE, "PATH_LIKE": "a=b", "BAD=NAME": "x", "": "y"}
    env = {**os.environ, "FROM_BASE": "base", "API_KEY": "overridden"}
    with caplog.at_level(logging.DEBUG):
        child = ChildSupervisor(argv, secrets=secrets, env=env, policy=FAST)
        assert await asyncio.wait_for(child.run(), 20) == 0
    seen = json.loads(out.read_text())
    assert seen == {"API_KEY": SECRET_VALUE, "PATH_LIKE": "a=b", "FROM_BASE": "base"}
    logged = "\n".join(TextFormatter().format(record) for record in caplog.records)
    assert SECRET_VALUE not in logged
    assert "API_KEY" in logged and "BAD=NAME" in logged  # names only
    assert child.starts == 1


async def test_crashes_are_restarted_with_growing_backoff(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    argv = counting_script(tmp_path, runs, enough=4, failure=3)
    sleeps = Sleeps()
    policy = ChildPolicy(backoff_initial=1, backoff_max=2.5)
    child = ChildSupervisor(argv, policy=policy, sleep=sleeps)
    assert await asyncio.wait_for(child.run(), 30) == 0
    assert runs.read_text() == "xxxx" and child.starts == 4
    assert sleeps.delays == [1, 2, 2.5]  # capped


async def test_a_child_that_stayed_up_starts_the_backoff_over(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    argv = counting_script(tmp_path, runs, enough=3, failure=1)
    sleeps = Sleeps()
    ticks = iter(range(0, 10_000, 100))  # every run "lasts" 100 s
    policy = ChildPolicy(backoff_initial=1, healthy_after=50)
    child = ChildSupervisor(argv, policy=policy, sleep=sleeps, clock=lambda: next(ticks))
    assert await asyncio.wait_for(child.run(), 30) == 0
    assert sleeps.delays == [1, 1]


@pytest.mark.parametrize(
    ("restart", "code", "starts"), [(Restart.NEVER, 5, 1), (Restart.ON_FAILURE, 0, 1)]
)
async def test_policies_that_do_not_restart(
    tmp_path: Path, restart: Restart, code: int, starts: int
) -> None:
    argv = script(tmp_path, f"import sys; sys.exit({code})")
    child = ChildSupervisor(argv, policy=ChildPolicy(restart=restart))
    assert await asyncio.wait_for(child.run(), 20) == code
    assert child.starts == starts


async def test_always_restarts_even_clean_exits(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    argv = script(tmp_path, f"open({str(runs)!r}, 'a').write('x')")
    sleeps = Sleeps()
    child = ChildSupervisor(argv, policy=ChildPolicy(restart=Restart.ALWAYS), sleep=sleeps)
    task = asyncio.create_task(child.run())
    async with asyncio.timeout(20):
        while child.starts < 3:  # noqa: ASYNC110 - counting real process starts
            await asyncio.sleep(0.01)
    await child.stop()
    await asyncio.wait_for(task, 10)
    assert len(runs.read_text()) >= 2 and all(d > 0 for d in sleeps.delays)


async def test_cancelling_run_stops_the_child(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    argv = script(
        tmp_path,
        f"""
        import os, time
        open({str(ready)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
        """,
    )
    child = ChildSupervisor(argv, policy=FAST)
    task = asyncio.create_task(child.run())
    pid = int(await wait_for_file(ready))
    assert child.pid == pid and not gone(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert gone(pid)


@posix_only
async def test_stop_kills_a_child_that_ignores_sigterm_and_its_group(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    argv = script(
        tmp_path,
        f"""
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(ready)!r}, "w").write(f"{{os.getpid()}} {{grandchild.pid}}")
        time.sleep(60)
        """,
    )
    child = ChildSupervisor(argv, policy=ChildPolicy(stop_grace=0.5))
    task = asyncio.create_task(child.run())
    pid, grandchild = map(int, (await wait_for_file(ready)).split())
    try:
        await asyncio.wait_for(child.stop(), 10)
        assert await asyncio.wait_for(task, 10) == -9  # SIGKILL after the grace period
        async with asyncio.timeout(10):
            while not gone(grandchild):  # noqa: ASYNC110 - an external process
                await asyncio.sleep(0.01)
        assert gone(pid)
    finally:
        for leftover in (pid, grandchild):
            if not gone(leftover):
                psutil.Process(leftover).kill()


async def test_unknown_command_is_a_start_error(tmp_path: Path) -> None:
    child = ChildSupervisor([str(tmp_path / "no-such-command")], policy=FAST)
    with pytest.raises(ChildStartError, match="cannot start"):
        await child.run()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ChildSupervisor([])
    with pytest.raises(ValueError):
        ChildPolicy(backoff_initial=0)


async def test_stop_during_the_restart_backoff_returns_at_once(tmp_path: Path) -> None:
    argv = script(tmp_path, "import sys; sys.exit(1)")
    child = ChildSupervisor(argv, policy=ChildPolicy(backoff_initial=30, backoff_max=30))
    task = asyncio.create_task(child.run())
    async with asyncio.timeout(20):
        while child.starts < 1 or child.pid is not None:  # noqa: ASYNC110 - a real process
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # now in the 30 s backoff
    await child.stop()
    assert await asyncio.wait_for(task, 5) == 1 and child.starts == 1
