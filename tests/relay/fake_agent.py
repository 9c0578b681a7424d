"""A small fake agent for the relay's tests: ``websockets`` + ``wire``, nothing else.

It stands in for the real agent (``edge_agent``), which is built in parallel against the
same contract and is never imported by the relay or its tests. It speaks the protocol
honestly (flow control included) unless a test asks otherwise: ``grant_credit=False``
stops returning credit for request bodies, and :meth:`FakeAgent.send_raw` puts arbitrary
bytes on the WebSocket, for the hostile-agent tests.

A test gives it a ``handler(request)`` coroutine; the handler answers with
``request.respond`` / ``request.send`` / ``request.reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

import wire
from wire import ErrorCode

Handler = Callable[["FakeRequest"], Awaitable[None]]


class FakeRequest:
    """One stream as the fake agent's handler sees it."""

    def __init__(self, agent: FakeAgent, event: wire.RequestReceived) -> None:
        self.agent = agent
        self.sid = event.stream_id
        self.method = event.head.method
        self.target = event.head.target
        self.headers = list(event.head.headers)
        self.body_queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.received = 0  # request body bytes that arrived (consumed or not)
        self.held = 0  # bytes not yet consumed (grant_credit=False)
        if event.end_stream:
            self.body_queue.put_nowait(None)

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    async def body_chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self.body_queue.get()) is not None:
            yield chunk

    async def read_body(self) -> bytes:
        return b"".join([c async for c in self.body_chunks()])

    async def respond(
        self, status: int, headers: list[tuple[str, str]] | None = None, end: bool = False
    ) -> None:
        self.agent.conn.send_response(
            self.sid, wire.ResponseHead(status, tuple(headers or ())), end
        )
        self.agent.flush()

    async def send(self, data: bytes, end: bool = False) -> None:
        """Send response body bytes, waiting for the relay's credit like a real agent."""
        conn = self.agent.conn
        view = memoryview(data)
        while view:
            n = conn.sendable(self.sid)
            if n == 0:
                if not conn.is_open(self.sid):
                    raise ConnectionResetError(f"stream {self.sid} closed")
                await self.agent.credit_changed()
                continue
            chunk = bytes(view[:n])
            conn.send_data(self.sid, chunk, end and len(chunk) == len(view))
            view = view[len(chunk) :]
            self.agent.flush()
        if end and not data:
            conn.send_data(self.sid, b"", True)
            self.agent.flush()

    def reset(self, code: ErrorCode, reason: str = "") -> None:
        self.agent.conn.send_reset(self.sid, code, reason)
        self.agent.flush()


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
        ssl: Any = None,
    ) -> None:
        self.relay_url = relay_url
        self.handler = handler or _ok_handler
        self.token = token
        self.name = name
        self.query_name = query_name
        self.hello_name = hello_name
        self.caller_auth = caller_auth
        self.grant_credit = grant_credit
        self.ssl = ssl
        self.conn = wire.Connection(wire.Role.AGENT)
        self.ws: ClientConnection | None = None
        self.welcome: wire.Welcome | None = None
        self.requests: list[FakeRequest] = []
        self.resets: dict[int, ErrorCode] = {}
        self.goaways: list[wire.GoAwayReceived] = []
        self.closed = asyncio.Event()
        self.request_seen = asyncio.Event()
        self.reading = asyncio.Event()  # clear it to stop reading the WebSocket
        self.reading.set()
        self.reset_seen = asyncio.Event()
        self._streams: dict[int, tuple[FakeRequest, asyncio.Task[None]]] = {}
        self._credit = asyncio.Event()
        self._out: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

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

    async def start(self, subprotocol: bool = True) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.ws = await connect(
            self.connect_url(),
            subprotocols=[wire.SUBPROTOCOL] if subprotocol else None,  # type: ignore[list-item]
            additional_headers=headers,
            compression=None,
            max_size=wire.MAX_FRAME_SIZE,
            open_timeout=5,
            ping_interval=20,
            ping_timeout=20,
            ssl=self.ssl,
        )
        self._tasks.append(asyncio.create_task(self._write()))
        hello_name = self.name if self.hello_name is True else self.hello_name
        self.conn.send_hello(wire.Hello(hello_name or None, self.caller_auth, "fake-agent"))
        self.flush()
        self._tasks.append(asyncio.create_task(self._read()))

    async def wait_welcome(self, within: float = 5.0) -> wire.Welcome:
        async with asyncio.timeout(within):
            while self.welcome is None:
                if self.closed.is_set():
                    raise ConnectionError("closed before WELCOME")
                await asyncio.sleep(0.01)
        return self.welcome

    async def stop(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        for task in self._tasks + [t for _, t in self._streams.values()]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def flush(self) -> None:
        for message in self.conn.data_to_send():
            self._out.put_nowait(message)

    def send_raw(self, message: bytes) -> None:
        """Queue an arbitrary WebSocket message, bypassing the protocol object."""
        self._out.put_nowait(message)

    async def credit_changed(self) -> None:
        self._credit.clear()
        await self._credit.wait()

    def release_credit(self) -> None:
        """Consume every held request-body byte (after ``grant_credit=False``)."""
        self.grant_credit = True
        for request, _ in self._streams.values():
            if request.held:
                self.conn.consumed(request.sid, request.held)
                request.held = 0
        self.flush()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code if self.ws is not None else None

    async def _write(self) -> None:
        assert self.ws is not None
        while True:
            message = await self._out.get()
            await self.ws.send(message)

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            while True:
                await self.reading.wait()
                message = await self.ws.recv()
                assert isinstance(message, bytes)
                for event in self.conn.receive(message):
                    self._on_event(event)
                self.flush()
        except Exception:  # the connection ended; tests look at close_code / goaways
            pass
        finally:
            self.closed.set()
            self._credit.set()

    def _on_event(self, event: Any) -> None:
        if isinstance(event, wire.WelcomeReceived):
            self.welcome = event.welcome
        elif isinstance(event, wire.RequestReceived):
            request = FakeRequest(self, event)
            self.requests.append(request)
            task = asyncio.create_task(self._handle(request))
            self._streams[event.stream_id] = (request, task)
            self.request_seen.set()
        elif isinstance(event, wire.DataReceived):
            self._on_data(event)
        elif isinstance(event, wire.StreamReset):
            self.resets[event.stream_id] = event.code
            self.reset_seen.set()
            entry = self._streams.pop(event.stream_id, None)
            if entry is not None:
                entry[1].cancel()
        elif isinstance(event, wire.WindowUpdated):
            self._credit.set()
        elif isinstance(event, wire.GoAwayReceived):
            self.goaways.append(event)

    def _on_data(self, event: wire.DataReceived) -> None:
        entry = self._streams.get(event.stream_id)
        if entry is None:
            self.conn.consumed(event.stream_id, len(event.data))
            return
        request = entry[0]
        request.received += len(event.data)
        if event.data:
            request.body_queue.put_nowait(event.data)
            if self.grant_credit:
                self.conn.consumed(event.stream_id, len(event.data))
            else:
                request.held += len(event.data)
        if event.end_stream:
            request.body_queue.put_nowait(None)

    async def _handle(self, request: FakeRequest) -> None:
        try:
            await self.handler(request)
        except (asyncio.CancelledError, ConnectionResetError):
            pass
        finally:
            self._streams.pop(request.sid, None)


async def _ok_handler(request: FakeRequest) -> None:
    body = await request.read_body()
    await request.respond(200, [("content-type", "text/plain")])
    await request.send(b"ok " + request.method.encode() + b" " + request.target.encode(), end=False)
    await request.send(b" " + str(len(body)).encode(), end=True)
