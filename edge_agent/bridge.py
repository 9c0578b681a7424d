"""ObjectBridge: an in-memory HTTP/1.1 server over a v2 stream, for Targets that need objects.

Most v2 streams are piped as bytes (:mod:`edge_agent.forward`). Some targets work on
message objects instead: the in-process ASGI app (:class:`edge_agent.asgi.AsgiTarget`)
and the Molecule wrappers (de-duplication, pause gate, inbound-secret check), which take
a :class:`~edge_agent.target.LocalRequest` and return a
:class:`~edge_agent.target.LocalResponse`. The bridge turns the stream's request bytes
into the one, and the other into response bytes.

Request: parsed with httptools (method, raw target, headers as latin-1 pairs, body
streamed as it comes). The body holds at most
:data:`~edge_agent.bridge_io.BODY_BUFFER` bytes the Target has not consumed, plus one
window: past it the stream's reading pauses, and resumes as the Target takes chunks.
A FIN (or an abort) before the body's end makes the body raise
:class:`~edge_agent.errors.RequestAborted`, never look complete.

Response: status line, the Target's headers minus hop-by-hop ones, then the body with
its Content-Length when the Target gave one, else chunked (close-delimited, with the
CLOSE flag, for an HTTP/1.0 request). HEAD, 1xx, 204 and 304 responses carry no body.
``Connection: close`` is added, and the stream ended with CLOSE, when the request did
not keep the connection alive. Writes wait while the runtime says the stream is over its
high mark (``pause_writing``).

Errors: a :class:`~edge_agent.errors.TargetError` before the first response byte resets
the stream with its code (CONNECT_ERROR, TARGET_TIMEOUT, UNAVAILABLE, ...), after it
TARGET_ERROR, as do a body shorter or longer than its Content-Length and any other
exception (logged). ``aborted()`` cancels the Target's work: ``handle()`` if it has not
returned, else the body iterator is closed and ``LocalResponse.close`` awaited.

WebSocket: a ``GET`` asking for ``Upgrade: websocket`` goes to the Target's
``websocket(request, stream, on_close)`` when it has one (:class:`WebSocketTarget`, the
ASGI app's ``websocket`` scope, and the wrappers that pass it on); the handler it returns
takes the stream over, and the exchange is recorded when the socket closes. A Target
without it, or whose ``websocket`` returns None, gets the request as plain HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Final, Protocol, runtime_checkable

import httptools

from edge_agent.bridge_io import RequestBody, content_length, response_head
from edge_agent.errors import RequestAborted, TargetError, TargetFailed
from edge_agent.headers import header_value, strip_hop_by_hop
from edge_agent.port import ExchangeRecord, StreamHandler, StreamPort
from edge_agent.target import EmptyBody, LocalRequest, LocalResponse, Target, close_response
from wire import ErrorCode

logger = logging.getLogger(__name__)

#: Longest request head (line + headers) accepted. The relay limits heads already; a
#: longer one is reset as TARGET_ERROR.
MAX_HEAD: Final = 64 * 1024

_NO_BODY_STATUS: Final = frozenset({204, 304})


#: ``on_close(status, bytes_out, error, reset)`` of a WebSocket: called once when it is over.
WebSocketClosed = Callable[[int | None, int, str | None, ErrorCode | None], None]


@runtime_checkable
class WebSocketTarget(Protocol):
    """A Target that serves WebSocket upgrades itself (see the module docstring)."""

    def websocket(
        self, request: LocalRequest, stream: StreamPort, on_close: WebSocketClosed
    ) -> StreamHandler | None:
        """The handler that takes ``stream`` over, or None: serve it as plain HTTP."""
        ...


def delegate_websocket(
    inner: Target, request: LocalRequest, stream: StreamPort, on_close: WebSocketClosed
) -> StreamHandler | None:
    """What a wrapper's ``websocket`` does to pass an upgrade on to the Target it wraps."""
    if isinstance(inner, WebSocketTarget):
        return inner.websocket(request, stream, on_close)
    return None


