"""The live status screen on a real terminal: ``edge-agent http`` inside a tmux pane.

A real relay (open mode) and the e2e origin run here; the agent runs in a detached
tmux session's shell, so its stdout is a terminal. ``tmux capture-pane -p`` reads what
the pane shows: the URL, "online", the requests and counts; with a request in flight,
C-c shows "draining"; then the drain note, the state "stopped" and the shell's prompt
again (the agent exited and left the cursor below its screen).
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.origin import Origin
from tests.e2e.procs import BIN, ROOT, Procs, RelayProc
from tests.support.apt import apt

PROMPT = "READY$ "


def _tmux() -> str:
    """The tmux binary, installed with apt-get when missing (CI: root, clean machine)."""
    found = shutil.which("tmux")
    if found:
        return found
    why = apt("update") or apt("install", "-y", "--no-install-recommends", "tmux")
    found = shutil.which("tmux")
    if found is None:
        pytest.skip(f"tmux is missing and could not be installed: {why or 'not on PATH'}")
    return found


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """A detached tmux session (its own server socket) running a plain shell; yields
    ``tmux(*args)``."""
    tmux = _tmux()
    socket = str(tmp_path / "tmux.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "TMUX"))}
    env |= {"PS1": PROMPT, "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}

    def run(*args: str) -> str:
        done = subprocess.run(
            [tmux, "-S", socket, *args], capture_output=True, text=True, env=env, timeout=10
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run(
        "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "120", "-y", "40",
        "env", f"PS1={PROMPT}", "sh", "-i",
    )  # fmt: skip
    try:
        yield run
    finally:
        subprocess.run([tmux, "-S", socket, "kill-server"], capture_output=True, timeout=10)


def _wait_screen(tmux: Callable[..., str], check: Callable[[str], bool], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    shown = ""
    while time.monotonic() < deadline:
        shown = tmux("capture-pane", "-p", "-t", "t")
        if check(shown):
            return shown
        time.sleep(0.1)
    raise AssertionError(f"the pane never showed what was expected; it shows:\n{shown}")


def test_live_screen_in_tmux(
    pane: Callable[..., str], origin: Origin, procs: Procs, tmp_path: Path
) -> None:
    relay = procs.add(RelayProc(tmp_path / "relay", "--open", name="relay-open"))
    agent = [
        str(BIN / "edge-agent"), "http", str(origin.port), "--relay", relay.url,
        "--name", "demo", "--ping-interval", "1", "--no-inspect",
    ]  # fmt: skip
    pane("send-keys", "-t", "t", f"cd {shlex.quote(str(ROOT))} && {shlex.join(agent)}", "Enter")
    shown = _wait_screen(pane, lambda s: re.search(r"Latency +[\d.]+ ms", s) is not None, 15)
    url = re.search(r"Forwarding\s+(\S+/a/demo/) -> http://127\.0\.0\.1:" + str(origin.port), shown)
    assert url is not None, shown
    assert re.search(r"Session Status\s+online", shown), shown

    with httpx.Client(timeout=10) as http:
        for n in range(3):
            assert http.get(url.group(1) + f"echo?n={n}").status_code == 200
        assert http.get(url.group(1) + "nothing").status_code == 404
    shown = _wait_screen(pane, lambda s: "4 req/min" in s and "/nothing" in s, 5)
    assert re.search(r"GET\s+/echo\?n=2\s+200\s+[\d.]+ ms", shown), shown
    assert re.search(r"open 0\s+4 req/min\s+p50 [\d.]+ ms\s+p90 [\d.]+ ms", shown), shown
    assert re.search(r"Latency\s+[\d.]+ ms", shown), shown  # pings every second: a round trip
    # Newest first, and the screen was redrawn in place: one status line, not one a redraw.
    assert re.search(r"GET\s+/nothing\s+404\s+[\d.]+ ms", shown), shown
    assert shown.index("/nothing") < shown.index("/echo?n=2") < shown.index("/echo?n=0")
    assert shown.count("Session Status") == 1, shown

    pane("resize-window", "-t", "t", "-x", "40", "-y", "30")  # narrower: cut, not wrapped
    shown = _wait_screen(pane, lambda s: "Forwarding        http://127.0.0" in s, 5)
    assert shown.count("Session Status") == 1, shown
    assert max(len(line) for line in shown.splitlines()) <= 40, shown
    assert "/a/demo/" not in shown  # the URL's end is cut off, not wrapped onto a new line

    pane("resize-window", "-t", "t", "-x", "120", "-y", "40")  # and back: whole lines again
    _wait_screen(pane, lambda s: "/a/demo/ -> " in s, 5)

    # A request in flight: the screen counts it, and C-c drains while it finishes.
    key = f"screen-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.get, url.group(1) + f"slow?key={key}", timeout=10)
        _wait_screen(pane, lambda s: "open 1 " in s, 5)
        pane("send-keys", "-t", "t", "C-c")
        _wait_screen(pane, lambda s: re.search(r"Session Status\s+draining", s) is not None, 5)
        origin.release(key)
        assert slow.result().status_code == 200
    shown = _wait_screen(pane, lambda s: s.rstrip().endswith(PROMPT.rstrip()), 10)
    assert re.search(rf"GET\s+/slow\?key={key}\s+200\s+[\d.]+ ms", shown), shown
    assert "Draining: finishing requests in flight" in shown, shown
    assert re.search(r"Session Status\s+stopped", shown), shown
    assert shown.count("Session Status") == 1, shown
    assert "\x1b" not in shown
