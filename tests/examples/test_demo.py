"""``scripts/demo`` run as a user runs it: a subprocess whose output is read line by
line as it arrives. Every process the demo starts inherits a marker variable from the
test's environment, so the test can see them while the demo runs and prove none is
left once it exited, whichever way it ended (success, a failing step, Ctrl-C).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo"
#: Inherited by every process of the demo (not EDGE_*: the demo strips those).
MARK = "MOLECULE_EDGE_DEMO_TEST_RUN"
#: Seconds a whole demo may take here: about 10 on an idle machine, much more when the
#: machine is busy (every process imports a2a-sdk or uvicorn cold).
RUN_TIMEOUT = 120.0
#: What each demo run starts (matched against command lines).
PROGRAMS = ("edge-devplatform", "edge-relay", "edge-agent", "examples.a2a_agent")


class DemoRun:
    """``scripts/demo ARGS`` with its state under ``tmp``; stdout lines are kept with
    the time they arrived, and the processes that carry its marker are noted."""

    def __init__(self, tmp: Path, *args: str, **env: str) -> None:
        self.mark = uuid.uuid4().hex
        self.began = time.monotonic()
        self.elapsed = 0.0
        self.code: int | None = None
        base = {k: v for k, v in os.environ.items() if k != "EDGE_DEMO_FAIL_AT"}
        full = base | {MARK: self.mark, "TMPDIR": str(tmp)} | env
        self.popen = subprocess.Popen(
            [str(DEMO), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full,
            cwd=ROOT,
            start_new_session=True,  # so the test can send it Ctrl-C alone
        )
        self.lines: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self.seen: dict[int, str] = {}  # pid -> command line, of marked processes
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._sample, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.errors.append(line.rstrip("\n"))

    def _sample(self) -> None:
        """Note the demo's marked descendants (the check of leftovers is meaningful
        only if it can see them)."""
        while self.popen.poll() is None:
            try:
                procs = psutil.Process(self.popen.pid).children(recursive=True)
            except psutil.Error:
                return
            for proc in procs:
                try:
                    if proc.environ().get(MARK) == self.mark:
                        self.seen[proc.pid] = " ".join(proc.cmdline())
                except psutil.Error:  # gone, or a zombie
                    continue
            time.sleep(0.2)

    @property
    def out(self) -> str:
        return "\n".join(line for _, line in self.lines)

    @property
    def err(self) -> str:
        return "\n".join(self.errors)

    def wait_line(self, pattern: str, timeout: float = RUN_TIMEOUT) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, line in list(self.lines):
                if match := regex.search(line):
                    return match
            if self.popen.poll() is not None and not self._threads[0].is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line {pattern!r}:\n{self.out}\n{self.err}")

    def finish(self, timeout: float = RUN_TIMEOUT) -> int:
        code = self.popen.wait(timeout)
        self.elapsed = time.monotonic() - self.began
        for thread in self._threads:
            thread.join(10)
        print(self.out, self.err, sep="\n")  # shown by pytest when a test fails
        return code

    def started(self) -> set[str]:
        """The programs of :data:`PROGRAMS` seen running as the demo's descendants."""
        return {p for p in PROGRAMS for cmd in self.seen.values() if p in cmd}

    def leftovers(self) -> list[psutil.Process]:
        """Every process on this machine that still carries this run's marker."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get(MARK) == self.mark:
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def kill(self) -> None:
        """Clean-up for a failed test: the demo's group and everything it marked."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)
        for proc in self.leftovers():
            proc.kill()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[type[DemoRun]]:
    """``demo(tmp, *args, **env)`` starts a run; every run is killed at the end."""
    runs: list[DemoRun] = []

    class Tracked(DemoRun):
        def __init__(self, tmp: Path, *args: str, **env: str) -> None:
            super().__init__(tmp, *args, **env)
            runs.append(self)

    try:
        yield Tracked
    finally:
        for run in runs:
            run.kill()


