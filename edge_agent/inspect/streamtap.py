"""Feeds the tunnel's streams into the Recorder as the raw bytes they carry.

:class:`TappedTarget` wraps the agent's stream target (the forwarder, or the object
bridge) while an inspector may run (``edge-agent http --no-inspect`` does not wrap at
all). With no Recorder installed (the inspector could not listen) it hands each stream
to the target as it is. With one, it sits between the stream and the target's handler:
request bytes are recorded as they come down, response bytes as the target writes them,
and the exchange is closed at the response's end or at a reset. Nothing is copied,
delayed or changed.

The de-duplication marks re-sends through :func:`edge_agent.inspect.tap.mark_duplicate`,
which reads the exchange from a context variable: it is set while the target's handler
takes request bytes, so a task the handler starts then (the bridge's) inherits it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tunnel
from edge_agent.inspect import tap
from edge_agent.port import StreamPort
from edge_agent.session import StreamTarget
from wire import ErrorCode

if TYPE_CHECKING:
    from edge_agent.inspect.observe import Recorder


class TappedTarget:
    """A stream target whose streams the inspector sees (when it is on)."""

    def __init__(self, inner: StreamTarget) -> None:
        self.inner = inner

    def handler(self, stream: tunnel.Stream) -> tunnel.StreamHandler:
        recorder = tap.installed()
        if recorder is None:
            return self.inner.handler(stream)
        port = _TapPort(stream, recorder)
        token = tap.current.set(port)
        try:
            inner = self.inner.handler(port)  # type: ignore[arg-type]
        finally:
            tap.current.reset(token)
        return _TapHandler(port, inner)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _TapPort:
    """The stream as the target sees it: what it writes is recorded, then sent."""

    def __init__(self, stream: tunnel.Stream, recorder: Recorder) -> None:
        self.stream = stream
        self.recorder = recorder
        self.sid = stream.sid
        recorder.opened(self)

    @property
    def buffered(self) -> int:
        return self.stream.buffered

    def write(self, data: bytes) -> None:
        self.recorder.response_bytes(self, data)
        self.stream.write(data)

    def end(self, close: bool = False) -> None:
        self.recorder.closed(self)
        self.stream.end(close)

    def reset(self, code: ErrorCode, reason: str = "", after_queued: bool = False) -> None:
        self.recorder.closed(self, f"{code.name} {reason}".strip())
        self.stream.reset(code, reason, after_queued)

    def pause_reading(self) -> None:
        self.stream.pause_reading()

    def resume_reading(self) -> None:
        self.stream.resume_reading()


class _TapHandler:
    """The handler as the session sees it: what arrives is recorded, then delivered."""

    def __init__(self, port: _TapPort, inner: tunnel.StreamHandler) -> None:
        self.port = port
        self.inner = inner

    def data(self, data: bytes) -> None:
        self.port.recorder.request_bytes(self.port, data)
        token = tap.current.set(self.port)
        try:
            self.inner.data(data)
        finally:
            tap.current.reset(token)

    def end(self, close: bool) -> None:
        self.inner.end(close)

    def aborted(self, code: ErrorCode, reason: str) -> None:
        self.port.recorder.closed(self.port, f"aborted by the relay: {code.name}")
        self.inner.aborted(code, reason)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def _is_a_port(port: _TapPort) -> StreamPort:
    return port  # mypy checks that a _TapPort is a StreamPort
