"""The object bridge's byte <-> object pieces: a request body fed by a stream with
bounded buffering, and the response head written from a LocalResponse's fields."""

from __future__ import annotations

import asyncio
import http
import re
from collections import deque
from typing import Final

from edge_agent.errors import TargetError, TargetFailed
from edge_agent.port import StreamPort

#: Request body bytes held for a Target that has not consumed them yet; past this the
#: stream's reading pauses (the relay stops after what its window still allows), and
#: it resumes once the Target has taken the buffer down to half.
BODY_BUFFER: Final = 256 * 1024

#: Characters that would split or end a header line (response splitting).
_UNSAFE: Final = re.compile(r"[\r\n\0]")


class RequestBody:
    """The request body as an async iterator, fed by the stream (see the module docstring)."""

    def __init__(self, stream: StreamPort) -> None:
        self._stream = stream
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._paused = False
        self._ended = False
        self._error: TargetError | None = None
        self._ready = asyncio.Event()

    def feed(self, data: bytes) -> None:
        if self._ended or self._error is not None:
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > BODY_BUFFER and not self._paused:
            self._paused = True
            self._stream.pause_reading()
        self._ready.set()

    def end(self, error: TargetError | None = None, *, stream_open: bool = True) -> None:
        """A clean end (``error`` None), or a cut-off body: held chunks are dropped and,
        while the stream is still open, its reading resumes (later bytes are dropped)."""
        if self._ended or self._error is not None:
            return
        if error is None:
            self._ended = True
        else:
            self._error = error
            self._chunks.clear()
            self._size = 0
            if stream_open:
                self._resume()
            self._paused = False
        self._ready.set()

    def __aiter__(self) -> RequestBody:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._ended:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self._size <= BODY_BUFFER // 2:
            self._resume()
        return chunk

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._stream.resume_reading()


def content_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            try:
                return int(value.strip())
            except ValueError:
                raise TargetFailed(f"invalid Content-Length {value!r}") from None
    return None


def response_head(status: int, headers: list[tuple[str, str]], chunked: bool, close: bool) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {status} {reason}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    if any(_UNSAFE.search(line, 0, len(line) - 2) for line in lines):
        raise TargetFailed("a response header contains CR, LF or NUL")
    if chunked:
        lines.append("transfer-encoding: chunked\r\n")
    if close:
        lines.append("connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")
