"""Forwarding one public request down an agent's tunnel, and its answer back.

Two tasks per request:

* the **pump** reads the caller (ASGI ``receive``): the body, only while the stream has
  credit (so a slow agent slows the caller down instead of filling the relay's memory),
  then keeps watching, because uvicorn reports a caller that went away only through
  ``receive()`` -> ``http.disconnect``; that resets the stream with CANCEL so the agent
  cancels the local request;
* the **responder** (the request's own task) waits for the agent's response head (up to
  the response timeout), then passes every DATA frame to the caller as one
  ``http.response.body`` as soon as it arrives (no buffering), and returns each
  frame's credit once uvicorn took it, so credit flows back at the caller's pace.

Errors before the response head are raised as :class:`relay.errors.PublicError` and
answered by the app. After the head, a failure cuts the response: the app returns without
finishing it and uvicorn closes the connection, so the caller sees a definite error rather
than a clean end of body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import wire
from relay.asgi import Receive, Send
from relay.errors import (
    BodyTooLarge,
    PublicError,
    RequestTimeout,
    ResponseTimeout,
    TargetFailed,
    error_for_reset,
)
from relay.headers import response_headers
from relay.metrics import Metrics
from relay.session import AgentSession
from relay.stream import ProxyStream

log = logging.getLogger(__name__)

#: Status recorded (metrics) for a request whose caller left before any answer.
CALLER_GONE: Final = 499

#: Seconds after which a request without a body starts watching its caller for a
#: disconnect. Most exchanges end sooner, and the watcher (a task, two ``receive()``
#: calls and a cancellation) was a tenth of the relay's CPU per small request; a caller
#: that leaves a long response (SSE, a slow target) is noticed this much later.
WATCH_AFTER: Final = 0.05


class Exchange:
    """One request/response exchange over an open stream.

    Args:
        max_body: request body limit (413 beyond it).
        response_timeout: seconds to wait for the response head (504 beyond it).
        body_idle_timeout: seconds the caller's body may stay silent (408 beyond it).
    """

    def __init__(
        self,
        session: AgentSession,
        stream: ProxyStream,
        receive: Receive,
        send: Send,
        metrics: Metrics,
        *,
        max_body: int,
        response_timeout: float,
        body_idle_timeout: float,
    ) -> None:
        self.session = session
        self.stream = stream
        self.receive = receive
        self.send = send
        self.metrics = metrics
        self.max_body = max_body
        self.response_timeout = response_timeout
        self.body_idle_timeout = body_idle_timeout
        self.body_done = False
        self._pump_task: asyncio.Task[None] | None = None

    async def run(self, request_has_body: bool) -> int:
        """Forward until the exchange ends. Returns the status sent (499: caller gone).

        Raises PublicError when the exchange failed before the response head.
        """
        self.body_done = not request_has_body
        loop = asyncio.get_running_loop()
        watch: asyncio.TimerHandle | None = None
        if request_has_body:
            self._start_pump()
        else:
            watch = loop.call_later(WATCH_AFTER, self._start_pump)
        try:
            head = await self._wait_head()
            return await self._respond(head)
        finally:
            if watch is not None:
                watch.cancel()
            pump = self._pump_task
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
            self.session.finish(self.stream)

    def _start_pump(self) -> None:
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    # -- the caller -> agent side ---------------------------------------------------------

    async def _pump(self) -> None:
        if not self.body_done:
            await self._pump_body()
        while not self.stream.dead:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.stream.mark_caller_gone()

    async def _pump_body(self) -> None:
        received = 0
        while not self.stream.dead:
            try:
                async with asyncio.timeout(self.body_idle_timeout):
                    message = await self.receive()
            except TimeoutError:
                self.stream.fail_local(RequestTimeout("the request body stalled"))
                return
            if message["type"] == "http.disconnect":
                self.stream.mark_caller_gone()
                return
            body: bytes = message.get("body", b"")
            more: bool = message.get("more_body", False)
            received += len(body)
            if received > self.max_body:
                self.stream.fail_local(BodyTooLarge())
                return
            self.metrics.bytes_in += len(body)
            await self._send_body(body, end_stream=not more)
            if not more:
                self.body_done = True
                return

    async def _send_body(self, body: bytes, end_stream: bool) -> None:
        """Send ``body`` as DATA frames, each within the credit the agent granted."""
        view = memoryview(body)
        offset = 0
        while not self.stream.dead:
            if offset == len(body) and not end_stream:
                return
            await self.session.wait_writable()
            n = self.session.sendable(self.stream)
            if n == 0 and offset < len(body):
                await self.session.wait_credit(self.stream)
                continue
            chunk = bytes(view[offset : offset + n])
            offset += len(chunk)
            last = end_stream and offset == len(body)
            self.session.send_data(self.stream, chunk, last)
            if last:
                return

    # -- the agent -> caller side ------------------------------------------------------

    async def _wait_head(self) -> wire.ResponseHead:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.response_timeout
        stream = self.stream
        while stream.head is None:
            self._raise_if_dead()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ResponseTimeout()
            await stream.changed(remaining)
        return stream.head

    def _raise_if_dead(self) -> None:
        stream = self.stream
        if stream.caller_gone:
            raise _CallerGone()
        if stream.local_error is not None:
            raise stream.local_error
        if stream.reset is not None:
            raise error_for_reset(stream.reset[0])

    async def _respond(self, head: wire.ResponseHead) -> int:
        headers = response_headers(head)
        await self.send({"type": "http.response.start", "status": head.status, "headers": headers})
        try:
            await self._stream_body()
        except (_CallerGone, PublicError, RuntimeError) as exc:
            # RuntimeError: uvicorn refused the body (length differs from Content-Length).
            self._log_abort(exc)
        return head.status

    async def _stream_body(self) -> None:
        stream = self.stream
        while True:
            if stream.caller_gone:
                raise _CallerGone()
            pieces = stream.take()
            if pieces:
                # FIN already received: these are the last bytes, and the last piece
                # ends the response (no extra empty body message).
                last = stream.fin
                await self._deliver(pieces, last)
                if last:
                    return
                continue
            if stream.fin:
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            self._raise_if_dead()
            await stream.changed()

    async def _deliver(self, pieces: list[bytes], last: bool = False) -> None:
        owed = sum(len(p) for p in pieces)
        final = len(pieces) - 1 if last else -1
        try:
            for i, piece in enumerate(pieces):
                more = i != final
                await self.send({"type": "http.response.body", "body": piece, "more_body": more})
                owed -= len(piece)
                self.metrics.bytes_out += len(piece)
                self.session.consumed(self.stream, len(piece))
        finally:
            self.session.consumed(self.stream, owed)

    def _log_abort(self, exc: BaseException) -> None:
        if isinstance(exc, _CallerGone):
            return
        log.info(
            "response_aborted",
            extra={"agent": self.session.name, "stream": self.stream.sid, "detail": str(exc)},
        )
        if isinstance(exc, RuntimeError):
            self.stream.fail_local(TargetFailed("response body did not match its length"))


class _CallerGone(Exception):
    """The public caller disconnected; nothing more can be sent to it."""


async def open_and_forward(
    session: AgentSession,
    head: wire.RequestHead,
    body: bool,
    receive: Receive,
    send: Send,
    metrics: Metrics,
    *,
    max_body: int,
    response_timeout: float,
    body_idle_timeout: float,
) -> int:
    """Open a stream for ``head`` and run the exchange. Returns the status sent.

    Raises PublicError for anything that goes wrong before the response head.
    """
    stream = session.open_stream(head, end_stream=not body)
    log_stream = log.isEnabledFor(logging.DEBUG)
    if log_stream:
        log.debug("stream_opened", extra={"agent": session.name, "stream": stream.sid})
    exchange = Exchange(
        session,
        stream,
        receive,
        send,
        metrics,
        max_body=max_body,
        response_timeout=response_timeout,
        body_idle_timeout=body_idle_timeout,
    )
    try:
        return await exchange.run(body)
    except _CallerGone:
        return CALLER_GONE
    finally:
        if log_stream:
            log.debug("stream_closed", extra={"agent": session.name, "stream": stream.sid})
