"""A small fake agent for the relay's tests, on the shared tunnel runtime.

It stands in for the real agent (``edge_agent``), which the relay and its tests never
import. It speaks the protocol honestly (flow control included) unless a test asks
otherwise: ``grant_credit=False`` stops returning credit for request bytes, and
:meth:`FakeAgent.send_raw` puts arbitrary bytes on the WebSocket, for the hostile-agent
tests.

A test gives it a ``handler(request)`` coroutine; the handler answers with
``request.respond`` / ``request.send`` / ``request.reset``. Requests arrive as the raw
bytes of protocol v2; :class:`FakeRequest` parses them (httptools) so that handlers see
a method, a target, headers and a body, and frames its answer as HTTP/1.1 (chunked when
the handler gives no Content-Length).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from collections.abc import AsyncIterator, Awaitable, Callable

import httptools

import tunnel
import wire
from wire import ErrorCode

Handler = Callable[["FakeRequest"], Awaitable[None]]

_NO_BODY = frozenset({204, 304})


class FakeRequest:
    """One stream as the fake agent's handler sees it (a tunnel.StreamHandler too)."""

    def __init__(self, agent: FakeAgent, stream: tunnel.Stream) -> None:
        self.agent = agent
        self.stream = stream
        self.sid = stream.sid
        self.method = ""
        self.target = ""
        self.headers: list[tuple[str, str]] = []
        self.raw = bytearray()  # every request byte, as it arrived
        self.body_queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.received = 0  # request body bytes that arrived
        self.head_seen = asyncio.Event()
        self.chunked = False
        self.status: int | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._ended = False
        self.writable = asyncio.Event()  # cleared while the stream holds too much
        self.writable.set()
        if not agent.grant_credit:
            stream.pause_reading()

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    # -- httptools callbacks --------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.target += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.method = self._parser.get_method().decode()
        self.head_seen.set()

    def on_body(self, body: bytes) -> None:
        self.received += len(body)
        self.body_queue.put_nowait(bytes(body))

    def on_message_complete(self) -> None:
        self._end_body()

    # -- tunnel.StreamHandler ---------------------------------------------------------------

    def data(self, data: bytes) -> None:
        self.raw += data
        with contextlib.suppress(httptools.HttpParserUpgrade):
            self._parser.feed_data(data)

    def end(self, close: bool) -> None:
        self._end_body()

    def aborted(self, code: ErrorCode, reason: str) -> None:
        self.writable.set()
        self.agent.resets[self.sid] = code
        self.agent.reset_seen.set()
        self.agent.cancel(self.sid)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def _end_body(self) -> None:
        if not self._ended:
            self._ended = True
            self.body_queue.put_nowait(None)

    # -- the handler's side -----------------------------------------------------------------

    async def body_chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self.body_queue.get()) is not None:
            yield chunk

    async def read_body(self) -> bytes:
        return b"".join([c async for c in self.body_chunks()])

    async def respond(
        self, status: int, headers: list[tuple[str, str]] | None = None, end: bool = False
    ) -> None:
        headers = list(headers or ())
        names = {n.lower() for n, _ in headers}
        self.status = status
        self.chunked = (
            "content-length" not in names and status not in _NO_BODY and self.method != "HEAD"
        )
        if self.chunked:
            headers.append(("transfer-encoding", "chunked"))
        lines = [f"HTTP/1.1 {status} X\r\n"] + [f"{n}: {v}\r\n" for n, v in headers] + ["\r\n"]
        self.stream.write("".join(lines).encode("latin-1"))
        if end:
            await self.send(b"", end=True)

    async def send(self, data: bytes, end: bool = False) -> None:
        """Send response body bytes (the runtime waits for the relay's credit)."""
        if self.stream.closed:
            raise ConnectionResetError(f"stream {self.sid} closed")
        if data:
            self.stream.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
        if end:
            if self.chunked:
                self.stream.write(b"0\r\n\r\n")
            self.stream.end()
        await self.writable.wait()

    def reset(self, code: ErrorCode, reason: str = "") -> None:
        self.stream.reset(code, reason)


class _Hooks(tunnel.SessionHooks):
    def __init__(self, agent: FakeAgent) -> None:
        self.agent = agent

    def on_welcome(self, session: tunnel.Session, welcome: wire.Welcome) -> None:
        self.agent.welcome = welcome

    def on_opened(self, session: tunnel.Session, stream: tunnel.Stream) -> None:
        self.agent.opened(stream)

    def on_goaway(self, session: tunnel.Session, event: wire.GoAwayReceived) -> None:
        self.agent.goaways.append(event)

    def on_session_closed(self, session: tunnel.Session) -> None:
        self.agent.closed.set()


