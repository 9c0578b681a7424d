"""AsgiTarget: serve tunnelled requests from an in-process ASGI app, without a socket.

Each request runs the app in a task of its own (a WebSocket upgrade too: see
:meth:`AsgiTarget.websocket` and :mod:`edge_agent.asgi_ws`). ``receive()`` is fed from the tunnel's
request body; ``send()`` chunks go through a bounded buffer to the response body
iterator, so an app that writes faster than the caller reads waits in ``send()``
(flow control reaches the app). When the stream is cancelled (the relay RESET it, the
caller left) ``receive()`` returns ``http.disconnect``, ``send()`` becomes a no-op (as
in uvicorn), and an app that ignores both is cancelled after ``disconnect_grace``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

from websockets.datastructures import Headers
from websockets.http11 import Request

from edge_agent.asgi_channel import Channel
from edge_agent.asgi_lifespan import AsgiApp, Lifespan, LifespanMode, Message, Receive, Send
from edge_agent.asgi_scope import build_scope, build_websocket_scope
from edge_agent.asgi_ws import DEFAULT_LIMITS, AsgiWebSocket, OnClose, WebSocketLimits
from edge_agent.errors import ConfigError, TargetFailed
from edge_agent.port import StreamHandler, StreamPort
from edge_agent.target import EmptyBody, LocalRequest, LocalResponse
from wire import MAX_PAYLOAD

#: Response bytes buffered between the app's ``send()`` and the tunnel; beyond this the
#: app waits in ``send()`` until the stream has credit again.
SEND_BUFFER: Final = 4 * MAX_PAYLOAD

#: Seconds an app may keep running after its caller disconnected before it is cancelled.
DISCONNECT_GRACE: Final = 5.0

_ERROR_BODY: Final = b"Internal Server Error"

logger = logging.getLogger(__name__)


def load_app(spec: str) -> AsgiApp:
    """Import ``module:attr`` (``attr`` may be dotted), uvicorn style."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"app must look like module:attr, got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import ASGI app {spec!r}: {exc}") from exc
    if not callable(obj):
        raise ConfigError(f"ASGI app {spec!r} is not callable")
    app: AsgiApp = obj
    return app


