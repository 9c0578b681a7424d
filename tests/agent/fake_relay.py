"""A fake relay for the agent tests, on the shared tunnel runtime.

The real relay (``relay/``) is built separately and ``edge_agent`` must not depend on
it, so these tests drive the agent against this small stand-in: an asyncio server
speaking the agent-facing side of the contract (upgrade at ``/_edge/connect`` with the
subprotocol and a bearer token, 401/403 with the relay's JSON error body before the
upgrade, HELLO/WELCOME, streams with real flow control). It has no public HTTP side:
tests open streams directly with :meth:`FakeSession.open`, which sends the raw HTTP/1.1
request bytes (protocol v2) and parses the agent's response bytes (httptools).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import ssl
import time
from collections.abc import AsyncIterable
from typing import cast

import httptools
from websockets.datastructures import Headers

import tunnel
import tunnel.server
from wire import (
    Connection,
    ErrorCode,
    GoAwayReceived,
    Hello,
    Role,
    StreamKind,
    Welcome,
)


class StreamWasReset(Exception):
    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ResponseHead:
    status: int
    headers: tuple[tuple[str, str], ...]


class FakeStream:
    """One request the fake relay sent, and the agent's answer (a StreamHandler)."""

    def __init__(self, session: FakeSession, head_only: bool) -> None:
        self.session = session
        self.stream: tunnel.Stream | None = None
        self.head: asyncio.Future[ResponseHead] = asyncio.get_running_loop().create_future()
        self.chunks: asyncio.Queue[tuple[bytes, bool, float]] = asyncio.Queue()
        self.reset: StreamWasReset | None = None
        self.uploaded = 0  # request body bytes sent so far
        self.upload_task: asyncio.Task[None] | None = None
        self.raw = bytearray()  # the response bytes as they arrived
        self.close_flag = False
        self.writable = asyncio.Event()
        self.writable.set()
        self._headers: list[tuple[str, str]] = []
        self._head_only = head_only
        self._parser = httptools.HttpResponseParser(self)

    @property
    def stream_id(self) -> int:
        assert self.stream is not None
        return self.stream.sid

    async def response(self, within: float = 10.0) -> ResponseHead:
        """The response head; raises StreamWasReset if the agent reset the stream."""
        return await asyncio.wait_for(asyncio.shield(self.head), within)

    async def read(self, within: float = 10.0) -> tuple[bytes, bool, float]:
        """Next body piece (and whether it ended the body, and when it arrived).

        Credit for what arrived goes back when the test reads (the test is the consumer).
        """
        data, end, when = await asyncio.wait_for(self.chunks.get(), within)
        if self.stream is not None:
            self.stream.resume_reading()
            self.stream.pause_reading()
        if self.reset is not None and not data and not end:
            raise self.reset
        return data, end, when

    async def body(self, within: float = 10.0) -> bytes:
        parts = []
        while True:
            data, end, _ = await self.read(within)
            parts.append(data)
            if end:
                return b"".join(parts)

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200 and status != 101:
            self._headers = []
            return
        if not self.head.done():
            self.head.set_result(ResponseHead(status, tuple(self._headers)))
        if self._head_only:
            self.chunks.put_nowait((b"", True, time.monotonic()))

    def on_body(self, body: bytes) -> None:
        self.chunks.put_nowait((bytes(body), False, time.monotonic()))

    def on_message_complete(self) -> None:
        if self.head.done() and not self._head_only:
            self.chunks.put_nowait((b"", True, time.monotonic()))

    # -- tunnel.StreamHandler -------------------------------------------------------------------

    def data(self, data: bytes) -> None:
        self.raw += data
        with contextlib.suppress(httptools.HttpParserUpgrade):
            self._parser.feed_data(data)

    def end(self, close: bool) -> None:
        self.close_flag = close
        if close and self.head.done():  # a body delimited by the end of the connection
            self.chunks.put_nowait((b"", True, time.monotonic()))

    def aborted(self, code: ErrorCode, reason: str) -> None:
        self.reset = StreamWasReset(code, reason)
        if not self.head.done():
            self.head.set_exception(self.reset)
        self.chunks.put_nowait((b"", False, time.monotonic()))
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