class FakeAgent:
    """A tunnel client for tests. Use ``async with FakeAgent(...) as agent``."""

    def __init__(
        self,
        relay_url: str,
        handler: Handler | None = None,
        *,
        token: str | None = None,
        name: str | None = None,
        query_name: bool = True,
        hello_name: str | bool | None = True,
        caller_auth: tuple[wire.CallerCredential, ...] = (),
        grant_credit: bool = True,
        ssl: ssl_module.SSLContext | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        pool: bool = False,
        tunnels: tuple[wire.TunnelRequest, ...] = (),
    ) -> None:
        self.relay_url = relay_url
        self.pool = pool  # HELLO's pool: join the name's pool
        self.tunnels = tunnels  # HELLO's extra tunnels (one connection, several names)
        self.headers = headers  # more upgrade request headers (X-Edge-Agent-Key...)
        self.handler = handler or _ok_handler
        self.token = token
        self.name = name
        self.query_name = query_name
        self.hello_name = hello_name
        self.caller_auth = caller_auth
        self.grant_credit = grant_credit
        self.ssl = ssl
        self.session = tunnel.Session(wire.Connection(wire.Role.AGENT), _Hooks(self))
        self.link: tunnel.WsLink | None = None
        self.welcome: wire.Welcome | None = None
        self.requests: list[FakeRequest] = []
        self.resets: dict[int, ErrorCode] = {}
        self.goaways: list[wire.GoAwayReceived] = []
        self.closed = asyncio.Event()
        self.request_seen = asyncio.Event()
        self.reset_seen = asyncio.Event()
        self._tasks: dict[int, asyncio.Task[None]] = {}

    @property
    def conn(self) -> wire.Connection:
        return self.session.conn

    @property
    def url(self) -> str:
        assert self.welcome is not None
        return self.welcome.urls[0]

    def connect_url(self) -> str:
        base = self.relay_url.replace("http://", "ws://").replace("https://", "wss://")
        url = f"{base}/_edge/connect"
        return f"{url}?name={self.name}" if self.name and self.query_name else url

    async def __aenter__(self) -> FakeAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, subprotocols: tuple[str, ...] = (wire.SUBPROTOCOL,)) -> None:
        headers = [("Authorization", f"Bearer {self.token}")] if self.token else []
        headers += self.headers
        self.link, _ = await tunnel.connect_link(
            self.connect_url(),
            headers=headers,
            ssl_context=self.ssl,
            open_timeout=5,
            subprotocols=subprotocols,
        )
        self.link.attach(self.session)
        hello_name = self.name if self.hello_name is True else self.hello_name
        hello = wire.Hello(
            hello_name or None,
            self.caller_auth,
            "fake-agent",
            pool=self.pool,
            tunnels=self.tunnels,
        )
        self.session.send_hello(hello)

    async def wait_welcome(self, within: float = 5.0) -> wire.Welcome:
        async with asyncio.timeout(within):
            while self.welcome is None:
                if self.closed.is_set():
                    raise ConnectionError("closed before WELCOME")
                await asyncio.sleep(0.01)
        return self.welcome

    async def stop(self) -> None:
        if self.link is not None:
            self.link.close(1000, "")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.link.closed), 2)
            self.link.abort()
        for task in list(self._tasks.values()):
            task.cancel()

    def flush(self) -> None:
        """Send frames a test queued on :attr:`conn` by hand."""
        self.session.kick()

    def send_raw(self, message: bytes) -> None:
        """Send an arbitrary WebSocket message, bypassing the protocol object."""
        assert self.link is not None
        if isinstance(message, str):
            self.link.send_text(message.encode())
        else:
            self.link.send([message])

    def pause_reading(self) -> None:
        """Stop reading the WebSocket (the relay's frames pile up)."""
        assert self.link is not None and self.link.transport is not None
        self.link.transport.pause_reading()

    def resume_reading(self) -> None:
        assert self.link is not None and self.link.transport is not None
        self.link.transport.resume_reading()

    def release_credit(self) -> None:
        """Return the credit of every held request byte (after ``grant_credit=False``)."""
        self.grant_credit = True
        for request in self.requests:
            request.stream.resume_reading()

    @property
    def close_code(self) -> int | None:
        if self.link is None:
            return None
        return self.link.close_code

    def opened(self, stream: tunnel.Stream) -> None:
        request = FakeRequest(self, stream)
        stream.handler = request
        self.requests.append(request)
        self._tasks[stream.sid] = asyncio.get_running_loop().create_task(self._handle(request))

    def cancel(self, sid: int) -> None:
        task = self._tasks.pop(sid, None)
        if task is not None:
            task.cancel()

    async def _handle(self, request: FakeRequest) -> None:
        try:
            await request.head_seen.wait()
            self.request_seen.set()
            await self.handler(request)
        except (asyncio.CancelledError, ConnectionResetError):
            pass
        finally:
            self._tasks.pop(request.sid, None)


async def _ok_handler(request: FakeRequest) -> None:
    body = await request.read_body()
    await request.respond(200, [("content-type", "text/plain")])
    await request.send(b"ok " + request.method.encode() + b" " + request.target.encode(), end=False)
    await request.send(b" " + str(len(body)).encode(), end=True)
