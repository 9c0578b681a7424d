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

from edge_agent.molecule.child import ChildPolicy, ChildSupervisor, Restart
from edge_agent.molecule.errors import ChildCrashLoop, ChildStartError, PlatformUnavailable
from tunnel.logs import TextFormatter

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
    policy = ChildPolicy(backoff_initial=1, backoff_max=2.5, backoff_jitter=0)
    child = ChildSupervisor(argv, policy=policy, sleep=sleeps)
    assert await asyncio.wait_for(child.run(), 30) == 0
    assert runs.read_text() == "xxxx" and child.starts == 4
    assert sleeps.delays == [1, 2, 2.5]  # capped


async def test_backoff_delays_carry_jitter(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    argv = counting_script(tmp_path, runs, enough=3, failure=1)
    sleeps, asked = Sleeps(), []

    def uniform(low: float, high: float) -> float:
        asked.append((low, high))
        return high if len(asked) % 2 else low

    policy = ChildPolicy(backoff_initial=1, backoff_max=60, backoff_jitter=0.25)
    child = ChildSupervisor(argv, policy=policy, sleep=sleeps, uniform=uniform)
    assert await asyncio.wait_for(child.run(), 30) == 0
    assert asked == [(-0.25, 0.25)] * 2
    assert sleeps.delays == [1.25, 1.5]  # 1 * (1 + 0.25), 2 * (1 - 0.25)


async def test_a_crash_loop_ends_with_the_childs_code(tmp_path: Path) -> None:
    argv = script(tmp_path, "import sys; sys.exit(3)")
    sleeps = Sleeps()
    child = ChildSupervisor(argv, policy=ChildPolicy(max_restarts=2), sleep=sleeps)
    with pytest.raises(ChildCrashLoop) as info:
        await asyncio.wait_for(child.run(), 30)
    assert (info.value.code, info.value.exit_status) == (3, 3)
    assert child.starts == 3 and len(sleeps.delays) == 2  # two restarts, then it gave up
    assert "exited with code 3 after 2 restarts within 600 s" in str(info.value)
    assert child.pid is None


@posix_only
async def test_a_crash_loop_by_signal_reports_the_shell_status(tmp_path: Path) -> None:
    argv = script(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    child = ChildSupervisor(argv, policy=ChildPolicy(max_restarts=0), sleep=Sleeps())
    with pytest.raises(ChildCrashLoop) as info:
        await asyncio.wait_for(child.run(), 30)
    assert (info.value.code, info.value.exit_status) == (-9, 137)
    assert child.starts == 1


async def test_restarts_older_than_the_window_do_not_count(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    argv = counting_script(tmp_path, runs, enough=5, failure=1)
    ticks = iter(range(0, 100_000, 700))  # every clock reading is 700 s later
    policy = ChildPolicy(max_restarts=1, restart_window=600)
    child = ChildSupervisor(argv, policy=policy, sleep=Sleeps(), clock=lambda: next(ticks))
    assert await asyncio.wait_for(child.run(), 30) == 0
    assert child.starts == 5


async def test_no_limit_restarts_forever(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    argv = counting_script(tmp_path, runs, enough=8, failure=1)
    child = ChildSupervisor(argv, policy=ChildPolicy(max_restarts=None), sleep=Sleeps())
    assert await asyncio.wait_for(child.run(), 30) == 0
    assert child.starts == 8


async def test_a_child_that_stayed_up_starts_the_backoff_over(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    argv = counting_script(tmp_path, runs, enough=3, failure=1)
    sleeps = Sleeps()
    ticks = iter(range(0, 10_000, 100))  # every run "lasts" 100 s
    policy = ChildPolicy(backoff_initial=1, healthy_after=50, backoff_jitter=0)
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


def env_logging_script(tmp_path: Path, log: Path) -> list[str]:
    """A child that appends ``<pid> <API_KEY>`` to ``log`` at start and on SIGTERM
    ``<pid> TERM``, then exits 0 (a graceful stop); otherwise it stays up."""
    return script(
        tmp_path,
        f"""
        import os, signal, sys, time
        def note(text):
            with open({str(log)!r}, "a") as f:
                f.write(f"{{os.getpid()}} {{text}}\\n")
        def on_term(*_):
            note("TERM")
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        note(os.environ.get("API_KEY", "-"))
        time.sleep(60)
        """,
    )


async def wait_lines(path: Path, count: int, limit: float = 20.0) -> list[str]:
    async with asyncio.timeout(limit):
        while len(contents(path).splitlines()) < count:  # noqa: ASYNC110 - a file
            await asyncio.sleep(0.01)
    return contents(path).splitlines()


class Source:
    """The platform's secrets as the refresher sees them; counts the pulls."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.pulls = 0
        self.fail = False

    async def __call__(self) -> dict[str, str]:
        self.pulls += 1
        if self.fail:
            raise PlatformUnavailable("secrets: HTTP 503")
        return dict(self.values)


@posix_only
async def test_a_changed_secret_restarts_the_child_gracefully(tmp_path: Path) -> None:
    log = tmp_path / "log"
    source = Source({"API_KEY": "old"})
    # max_restarts=0: a planned restart for new secrets is not a crash restart.
    policy = ChildPolicy(secrets_refresh=0.05, max_restarts=0, stop_grace=5.0)
    child = ChildSupervisor(
        env_logging_script(tmp_path, log), secrets=source.values, policy=policy, refresh=source
    )
    task = asyncio.create_task(child.run())
    try:
        first_pid = (await wait_lines(log, 1))[0].split()[0]
        source.values = {"API_KEY": "new", "ADDED": "x"}
        lines = await wait_lines(log, 3)
        assert lines == [f"{first_pid} old", f"{first_pid} TERM", lines[2]]
        assert lines[2].endswith(" new") and not lines[2].startswith(first_pid)
        assert child.starts == 2 and not task.done()
    finally:
        await child.stop()
    assert await asyncio.wait_for(task, 10) == 0


@posix_only
async def test_unchanged_or_unavailable_secrets_leave_the_child_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "log"
    source = Source({"API_KEY": "same"})
    policy = ChildPolicy(secrets_refresh=0.02)
    child = ChildSupervisor(
        env_logging_script(tmp_path, log), secrets=source.values, policy=policy, refresh=source
    )
    task = asyncio.create_task(child.run())
    try:
        await wait_lines(log, 1)
        async with asyncio.timeout(10):
            while source.pulls < 5:  # noqa: ASYNC110 - counting refresher pulls
                await asyncio.sleep(0.01)
        source.fail = True
        with caplog.at_level(logging.WARNING):
            pulls = source.pulls
            async with asyncio.timeout(10):
                while source.pulls < pulls + 3:  # noqa: ASYNC110 - counting pulls
                    await asyncio.sleep(0.01)
        assert child.starts == 1 and len(contents(log).splitlines()) == 1
        assert "child_secrets_refresh_failed" in caplog.text
    finally:
        await child.stop()
    await asyncio.wait_for(task, 10)


async def test_update_secrets_names_what_changed_never_the_values(tmp_path: Path) -> None:
    child = ChildSupervisor(["true"], secrets={"A": "1", "B": "2"})
    assert await child.update_secrets({"A": "1", "B": "2"}) == []
    assert await child.update_secrets({"A": "one", "C": "3"}) == ["A", "B", "C"]


@posix_only
async def test_a_change_is_judged_against_what_the_running_child_got(tmp_path: Path) -> None:
    log = tmp_path / "log"
    child = ChildSupervisor(
        env_logging_script(tmp_path, log), secrets={"API_KEY": "old"}, policy=FAST
    )
    task = asyncio.create_task(child.run())
    try:
        await wait_lines(log, 1)
        child.set_secrets({"API_KEY": "new"})  # as if a pull landed during the start
        assert await child.update_secrets({"API_KEY": "new"}) == ["API_KEY"]
        lines = await wait_lines(log, 3)
        assert lines[1].endswith(" TERM") and lines[2].endswith(" new")
    finally:
        await child.stop()
    await asyncio.wait_for(task, 10)
