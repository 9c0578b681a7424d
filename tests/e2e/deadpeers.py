"""Dead peers for the keepalive tests: a frozen agent and a frozen relay (SIGSTOP).

A frozen process keeps its sockets open but answers nothing, like a laptop that went to
sleep or a VM that hung: only WebSocket pings (every 20 s, 20 s to answer) can tell.
Noticing takes up to about 40 s, so the suite freezes both peers as early as possible
(see ``conftest.py``) and the tests only collect the outcome, while the other tests run.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.e2e.procs import AgentProc, Procs, RelayProc, issue_token, start_agent


class DeadPeers:
    """``relay`` holds a session of the frozen ``sleepy`` agent; ``watcher`` is an agent
    whose relay, ``frozen_relay``, is frozen. ``*_stopped``: when SIGSTOP was sent."""

    def __init__(self, procs: Procs, tmp: Path, target: str) -> None:
        self.procs = procs
        self.relay = procs.add(RelayProc(tmp / "live", name="relay-live"))
        token = issue_token(tmp / "live", "sleepy")
        self.sleepy: AgentProc = procs.add(
            start_agent(self.relay, token, target, name="agent-sleepy")
        )
        self.frozen_relay = procs.add(RelayProc(tmp / "frozen", name="relay-frozen"))
        token = issue_token(tmp / "frozen", "watcher")
        self.watcher: AgentProc = procs.add(
            start_agent(self.frozen_relay, token, target, name="agent-watcher")
        )
        self.sleepy.signal(signal.SIGSTOP)
        self.agent_stopped = time.monotonic()
        self.frozen_relay.signal(signal.SIGSTOP)
        self.relay_stopped = time.monotonic()