class _StreamGone(Exception):
    """The stream was reset or aborted while the Target was still answering."""


class ObjectBridge:
    """Makes the :class:`StreamHandler` of each v2 stream bound for ``target``.

    Args:
        target: the object Target (an AsgiTarget, or a Molecule wrapper around one).
        on_done: called with an :class:`ExchangeRecord` once per stream.
    """

    def __init__(
        self, target: Target, *, on_done: Callable[[ExchangeRecord], None] | None = None
    ) -> None:
        self.target = target
        self.on_done = on_done

    def handler(self, stream: StreamPort) -> StreamHandler:
        return _Exchange(self, stream)

    async def aclose(self) -> None:
        await self.target.aclose()


class _Exchange:
    """One stream: the request parsed, the Target called, the response written."""

    def __init__(self, bridge: ObjectBridge, stream: StreamPort) -> None:
        self.bridge = bridge
        self.stream = stream
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.head_size = 0
        self.framed = False  # Content-Length or Transfer-Encoding: the request has a body
        self.body = RequestBody(stream)
        self.parsed = False  # the whole request message was read
        self.method = ""
        self.keep_alive = True
        self.version = "1.1"
        self.task: asyncio.Task[None] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.sent = 0  # response bytes written
        self.bytes_in = 0
        self.status: int | None = None
        self.over = False  # ended, reset or aborted: nothing more goes to the stream
        self.error: str | None = None
        self.reset: ErrorCode | None = None
        self.recorded = False
        self.started = time.monotonic()
        self.ws: StreamHandler | None = None  # the WebSocket that took the stream over

    # -- StreamHandler ----------------------------------------------------------------

    def data(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.ws is not None:
            self.ws.data(data)
            return
        if self.parsed or self.over:
            return  # bytes after the request (an upgrade's, or garbage): not ours
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # on_message_complete has run; what follows the head is the WebSocket's
            # (frames a client sent early), else not forwarded
            if self.ws is not None and len(data) > exc.args[0]:
                self.ws.data(data[exc.args[0] :])
        except (httptools.HttpParserError, TargetFailed) as exc:
            self._fail(ErrorCode.TARGET_ERROR, f"invalid request bytes: {exc}")

    def end(self, close: bool) -> None:
        if self.ws is not None:
            self.ws.end(close)
            return
        if not self.parsed:
            self.body.end(RequestAborted("the request ended before its body was complete"))
            if self.task is None:
                self._fail(ErrorCode.TARGET_ERROR, "the request ended before its head")

    def aborted(self, code: ErrorCode, reason: str) -> None:
        if self.ws is not None:
            self.ws.aborted(code, reason)
            return
        self.over = True
        self.error = self.error or f"aborted by the relay: {code.name} {reason}".rstrip()
        self.reset = self.reset or code
        self.body.end(RequestAborted("the request was aborted"), stream_open=False)
        if self.task is not None:
            self.task.cancel()
        else:
            self._record()

    def pause_writing(self) -> None:
        self.writable.clear()
        if self.ws is not None:
            self.ws.pause_writing()

    def resume_writing(self) -> None:
        self.writable.set()
        if self.ws is not None:
            self.ws.resume_writing()

    # -- httptools callbacks ------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        lname = name.lower()
        if lname == b"content-length" or lname == b"transfer-encoding":
            self.framed = True
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.method = self.parser.get_method().decode("latin-1")
        self.version = self.parser.get_http_version()
        self.keep_alive = self.parser.should_keep_alive()
        body: AsyncIterator[bytes] = self.body if self.framed else EmptyBody()
        request = LocalRequest(
            self.stream.sid, self.method, self.url.decode("latin-1"), self.headers, body
        )
        target = self.bridge.target
        if self._opens_websocket() and isinstance(target, WebSocketTarget):
            self.ws = target.websocket(request, self.stream, self._websocket_closed)
            if self.ws is not None:
                self.over = True  # the bridge writes nothing more: the WebSocket does
                return
        self.task = asyncio.get_running_loop().create_task(self._run(request))

    def _opens_websocket(self) -> bool:
        upgrade = header_value(self.headers, "upgrade") or ""
        return (
            self.method == "GET"
            and self.parser.should_upgrade()
            and upgrade.strip().lower() == "websocket"
        )

    def _websocket_closed(
        self, status: int | None, sent: int, error: str | None, reset: ErrorCode | None
    ) -> None:
        self.status, self.sent, self.error, self.reset = status, sent, error, reset
        self._record()

    def on_body(self, body: bytes) -> None:
        self.body.feed(body)

    def on_message_complete(self) -> None:
        self.parsed = True
        self.body.end()

    def _count(self, n: int) -> None:
        self.head_size += n
        if self.head_size > MAX_HEAD:
            raise TargetFailed("request head too long")

    # -- the Target's side ----------------------------------------------------------------

    async def _run(self, request: LocalRequest) -> None:
        try:
            response = await self.bridge.target.handle(request)
            await self._respond(response)
        except _StreamGone:
            pass  # reset or aborted while the Target was answering: nothing to send
        except TargetError as exc:
            code = exc.code if self.sent == 0 else ErrorCode.TARGET_ERROR
            self._fail(code, str(exc))
        except Exception as exc:  # a bug in a Target must not take the session down
            logger.exception("target_error", extra={"stream_id": self.stream.sid})
            self._fail(ErrorCode.TARGET_ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            self.body.end(RequestAborted("the exchange is over"))
            self._record()

    async def _respond(self, response: LocalResponse) -> None:
        try:
            await self._send_response(response)
        finally:
            await close_response(response)

    async def _send_response(self, response: LocalResponse) -> None:
        self.status = response.status
        headers = strip_hop_by_hop(response.headers)
        length = content_length(headers)
        no_body = (
            self.method == "HEAD" or response.status < 200 or response.status in _NO_BODY_STATUS
        )
        chunked = not no_body and length is None and self.version == "1.1"
        close = not self.keep_alive or (not no_body and length is None and not chunked)
        self._write(response_head(response.status, headers, chunked, close))
        if no_body:
            self._end(close)
            return
        sent = 0
        async for chunk in response.body:
            if chunk:
                sent += len(chunk)
                if not self.writable.is_set():
                    await self.writable.wait()
                self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        if length is not None and sent != length:
            raise TargetFailed(f"response body of {sent} bytes, Content-Length {length}")
        if chunked:
            self._write(b"0\r\n\r\n")
        self._end(close)

    def _write(self, data: bytes) -> None:
        if self.over:
            raise _StreamGone()
        self.sent += len(data)
        self.stream.write(data)

    def _end(self, close: bool) -> None:
        if not self.over:
            self.over = True
            self.stream.end(close=close)

    def _fail(self, code: ErrorCode, reason: str) -> None:
        self.error = self.error or reason
        self.reset = self.reset or code
        if not self.over:
            self.over = True
            self.stream.reset(code, reason[:200], after_queued=True)
            logger.info(
                "stream_reset",
                extra={"stream_id": self.stream.sid, "code": code.name, "error": reason[:200]},
            )
        self.parsed = True
        self.body.end(RequestAborted("the stream was reset"), stream_open=False)
        if self.task is None:
            self._record()
        elif self.task is not asyncio.current_task():
            self.task.cancel()

    def _record(self) -> None:
        on_done = self.bridge.on_done
        if on_done is not None and not self.recorded:
            self.recorded = True
            on_done(
                ExchangeRecord(
                    self.stream.sid,
                    self.method,
                    self.url.decode("latin-1"),
                    self.status,
                    (time.monotonic() - self.started) * 1000.0,
                    self.bytes_in,
                    self.sent,
                    self.error,
                    self.reset,
                )
            )
