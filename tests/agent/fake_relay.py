"""A fake relay for the agent tests.

The real relay (``relay/``) is built separately and ``edge_agent`` must not depend on
it, so these tests drive the agent against this small stand-in: a websockets server
speaking the agent-facing side of the contract (upgrade at ``/_edge/connect`` with the
subprotocol and a bearer token, 401/403 with the relay's JSON error body before the
upgrade, HELLO/WELCOME, streams through ``wire.Connection(Role.RELAY)`` with real flow
control). It has no public HTTP side: tests open streams directly with :meth:`FakeSession.open`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass, field

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from wire import (
    MAX_FRAME_SIZE,
    SUBPROTOCOL,
    Connection,
    DataReceived,
    ErrorCode,
    GoAwayReceived,
    Hello,
    HelloReceived,
    RequestHead,
    ResponseHead,
    ResponseReceived,
    Role,
    StreamReset,
    Welcome,
    WindowUpdated,
)


class StreamWasReset(Exception):
    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason


@dataclass
class FakeStream:
    session: FakeSession
    stream_id: int
    head: asyncio.Future[ResponseHead]
    chunks: asyncio.Queue[tuple[bytes, bool, float]] = field(default_factory=asyncio.Queue)
    window: asyncio.Event = field(default_factory=asyncio.Event)
    reset: StreamWasReset | None = None
    uploaded: int = 0  # request body bytes sent so far
    upload_task: asyncio.Task[None] | None = None

    async def response(self, within: float = 10.0) -> ResponseHead:
        """The response head; raises StreamWasReset if the agent reset the stream."""
        return await asyncio.wait_for(asyncio.shield(self.head), within)

    async def read(self, within: float = 10.0) -> tuple[bytes, bool, float]:
        """Next DATA payload (and whether it ended the body, and when it arrived).

        Credit is returned at once (the test is the consumer).
        """
        data, end, when = await asyncio.wait_for(self.chunks.get(), within)
        if self.reset is not None and not data and not end:
            raise self.reset
        if data:
            self.session.conn.consumed(self.stream_id, len(data))
            await self.session.flush()
        return data, end, when

    async def body(self, within: float = 10.0) -> bytes:
        parts = []
        while True:
            data, end, _ = await self.read(within)
            parts.append(data)
            if end:
                return b"".join(parts)

    def _on_reset(self, code: ErrorCode, reason: str) -> None:
        self.reset = StreamWasReset(code, reason)
        if not self.head.done():
            self.head.set_exception(self.reset)
        self.chunks.put_nowait((b"", False, time.monotonic()))
        self.window.set()


class FakeSession:
    def __init__(self, ws: ServerConnection, relay: FakeRelay) -> None:
        self.ws = ws
        self.relay = relay
        self.conn = Connection(Role.RELAY)
        self.hellos: list[Hello] = []
        self.goaways: list[GoAwayReceived] = []
        self.streams: dict[int, FakeStream] = {}
        self.welcomed = asyncio.Event()
        self.closed = asyncio.Event()
        self.hello_seen = asyncio.Event()
        self._lock = asyncio.Lock()

    async def flush(self) -> None:
        async with self._lock:
            for message in self.conn.data_to_send():
                await self.ws.send(message)

    async def serve(self) -> None:
        try:
            async for message in self.ws:
                assert isinstance(message, bytes)
                for event in self.conn.receive(message):
                    await self._dispatch(event)
                await self.flush()
        finally:
            self.closed.set()
            for stream in self.streams.values():
                if stream.reset is None and not stream.head.done():
                    stream._on_reset(ErrorCode.INTERNAL_ERROR, "tunnel closed")

    async def _dispatch(self, event: object) -> None:
        if isinstance(event, HelloReceived):
            self.hellos.append(event.hello)
            self.hello_seen.set()
            if not self.conn.established:
                name = event.hello.name or "auto"
                urls = (f"{self.relay.public_url}/a/{name}/",)
                self.conn.send_welcome(Welcome(name, urls, self.relay.max_streams, 1 << 30))
                self.welcomed.set()
                self.relay.new_session.set()
        elif isinstance(event, ResponseReceived):
            stream = self.streams[event.stream_id]
            stream.head.set_result(event.head)
            if event.end_stream:
                stream.chunks.put_nowait((b"", True, time.monotonic()))
        elif isinstance(event, DataReceived):
            when = time.monotonic()
            self.streams[event.stream_id].chunks.put_nowait((event.data, event.end_stream, when))
        elif isinstance(event, StreamReset):
            self.streams[event.stream_id]._on_reset(event.code, event.reason)
        elif isinstance(event, WindowUpdated):
            targets = self.streams.values() if event.stream_id == 0 else []
            for stream in targets:
                stream.window.set()
            if event.stream_id in self.streams:
                self.streams[event.stream_id].window.set()
        elif isinstance(event, GoAwayReceived):
            self.goaways.append(event)

    async def open(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | AsyncIterable[bytes] | None = None,
    ) -> FakeStream:
        """Open a stream as the relay would for a public request."""
        head = RequestHead(method, target, tuple(headers or ()))
        sid = self.conn.open_stream(head, end_stream=body is None)
        stream = FakeStream(self, sid, asyncio.get_running_loop().create_future())
        self.streams[sid] = stream
        await self.flush()
        if body is not None:
            stream.upload_task = asyncio.create_task(self._upload(stream, body))
        return stream

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> tuple[ResponseHead, bytes]:
        stream = await self.open(method, target, headers, body)
        head = await stream.response()
        return head, await stream.body()

    async def _upload(self, stream: FakeStream, body: bytes | AsyncIterable[bytes]) -> None:
        sid = stream.stream_id
        chunks = _one(body) if isinstance(body, bytes) else body
        async for chunk in chunks:
            view = memoryview(chunk)
            while view:
                if stream.reset is not None or not self.conn.is_open(sid):
                    return
                n = self.conn.sendable(sid)
                if n == 0:
                    stream.window.clear()
                    await stream.window.wait()
                    continue
                self.conn.send_data(sid, bytes(view[:n]))
                stream.uploaded += n
                view = view[n:]
                await self.flush()
        if stream.reset is None and self.conn.is_open(sid):
            self.conn.send_data(sid, b"", end_stream=True)
            await self.flush()

    async def reset(self, stream: FakeStream, code: ErrorCode = ErrorCode.CANCEL) -> None:
        self.conn.send_reset(stream.stream_id, code, "caller went away")
        stream.reset = StreamWasReset(code, "sent by the relay")
        await self.flush()

    async def goaway(self, code: ErrorCode = ErrorCode.NO_ERROR) -> None:
        self.conn.send_goaway(code, "relay says goodbye")
        await self.flush()


async def _one(data: bytes) -> AsyncIterable[bytes]:
    yield data


class FakeRelay:
    """Accepts agents at ``/_edge/connect``; ``tokens`` maps token -> name it may claim
    (None: any name, no token needed)."""

    def __init__(
        self,
        *,
        tokens: dict[str, str] | None = None,
        public_url: str = "https://relay.test",
        max_streams: int = 64,
        ssl_context: ssl.SSLContext | None = None,
        refuse_status: int | None = None,
        flap: bool = False,
    ) -> None:
        self.tokens = tokens
        self.public_url = public_url
        self.max_streams = max_streams
        self.ssl_context = ssl_context
        self.refuse_status = refuse_status
        self.flap = flap  # accept the upgrade, then close at once
        self.attempts: list[float] = []  # monotonic time of each upgrade request
        self.sessions: list[FakeSession] = []
        self.new_session = asyncio.Event()
        self.port = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> FakeRelay:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            port,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            process_request=self._process_request,
            compression=None,
            max_size=MAX_FRAME_SIZE,
            ssl=self.ssl_context,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def session(self, index: int = -1, within: float = 10.0) -> FakeSession:
        """Wait for a session that got WELCOME: the ``index``-th one, or (for -1) the
        newest welcomed one."""
        async with asyncio.timeout(within):
            while True:
                self.new_session.clear()
                found = self._welcomed(index)
                if found is not None:
                    return found
                await self.new_session.wait()

    def _welcomed(self, index: int) -> FakeSession | None:
        if index >= 0:
            ok = len(self.sessions) > index and self.sessions[index].welcomed.is_set()
            return self.sessions[index] if ok else None
        done = [s for s in self.sessions if s.welcomed.is_set()]
        return done[-1] if done else None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.attempts.append(time.monotonic())
        if request.path.split("?")[0] != "/_edge/connect":
            return _error(connection, 404, "not_found", "no such endpoint")
        if self.refuse_status is not None:
            return _error(connection, self.refuse_status, "refused", "refused by the test")
        if self.tokens is None:
            return None
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        if token not in self.tokens:
            return _error(connection, 401, "invalid_token", "missing or invalid token")
        name = request.path.partition("name=")[2]
        if name and name != self.tokens[token]:
            return _error(connection, 403, "name_forbidden", "token is for another name")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        if self.flap:
            await ws.close()
            return
        session = FakeSession(ws, self)
        self.sessions.append(session)
        self.new_session.set()
        await session.serve()


def _error(connection: ServerConnection, status: int, code: str, message: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    response = connection.respond(status, body)
    response.headers = Headers(
        [("Content-Type", "application/json"), ("x-edge-error", code)]
        + [(k, v) for k, v in response.headers.raw_items() if k.lower() != "content-type"]
    )
    return response
