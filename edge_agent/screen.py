"""The live status screen of ``edge-agent http`` on a terminal (ngrok's kind).

Two halves: :class:`ScreenModel`, pure (fed with requests and a :class:`Status`, it
returns the screen's lines for a width; its clock is injected), and :class:`TtyScreen`,
which polls the tunnel a few times a second and redraws in place with ANSI cursor
movement, only when a line changed. No curses: the screen is the lines below the cursor,
redrawn from their first line; on exit the cursor is shown again and left below them.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from typing import Final, Protocol, TextIO

from edge_agent.port import ExchangeRecord
from wire import Welcome

#: Requests listed at the bottom of the screen.
LAST_REQUESTS: Final = 10
#: The window of requests per minute and of the percentiles, in seconds.
WINDOW: Final = 60.0
#: Durations kept for the window (beyond this rate, the oldest are dropped early).
MAX_WINDOW: Final = 100_000
#: Seconds between looks at the tunnel (a redraw only if something changed).
INTERVAL: Final = 0.25

HIDE_CURSOR: Final = "\x1b[?25l"
SHOW_CURSOR: Final = "\x1b[?25h"
CLEAR_LINE: Final = "\x1b[K"  # to the end of the line
CLEAR_BELOW: Final = "\x1b[J"  # to the end of the screen
HOME_CLEAR: Final = "\x1b[H\x1b[2J"


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    """The tunnel as the screen shows it."""

    state: str  # connecting, online, reconnecting, draining, stopped
    urls: tuple[str, ...] = ()
    inspector: str | None = None
    latency: float | None = None  # seconds, the WebSocket ping -> pong
    open_streams: int = 0
    retry_in: float | None = None  # seconds until the next connect, when reconnecting


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    method: str
    path: str
    outcome: str  # the status, the reset code, or both
    duration_ms: float


class ScreenModel:
    """What the screen says: fed with finished requests, asked for lines."""

    def __init__(self, label: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.clock = clock
        self.notes: list[str] = []
        self.rows: collections.deque[Row] = collections.deque(maxlen=LAST_REQUESTS)
        self._window: collections.deque[tuple[float, float]] = collections.deque(maxlen=MAX_WINDOW)

    def request(self, record: ExchangeRecord) -> None:
        outcome = (
            " ".join(
                part
                for part in (
                    str(record.status) if record.status is not None else "",
                    record.reset.name if record.reset is not None else "",
                )
                if part
            )
            or "NO_STATUS"
        )  # as the request lines: never an empty column
        self.rows.appendleft(
            Row(_printable(record.method), _printable(record.target), outcome, record.duration_ms)
        )
        self._window.append((self.clock(), record.duration_ms))

    def note(self, text: str) -> None:
        """A line shown under the status (such as the drain's)."""
        self.notes.append(text)

    def _recent(self) -> collections.deque[tuple[float, float]]:
        horizon = self.clock() - WINDOW
        window = self._window
        while window and window[0][0] <= horizon:
            window.popleft()
        return window

    def per_minute(self) -> int:
        """Requests finished in the last minute."""
        return len(self._recent())

    def percentiles(self) -> tuple[float, float] | None:
        """p50 and p90 (nearest rank) of the last minute's durations in ms; None if none."""
        durations = sorted(duration for _, duration in self._recent())
        if not durations:
            return None
        return _rank(durations, 50), _rank(durations, 90)

    def lines(self, status: Status, width: int) -> list[str]:
        """The screen for ``status``, each line cut to ``width`` characters."""
        state = status.state
        if state == "reconnecting" and status.retry_in is not None:
            state = f"reconnecting in {math.ceil(status.retry_in)} s"
        rows = [
            _field("Session Status", state),
            *(_field("Forwarding", f"{url} -> {self.label}") for url in status.urls),
        ]
        if not status.urls:
            rows.append(_field("Forwarding", f"(not yet) -> {self.label}"))
        if status.inspector is not None:
            rows.append(_field("Inspector", status.inspector))
        latency = _ms(status.latency * 1000) if status.latency is not None else "-"
        rows.append(_field("Latency", latency))
        pcts = self.percentiles()
        p50, p90 = (_ms(p) for p in pcts) if pcts is not None else ("-", "-")
        rows.append(
            _field(
                "Connections",
                f"open {status.open_streams}   {self.per_minute()} req/min   p50 {p50}   p90 {p90}",
            )
        )
        out = ["edge-agent" + " " * 40 + "(Ctrl+C to quit)", "", *rows]
        if self.notes:
            out += ["", *self.notes]
        out += ["", "HTTP Requests", "-------------"]
        for row in self.rows:
            out.append(f"{row.method:<7} {row.path:<40} {row.outcome:<14} {_ms(row.duration_ms)}")
        return [line[:width].rstrip() if width > 0 else "" for line in out]


def _ms(ms: float) -> str:
    """A duration: one decimal below 10 ms (a local round trip is often under one)."""
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _field(name: str, value: str) -> str:
    return f"{name:<18}{value}"


def _rank(ordered: list[float], pct: int) -> float:
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _printable(text: str) -> str:
    """No control characters or non-ASCII: a request target must not drive the terminal."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in text)


class StatusSource(Protocol):
    """What the screen reads from the tunnel (a :class:`edge_agent.tunnel.TunnelClient`)."""

    @property
    def state(self) -> str: ...

    @property
    def public_urls(self) -> tuple[str, ...]: ...

    @property
    def latency(self) -> float | None: ...

    @property
    def active_streams(self) -> int: ...

    @property
    def retry_at(self) -> float | None: ...


class TtyScreen:
    """Draws a :class:`ScreenModel` on a terminal; takes the callbacks request lines take
    (``ready``, ``inspector_at``, ``request``) plus ``note``."""

    def __init__(self, label: str = "", out: TextIO | None = None) -> None:
        self.model = ScreenModel(label)
        self.inspector: str | None = None
        self.out = out if out is not None else sys.stdout
        self._drawn = 0  # lines on screen from the last draw
        self._welcomed = False  # a WELCOME came (a takeover is noted on the first only)
        self._last: tuple[list[str], int] | None = None

    @property
    def label(self) -> str:
        return self.model.label

    @label.setter
    def label(self, value: str) -> None:
        self.model.label = value

    def ready(self, welcome: Welcome) -> None:
        # The URLs are read from the tunnel at each look; a takeover is worth a note
        # (on the first WELCOME: later, the session replaced is most likely our own).
        if welcome.replaced is not None and not self._welcomed:
            self.note(replaced_note(welcome))
        self._welcomed = True

    def inspector_at(self, url: str) -> None:
        self.inspector = url

    def request(self, record: ExchangeRecord) -> None:
        self.model.request(record)

    def note(self, text: str) -> None:
        self.model.note(text)

    def status(self, source: StatusSource) -> Status:
        retry_at = source.retry_at
        return Status(
            state=source.state,
            urls=web_first(source.public_urls),
            inspector=self.inspector,
            latency=source.latency,
            open_streams=source.active_streams,
            retry_in=retry_at - time.monotonic() if retry_at is not None else None,
        )

    async def run(self, source: StatusSource, interval: float = INTERVAL) -> None:
        """Redraw (when changed) every ``interval`` seconds until cancelled."""
        while True:
            self.draw(self.status(source))
            await asyncio.sleep(interval)

    def draw(self, status: Status, force: bool = False) -> None:
        import shutil  # here: only a terminal draws, and it costs 0.5 MiB (bz2, lzma...)

        size = shutil.get_terminal_size()
        # One column spare (no pending wrap), and no more lines than fit (cursor-up
        # cannot reach above the top of the screen).
        lines = self.model.lines(status, max(size.columns - 1, 1))[: max(size.lines - 1, 1)]
        if not force and self._last == (lines, size.columns):
            return
        parts: list[str] = []
        if self._last is None:
            parts.append(HIDE_CURSOR)
        elif self._last[1] != size.columns:
            parts.append(HOME_CLEAR)  # resized: the terminal may have reflowed the old lines
        elif self._drawn:
            parts.append(f"\r\x1b[{self._drawn}A")
        parts.extend(line + CLEAR_LINE + "\n" for line in lines)
        parts.append(CLEAR_BELOW)
        self.out.write("".join(parts))
        self.out.flush()
        self._drawn = len(lines)
        self._last = (lines, size.columns)

    def close(self, source: StatusSource) -> None:
        """The last screen (the tunnel is stopped), then the cursor back, below it."""
        self.draw(dataclasses.replace(self.status(source), state="stopped"), force=True)
        self.out.write(SHOW_CURSOR)
        self.out.flush()


def wanted(out: TextIO, log_format: str, verbose: int, no_screen: bool) -> bool:
    """The screen, rather than plain lines: on a terminal, text logs, no ``-v``."""
    return not no_screen and log_format != "json" and verbose == 0 and out.isatty()


def web_first(urls: tuple[str, ...]) -> tuple[str, ...]:
    """The public URLs in the order they are shown: the host-routed one first (for web
    use: redirects, absolute links and cookies work), then the path-routed one, which
    WELCOME always lists first (``<relay>/a/<name>/``: one fixed base, for A2A)."""
    return urls[1:] + urls[:1]


def replaced_note(welcome: Welcome) -> str:
    """What to tell the user when WELCOME says this session took its name over."""
    where = _printable((welcome.replaced or "?")[:100])
    return (
        f"Replaced the session that held {welcome.name} (from {where}): "
        "the relay told that agent, which stops"
    )