@pytest.fixture(scope="module")
def success(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """One plain ``scripts/demo``, finished (two tests read it)."""
    run = DemoRun(tmp_path_factory.mktemp("demo"))
    try:
        run.code = run.finish()
        print(f"scripts/demo took {run.elapsed:.1f} s")
        yield run
    finally:
        run.kill()


def assert_nothing_left(run: DemoRun) -> None:
    assert run.started() == set(PROGRAMS), run.seen  # so the check below could fail
    assert run.leftovers() == []


def test_demo_end_to_end(success: DemoRun) -> None:
    assert success.code == 0
    out = success.out
    assert re.search(r"^platform  http://127\.0\.0\.1:\d+ ", out, re.M)
    assert re.search(r"^relay     http://localhost:\d+ ", out, re.M)
    public = re.search(r"^public    (http://localhost:\d+/a/[0-9a-f-]{36}/) ", out, re.M)
    assert public, out
    assert f"straight to the public URL: POST {public.group(1)}" in out
    assert "reply      HELLO THROUGH THE PLATFORM | secrets: DEMO_SECRET" in out
    assert "secret     DEMO_SECRET: set on the platform" in out
    assert "demo ok in" in out and "stopped every process" in out
    assert success.err == ""
    assert_nothing_left(success)
    assert success.elapsed < RUN_TIMEOUT


def test_demo_prints_stream_events_as_they_arrive(success: DemoRun) -> None:
    assert success.code == 0
    artifacts = [(at, line) for at, line in success.lines if " artifact  [" in line]
    texts = [line.split("  artifact  ")[1] for _, line in artifacts]
    assert texts == [f"[{i}/5] HELLO THROUGH THE RELAY" for i in range(1, 6)]
    events = [line for _, line in success.lines if re.match(r"  \+\d+\.\d\d s  ", line)]
    assert [line.split()[2] for line in events] == ["task", "status", *["artifact"] * 5, "status"]
    assert "status    working" in events[1] and events[-1].endswith("status    completed")
    # Produced 0.3 s apart (1.2 s from first to last): printed as they came, not at
    # the end. Half of that is a wide margin for a busy machine.
    assert artifacts[-1][0] - artifacts[0][0] >= 0.6
    stamps = [float(line.split()[0][1:]) for _, line in artifacts]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 0.6


def test_failing_step_is_named_and_nothing_is_left(demo: type[DemoRun], tmp_path: Path) -> None:
    run = demo(tmp_path, EDGE_DEMO_FAIL_AT="stream")  # everything is up by then
    assert run.finish() == 1
    assert 'demo failed at step "stream": made to fail by EDGE_DEMO_FAIL_AT=stream' in run.err
    assert re.search(r"last lines of \S+/agent\.log:", run.err)
    assert "Uvicorn running on" in run.err  # the log's tail is shown
    assert "demo ok" not in run.out and "stopped every process" in run.out
    assert_nothing_left(run)


def test_busy_port_fails_at_relay(demo: type[DemoRun], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        run = demo(tmp_path, "--relay-port", str(busy.getsockname()[1]))
        assert run.finish() == 1
    assert 'demo failed at step "relay": relay exited with code' in run.err
    assert "address already in use" in run.err
    assert "platform  http://127.0.0.1:" in run.out  # started, and stopped again
    assert run.leftovers() == []


def test_ctrl_c_while_starting_stops_everything(demo: type[DemoRun], tmp_path: Path) -> None:
    run = demo(tmp_path)
    run.wait_line(r"^workspace ")  # platform and relay run, the agent is starting
    run.popen.send_signal(signal.SIGINT)
    assert run.finish() == 130
    assert re.search(r'demo interrupted at step "(relay-token|agent|register|example)"', run.err)
    assert "stopped every process" in run.out
    assert {"edge-devplatform", "edge-relay"} <= run.started()
    assert run.leftovers() == []


def curl_commands(out: str) -> list[str]:
    """The curl commands ``--keep`` printed, continuation lines joined."""
    text = out.split("Everything stays up until Ctrl-C.")[1]
    return [
        cmd.replace("\\\n    ", "").strip()
        for cmd in re.findall(r"^  curl .*?(?=^  curl |\Z)", text, re.M | re.S)
    ]


def test_keep_serves_the_printed_curl_commands_until_ctrl_c(
    demo: type[DemoRun], tmp_path: Path
) -> None:
    run = demo(tmp_path, "--keep")
    run.wait_line(r"^Everything stays up until Ctrl-C")
    run.wait_line(r"-d '\{\"method\":\"message/send\"")  # the last line of the help
    direct, streamed, proxied = curl_commands(run.out)
    assert "A2A-Version: 1.0" in direct and "/a/" in direct and "/workspaces/" in proxied
    answers = [
        subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30).stdout
        for cmd in (direct, streamed, proxied, direct)
    ]
    assert '"parts":[{"text":"HI"},{"text":"secrets: DEMO_SECRET"}]' in answers[0]
    assert answers[1].count("data: ") == 8 and "TASK_STATE_COMPLETED" in answers[1]
    assert '"kind":"text","text":"HI"' in answers[2]
    assert answers[3] != answers[0]  # a new messageId: answered, not replayed
    assert run.popen.poll() is None  # still up
    run.popen.send_signal(signal.SIGINT)
    assert run.finish() == 0
    assert "stopped every process" in run.out
    assert_nothing_left(run)
