"""Test doubles for v2 stream handlers: a FakeStream (the runtime's side of StreamPort),
a raw scripted TCP server that counts its connections, and response parsing."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httptools

from edge_agent.port import StreamHandler
from wire import ErrorCode


class FakeStream:
    """Records what a handler does to its stream.

    With ``high`` set, written bytes stay ``buffered`` (a relay that does not take them)
    until :meth:`drain`; past ``high`` the handler's ``pause_writing`` is called, as the
    runtime would.
    """

    def __init__(self, sid: int = 1, high: int | None = None) -> None:
        self.sid = sid
        self.buffered = 0
        self.high = high
        self.handler: StreamHandler | None = None
        self.out = bytearray()
        self.writes = 0
        self.max_buffered = 0
        self.closed: bool | None = None  # the CLOSE flag of our END, once ended
        self.reset_code: ErrorCode | None = None
        self.reset_reason = ""
        self.reading_paused = False
        self.pauses = 0
        self.writing_paused = False
        self.aborted = False  # the runtime called handler.aborted(): the stream is gone
        self.finished = asyncio.Event()  # ended or reset
        self.changed = asyncio.Event()

    def write(self, data: bytes) -> None:
        assert not self.aborted, "write after abort"
        assert self.closed is None and self.reset_code is None, "write after end/reset"
        assert isinstance(data, bytes)
        self.out += data
        self.writes += 1
        if self.high is not None:
            self.buffered += len(data)
            self.max_buffered = max(self.max_buffered, self.buffered)
            if self.buffered > self.high and not self.writing_paused:
                self.writing_paused = True
                assert self.handler is not None
                self.handler.pause_writing()
        self.changed.set()

    def end(self, close: bool = False) -> None:
        assert not self.aborted, "end after abort"
        assert self.closed is None and self.reset_code is None, "end twice"
        self.closed = close
        self.finished.set()
        self.changed.set()

    def reset(self, code: ErrorCode, reason: str = "", after_queued: bool = False) -> None:
        assert not self.aborted, "reset after abort"
        assert self.closed is None and self.reset_code is None, "reset after end"
        self.reset_code = code
        self.reset_reason = reason
        self.finished.set()
        self.changed.set()

    def pause_reading(self) -> None:
        assert not self.aborted and self.reset_code is None, "pause after the stream closed"
        assert not self.reading_paused
        self.reading_paused = True
        self.pauses += 1
        self.changed.set()

    def resume_reading(self) -> None:
        assert not self.aborted and self.reset_code is None, "resume after the stream closed"
        assert self.reading_paused
        self.reading_paused = False
        self.changed.set()

    def abort(self, code: ErrorCode = ErrorCode.CANCEL, reason: str = "") -> None:
        """The relay reset the stream (or the session was lost)."""
        self.aborted = True
        assert self.handler is not None
        self.handler.aborted(code, reason)

    def drain(self) -> None:
        """The relay took every buffered byte."""
        self.buffered = 0
        if self.writing_paused:
            self.writing_paused = False
            assert self.handler is not None
            self.handler.resume_writing()

    async def wait(self, within: float = 10.0) -> FakeStream:
        await asyncio.wait_for(self.finished.wait(), within)
        return self

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), within)


def open_stream(make: Callable[[FakeStream], StreamHandler], **kwargs: Any) -> FakeStream:
    stream = FakeStream(**kwargs)
    stream.handler = make(stream)
    return stream


def send(stream: FakeStream, *chunks: bytes, end: bool = True) -> None:
    assert stream.handler is not None
    for chunk in chunks:
        stream.handler.data(chunk)
    if end:
        stream.handler.end(False)


@dataclasses.dataclass
class Parsed:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None


class _Collector:
    def __init__(self) -> None:
        self.messages: list[Parsed] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.messages.append(Parsed(status, self.headers, bytes(self.body)))
        self.headers, self.body = [], bytearray()


def parse_responses(raw: bytes, eof: bool = False) -> list[Parsed]:
    """Every response in ``raw`` (interim ones included). ``eof``: the last body ends at
    the end of ``raw`` (close-delimited)."""
    collector = _Collector()
    collector.parser.feed_data(raw)
    if eof and (collector.headers or collector.body):
        collector.on_message_complete()
    return collector.messages


def parse_response(raw: bytes, eof: bool = False) -> Parsed:
    messages = [m for m in parse_responses(raw, eof) if m.status >= 200]
    assert len(messages) == 1, messages
    return messages[0]


@dataclasses.dataclass
class RawServer:
    url: str
    port: int
    connections: int = 0
    requests: list[bytes] = dataclasses.field(default_factory=list)
    disconnected: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, RawServer], Awaitable[None]]


@asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[RawServer]:
    """A TCP server on 127.0.0.1 that runs ``script`` for each connection it accepts."""
    state = RawServer("", 0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            await script(reader, writer, state)
        except (ConnectionError, asyncio.IncompleteReadError):
            state.disconnected.set()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    state.url = f"http://127.0.0.1:{state.port}"
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader, state: RawServer) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    state.requests.append(head)
    return head


def canned(*responses: bytes, close: bool = True) -> Script:
    """A script that answers each request head with the next of ``responses``."""

    async def script(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        for response in responses:
            await read_head(reader, state)
            writer.write(response)
            await writer.drain()
        if not close:
            await reader.read()

    return script
