"""Rate limit for the relay's per-request log lines, so a log cannot amplify an attack.

Some events are written once per request or connection that someone outside the relay
chose to send: a refused agent token, a WebSocket that breaks RFC 6455, an agent's broken
response, a protocol error. Without a limit, 1,000 such requests are 1,000 lines.
:class:`RateLimit` is a :class:`logging.Filter` on the relay's handler: each of those
causes (the event name, :data:`PER_REQUEST`) may write :data:`BURST` lines per
:data:`WINDOW` seconds; the rest of the window is counted, not written, and when the
window ends one summary line says how many were left out::

    WARNING relay.ratelog: suppressed 980 similar cause=agent_refused window_s=10

Other events (an agent connected, the relay draining...) are never limited: they happen
at the relay's own pace. The summary is written by a timer on the running event loop;
without one (a test, the process exiting), by the next line of that cause or at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
from collections.abc import Callable
from typing import Final

#: Events written once per request or connection from outside (relay, tunnel modules).
PER_REQUEST: Final = frozenset(
    {
        "agent_refused",  # a connect with a wrong token, name or subprotocol
        "agent_no_hello",  # a WebSocket opened and left silent
        "tunnel_websocket_error",  # WebSocket framing broken
        "protocol_error",  # a tunnel rule broken (a session ends per line)
        "agent_response_invalid",  # an agent's response is not one HTTP response
        "response_aborted",  # a response cut after its first byte
        "cluster_hop_forged",  # X-Edge-Hop without the cluster secret
        "cluster_hop_failed",  # a request the owner node's link failed
        "public_address_blocked",  # an address past the malformed-head limit
    }
)
#: Lines written per cause and window before the rest are only counted.
BURST: Final = 20
#: Seconds per window.
WINDOW: Final = 10.0

log = logging.getLogger(__name__)


class _Cause:
    __slots__ = ("start", "suppressed", "timer", "written")

    def __init__(self, start: float) -> None:
        self.start = start
        self.written = 0
        self.suppressed = 0
        self.timer: asyncio.TimerHandle | None = None


class RateLimit(logging.Filter):
    """Pass at most ``burst`` records per cause and ``window`` seconds; summarise the rest."""

    def __init__(
        self,
        causes: frozenset[str] = PER_REQUEST,
        burst: int = BURST,
        window: float = WINDOW,
    ) -> None:
        super().__init__()
        self.causes = causes
        self.burst = burst
        self.window = window
        self._state: dict[str, _Cause] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        cause = record.msg
        if not isinstance(cause, str) or cause not in self.causes:
            return True
        now = time.monotonic()
        state = self._state.get(cause)
        if state is None or now - state.start >= self.window:
            if state is not None:
                self._summarise(cause)
            state = self._state[cause] = _Cause(now)
        if state.written < self.burst:
            state.written += 1
            return True
        state.suppressed += 1
        if state.timer is None:
            state.timer = _call_later(state.start + self.window - now, self._summarise, cause)
        return False

    def _summarise(self, cause: str) -> None:
        state = self._state.pop(cause, None)
        if state is None:
            return
        if state.timer is not None:
            state.timer.cancel()
        if state.suppressed:
            extra = {"cause": cause, "window_s": round(self.window)}
            log.warning("suppressed %d similar", state.suppressed, extra=extra)

    def flush(self) -> None:
        """Write the summary of every cause that has suppressed lines (at exit)."""
        for cause in list(self._state):
            self._summarise(cause)


def _call_later(
    delay: float, callback: Callable[[str], None], cause: str
) -> asyncio.TimerHandle | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.call_later(max(delay, 0.0), callback, cause)


def install(handler: logging.Handler) -> RateLimit:
    """Limit ``handler``'s per-request lines; the summaries still pending at exit are
    written then."""
    limit = RateLimit()
    handler.addFilter(limit)
    atexit.register(limit.flush)
    return limit