def request_bytes(method: str, target: str, headers: list[tuple[str, str]], chunked: bool) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    names = {n.lower() for n, _ in headers}
    if "host" not in names:
        lines.append("host: relay.test\r\n")
    lines.extend(f"{n}: {v}\r\n" for n, v in headers)
    if chunked:
        lines.append("transfer-encoding: chunked\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


class _Hooks(tunnel.SessionHooks):
    def __init__(self, fake: FakeSession) -> None:
        self.fake = fake

    def on_hello(self, session: tunnel.Session, hello: Hello) -> None:
        self.fake.on_hello(hello)

    def on_goaway(self, session: tunnel.Session, event: GoAwayReceived) -> None:
        self.fake.goaways.append(event)

    def on_session_closed(self, session: tunnel.Session) -> None:
        self.fake.closed.set()


class FakeSession:
    def __init__(self, relay: FakeRelay) -> None:
        self.relay = relay
        self.session = tunnel.Session(Connection(Role.RELAY, relay.max_streams), _Hooks(self))
        self.link: tunnel.WsLink | None = None
        self.hellos: list[Hello] = []
        self.goaways: list[GoAwayReceived] = []
        self.streams: dict[int, FakeStream] = {}
        self.welcomed = asyncio.Event()
        self.closed = asyncio.Event()
        self.hello_seen = asyncio.Event()

    @property
    def conn(self) -> Connection:
        return self.session.conn

    def on_hello(self, hello: Hello) -> None:
        self.hellos.append(hello)
        self.hello_seen.set()
        if not self.conn.established:
            name = hello.name or "auto"
            urls = (f"{self.relay.public_url}/a/{name}/",)
            self.session.send_welcome(Welcome(name, urls, self.relay.max_streams, 1 << 30))
            self.welcomed.set()
            self.relay.new_session.set()

    async def open(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | AsyncIterable[bytes] | None = None,
    ) -> FakeStream:
        """Open a stream as the relay would for a public request."""
        headers = list(headers or ())
        given_length = any(n.lower() == "content-length" for n, _ in headers)
        if isinstance(body, bytes) and not given_length:
            headers.append(("content-length", str(len(body))))
        chunked = body is not None and not isinstance(body, bytes) and not given_length
        head = request_bytes(method, target, headers, chunked)
        fake = FakeStream(self, method == "HEAD")
        fake.stream = self.session.open(StreamKind.HTTP, fake, head, end=body is None)
        fake.stream.pause_reading()
        self.streams[fake.stream.sid] = fake
        if body is not None:
            fake.upload_task = asyncio.create_task(self._upload(fake, body, chunked))
        return fake

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

    async def _upload(
        self, fake: FakeStream, body: bytes | AsyncIterable[bytes], chunked: bool
    ) -> None:
        stream = fake.stream
        assert stream is not None
        chunks = _one(body) if isinstance(body, bytes) else body
        async for chunk in chunks:
            if stream.closed:
                return
            if chunk:
                stream.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                fake.uploaded += len(chunk)
            await fake.writable.wait()
        if chunked:
            stream.write(b"0\r\n\r\n")
        stream.end()

    async def reset(self, stream: FakeStream, code: ErrorCode = ErrorCode.CANCEL) -> None:
        assert stream.stream is not None
        stream.stream.reset(code, "caller went away")
        stream.reset = StreamWasReset(code, "sent by the relay")

    async def goaway(self, code: ErrorCode = ErrorCode.NO_ERROR) -> None:
        self.session.goaway(code, "relay says goodbye")

    async def flush(self) -> None:
        self.session.kick()


async def _one(data: bytes) -> AsyncIterable[bytes]:
    yield data


class _Upgrade(asyncio.Protocol):
    """Reads the upgrade request head, then hands the connection to the fake relay."""

    def __init__(self, relay: FakeRelay) -> None:
        self.relay = relay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end >= 0 and self.transport is not None:
            head, rest = self.buffer[: end + 4], self.buffer[end + 4 :]
            self.relay.upgrade(self.transport, head, rest)


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
        self._server: asyncio.Server | None = None
        self._links: list[tunnel.WsLink] = []

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> FakeRelay:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Upgrade(self), "127.0.0.1", port, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for link in self._links:
                link.abort()
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

    def upgrade(self, transport: asyncio.Transport, head: bytes, rest: bytes) -> None:
        self.attempts.append(time.monotonic())
        ws, request = tunnel.server.read_upgrade(head)
        refusal = None if request is None else self._refusal(request.path, request.headers)
        if request is None or refusal is not None:
            status, code, message = refusal or (400, "bad_request", "not an upgrade")
            transport.write(_error(status, code, message))
            transport.close()
            return
        link = tunnel.server.accept(ws, request, transport, rest)
        if link is None:
            return
        self._links.append(link)
        if self.flap:
            link.close(1000, "")
            return
        session = FakeSession(self)
        session.link = link
        link.attach(session.session)
        self.sessions.append(session)
        self.new_session.set()

    def _refusal(self, path: str, headers: Headers) -> tuple[int, str, str] | None:
        if path.split("?")[0] != "/_edge/connect":
            return 404, "not_found", "no such endpoint"
        if self.refuse_status is not None:
            return self.refuse_status, "refused", "refused by the test"
        if self.tokens is None:
            return None
        auth = headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        if token not in self.tokens:
            return 401, "invalid_token", "missing or invalid token"
        name = path.partition("name=")[2]
        if name and name != self.tokens[token]:
            return 403, "name_forbidden", "token is for another name"
        return None


def _error(status: int, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} Refused\r\ncontent-type: application/json\r\n"
        f"x-edge-error: {code}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body
