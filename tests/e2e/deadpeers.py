"""Dead peers for the keepalive tests: a frozen agent and a frozen relay (SIGSTOP).

A frozen process keeps its sockets open but answers nothing, like a laptop that went to
sleep or a VM that hung: only WebSocket pings (every 20 s, 20 s to answer) can tell.
Noticing takes up to about 40 s, so the suite freezes both peers as early as possible
(see ``conftest.py``), and a watcher thread acts the moment each drop shows in the logs:
it asks the relay for the frozen agent's URL (the answer must be 503 while the agent is
still frozen) and then thaws the peer (SIGCONT), so both are back long before the tests,
which run last, look at what it recorded.
"""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final

from tests.e2e.procs import AgentProc, Procs, RelayProc, issue_token, start_agent

#: How long the watcher waits for the drops before it gives up (the tests then fail).
WATCH_FOR: Final = 90.0

RELAY_DROPPED: Final = r"agent_disconnected agent=sleepy"
AGENT_DROPPED: Final = r"tunnel_disconnected"


class DeadPeers:
    """``relay`` holds a session of the frozen ``sleepy`` agent; ``watcher`` is an agent
    whose relay, ``frozen_relay``, is frozen. ``*_stopped``: when SIGSTOP was sent."""

    def __init__(self, procs: Procs, tmp: Path, target: str) -> None:
        self.procs = procs
        # Keepalive as such: without resumption, which would keep a dropped session (and
        # answer its name's requests late instead of 503) for the grace.
        no_grace = ("--resume-grace", "0")
        self.relay = procs.add(RelayProc(tmp / "live", *no_grace, name="relay-live"))
        token = issue_token(tmp / "live", "sleepy")
        self.sleepy: AgentProc = procs.add(
            start_agent(self.relay, token, target, name="agent-sleepy")
        )
        self.frozen_relay = procs.add(RelayProc(tmp / "frozen", *no_grace, name="relay-frozen"))
        token = issue_token(tmp / "frozen", "watcher")
        self.watcher: AgentProc = procs.add(
            start_agent(self.frozen_relay, token, target, name="agent-watcher")
        )
        #: What a caller got for the frozen agent's URL once the relay dropped it:
        #: (status, x-edge-error, retry-after).
        self.offline_answer: tuple[int, str | None, str | None] | None = None
        self.done = threading.Event()  # the watcher has thawed both peers (or gave up)
        self._stop = threading.Event()
        self.sleepy.signal(signal.SIGSTOP)
        self.agent_stopped = time.monotonic()
        self.frozen_relay.signal(signal.SIGSTOP)
        self.relay_stopped = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="dead-peers", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self.procs.stop_all()

    def _watch(self) -> None:
        agent_thawed = relay_thawed = False
        deadline = time.monotonic() + WATCH_FOR
        while not (agent_thawed and relay_thawed) and time.monotonic() < deadline:
            if self._stop.wait(0.1):
                break
            if not agent_thawed and self.relay.count(RELAY_DROPPED):
                self.offline_answer = _get(self.sleepy.url + "echo")
                self.sleepy.signal(signal.SIGCONT)
                agent_thawed = True
            if not relay_thawed and self.watcher.count(AGENT_DROPPED):
                self.frozen_relay.signal(signal.SIGCONT)
                relay_thawed = True
        self.done.set()


def _get(url: str) -> tuple[int, str | None, str | None]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("x-edge-error"), None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("x-edge-error"), exc.headers.get("retry-after")