class AsgiTarget:
    """A :class:`edge_agent.target.Target` that calls an ASGI app in this process.

    Args:
        app: the ASGI callable, or a ``module:attr`` import string.
        lifespan: ``auto`` (run it if the app supports it), ``on`` or ``off``. Startup
            runs on :meth:`start`, or before the first request; shutdown on :meth:`aclose`.
        disconnect_grace: seconds an app may run on after a disconnect before cancellation.
        websocket_limits: message size, buffering and closing-handshake timeout of each
            WebSocket (:mod:`edge_agent.asgi_ws`); its ``disconnect_grace`` is this one's.
    """

    def __init__(
        self,
        app: AsgiApp | str,
        *,
        lifespan: LifespanMode = "auto",
        disconnect_grace: float = DISCONNECT_GRACE,
        websocket_limits: WebSocketLimits = DEFAULT_LIMITS,
    ) -> None:
        self.app = load_app(app) if isinstance(app, str) else app
        self.disconnect_grace = disconnect_grace
        self.websocket_limits = dataclasses.replace(
            websocket_limits, disconnect_grace=disconnect_grace
        )
        self._lifespan = Lifespan(self.app, lifespan)
        self._started: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Run lifespan startup once. Raises ConfigError if the app's startup fails."""
        if self._started is None:
            self._started = asyncio.create_task(self._lifespan.startup())
        await asyncio.shield(self._started)

    async def handle(self, request: LocalRequest) -> LocalResponse:
        await self.start()
        exchange = _Exchange(request, build_scope(request, self._lifespan.state))
        task = asyncio.create_task(exchange.run(self.app), name=f"asgi-{request.stream_id}")
        exchange.task, exchange.grace = task, self.disconnect_grace
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await exchange.response_head()
        except BaseException:
            exchange.abandon()
            raise

    def websocket(
        self, request: LocalRequest, stream: StreamPort, on_close: OnClose
    ) -> StreamHandler:
        """Serve an ``Upgrade: websocket`` request as the app's ``websocket`` scope; the
        returned handler takes the stream over (:mod:`edge_agent.asgi_ws`)."""
        handshake = Request(request.target, Headers(request.headers))
        ws = AsgiWebSocket(stream, handshake, on_close, self.websocket_limits)
        if not ws.valid:
            ws.reject_invalid()
            return ws

        async def call(receive: Receive, send: Send) -> None:
            await self.start()
            scope = build_websocket_scope(request, self._lifespan.state)
            await self.app(scope, receive, send)

        task = ws.start(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return ws

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._started is not None and self._started.done():
            await self._lifespan.shutdown()


class _Exchange:
    """One request/response cycle between the tunnel and the app."""

    def __init__(self, request: LocalRequest, scope: dict[str, Any]) -> None:
        self.request = request
        self.scope = scope
        self.head: asyncio.Future[LocalResponse] = asyncio.get_running_loop().create_future()
        self.channel = Channel(SEND_BUFFER)
        self.disconnected = asyncio.Event()
        self.body_done = isinstance(request.body, EmptyBody)
        self.complete = False
        self.first_receive = True
        self.task: asyncio.Task[None] | None = None
        self.grace = DISCONNECT_GRACE

    async def run(self, app: AsgiApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except Exception as exc:
            logger.exception("asgi_app_error", extra={"stream_id": self.request.stream_id})
            self._finish(TargetFailed(f"ASGI app raised {type(exc).__name__}"))
        else:
            self._finish(TargetFailed("ASGI app returned before completing its response"))
        finally:
            self.disconnected.set()  # the cycle is over: pending receive()s get disconnect

    def _finish(self, error: TargetFailed) -> None:
        if not self.head.done():  # uvicorn answers 500 when the app fails before start
            self._start(500, [("content-type", "text/plain; charset=utf-8")])
            self.channel.put_nowait(_ERROR_BODY)
            self.channel.close()
        elif not self.complete:
            self.channel.close(error)

    async def response_head(self) -> LocalResponse:
        assert self.task is not None
        waiting: set[asyncio.Future[Any]] = {self.head, self.task}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        return await self.head  # run() always sets the head before the task ends

    async def receive(self) -> Message:
        if self.disconnected.is_set():
            return {"type": "http.disconnect"}
        if self.body_done:
            if self.first_receive:
                self.first_receive = False
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.disconnected.wait()
            return {"type": "http.disconnect"}
        self.first_receive = False
        chunk = await self._next_chunk()
        if chunk is None:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": not self.body_done}

    async def _next_chunk(self) -> bytes | None:
        """The next body chunk (b"" at the end), or None if the caller disconnected first."""
        get = asyncio.ensure_future(anext(self.request.body, None))
        gone = asyncio.ensure_future(self.disconnected.wait())
        try:
            await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not get.done():
                get.cancel()
        if not get.done() or get.cancelled() or get.exception() is not None:
            return None  # the caller went away, or the body was cut off: a disconnect
        chunk = get.result()
        if chunk is None:
            self.body_done = True
            return b""
        return chunk

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.disconnected.is_set():
                return  # the stream was abandoned before the app answered
            if self.head.done():
                raise RuntimeError("http.response.start sent twice")
            raw = message.get("headers", [])
            self._start(
                message["status"], [(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw]
            )
        elif kind == "http.response.body":
            await self._send_body(message)
        else:  # as uvicorn: no extensions are advertised, so nothing else is valid
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    async def _send_body(self, message: Message) -> None:
        if not self.head.done():
            raise RuntimeError("http.response.body sent before http.response.start")
        if self.disconnected.is_set() or self.complete:
            return  # uvicorn ignores writes to a gone caller; the app learns via receive()
        body = message.get("body", b"")
        if body:
            await self.channel.put(bytes(body))
        if not message.get("more_body", False):
            self.complete = True
            self.channel.close()
            self.disconnected.set()  # as uvicorn: receive() reports disconnect once complete

    def _start(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.head.set_result(LocalResponse(status, headers, self._body(), self._close))

    async def _body(self) -> AsyncIterator[bytes]:
        while (chunk := await self.channel.get()) is not None:
            yield chunk

    async def _close(self) -> None:
        if not self.channel.drained:
            self.abandon()

    def abandon(self) -> None:
        """The stream is gone: report a disconnect, cancel the app after the grace time."""
        self.disconnected.set()
        self.channel.close(TargetFailed("caller disconnected"))
        self.head.cancel()
        task = self.task
        if task is not None and not task.done():
            timer = asyncio.get_running_loop().call_later(self.grace, task.cancel)
            task.add_done_callback(lambda _: timer.cancel())
