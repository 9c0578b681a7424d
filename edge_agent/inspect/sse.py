"""Server-sent events, parsed observe-only from a response body fed in chunks.

The W3C event-stream rules: lines end with LF, CR or CRLF; a line starting with ``:``
is a comment (a keep-alive ping); ``field: value`` lines build an event; a blank line
dispatches it when it has data. Fields other than ``event``, ``data`` and ``id`` are
ignored. A line longer than ``max_line`` bytes is cut there (the rest of it is skipped),
so a stream that never sends a newline costs at most ``max_line`` bytes here.
"""

from __future__ import annotations

import dataclasses
from typing import Final

#: Longest line kept while waiting for its end.
MAX_LINE: Final = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class SseEvent:
    event: str  # "" when the stream named none ("message" by the spec)
    data: str  # the data lines joined with "\n"
    id: str | None


class SseParser:
    """Feed body chunks with :meth:`feed`; it returns the events they completed."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.comments = 0
        self._buf = bytearray()
        self._skipping = False  # inside a line already cut at max_line
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buf += chunk
        events: list[SseEvent] = []
        while True:
            end, size = _line_end(self._buf)
            if end < 0:
                break
            line = bytes(self._buf[:end])
            del self._buf[: end + size]
            if self._skipping:
                self._skipping = False
                continue
            event = self._line(line.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        if len(self._buf) > self.max_line:
            line = bytes(self._buf[: self.max_line])
            self._buf.clear()
            self._skipping = True
            self._line(line.decode("utf-8", "replace"))
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent(event, "\n".join(data), self._id)


def _line_end(buf: bytearray) -> tuple[int, int]:
    """Index of the first line end in ``buf`` and its length (-1 if none yet).

    A CR as the last byte waits for the next chunk: it may be the start of a CRLF.
    """
    lf = buf.find(b"\n")
    cr = buf.find(b"\r", 0, lf if lf >= 0 else len(buf))
    if cr < 0:
        return lf, 1
    if cr + 1 == len(buf):
        return -1, 0
    return cr, 2 if buf[cr + 1] == 0x0A else 1
