"""One tunnelled request on the agent: request body in, Target call, response out.

The session's reader feeds :class:`RequestBody` (never waiting); a :class:`Stream`
task calls the Target and pumps the response with flow control. Credit for request
bytes is returned (``conn.consumed``) only when the Target asks for the next chunk, so
a target that reads slowly stops the relay after one window: memory stays bounded by
the windows, not by the body size.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Final

from edge_agent.errors import RequestAborted, TargetError, TargetFailed, TunnelError
from edge_agent.inspect import tap
from edge_agent.target import EmptyBody, LocalRequest, LocalResponse, Target
from edge_agent.writer import Writer
from wire import (
    Connection,
    ErrorCode,
    LocalProtocolError,
    RequestHead,
    ResponseHead,
    StreamClosedError,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class RequestRecord:
    """What one stream did, for request lines and metrics (``on_request`` hook)."""

    stream_id: int
    method: str
    target: str
    status: int | None  # response status, None if no head was sent
    reset: ErrorCode | None  # RESET code if the stream was aborted (either side)
    duration_ms: float
    bytes_in: int  # request body bytes
    bytes_out: int  # response body bytes


class RequestBody:
    """The request body as an async iterator, fed by the session reader.

    Holds at most what the relay may send within the stream's window. Credit for a
    chunk goes back when the consumer asks for the next one (or on :meth:`close`).
    """

    def __init__(self, refund: Callable[[int], None]) -> None:
        self._refund = refund
        self._chunks: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._ended = False
        self._closed = False
        self._held = 0  # size of the chunk last handed out, not yet refunded
        self.received = 0

    def feed(self, data: bytes, end: bool) -> None:
        """Reader side: append a DATA payload (never waits)."""
        self.received += len(data)
        if self._closed:
            if data:
                self._refund(len(data))  # nobody reads it any more: drop, keep credit flowing
            return
        if data:
            self._chunks.append(data)
        self._ended = self._ended or end
        self._ready.set()

    def __aiter__(self) -> RequestBody:
        return self

    async def __anext__(self) -> bytes:
        """The next chunk. Raises RequestAborted once closed before the relay's FIN."""
        self._release()
        while not self._chunks:
            if self._ended:
                raise StopAsyncIteration
            if self._closed:
                raise RequestAborted("the request body was cut off (stream reset)")
            self._ready.clear()
            await self._ready.wait()
        chunk = self._chunks.popleft()
        self._held = len(chunk)
        return chunk

    def close(self) -> None:
        """Drop what is buffered (refunding it); later DATA is refunded on arrival."""
        self._closed = True
        self._release()
        dropped = sum(map(len, self._chunks))
        self._chunks.clear()
        if dropped:
            self._refund(dropped)
        self._ready.set()

    def _release(self) -> None:
        if self._held:
            held, self._held = self._held, 0
            self._refund(held)


#: Response chunks at least this large wait until the writer handed them to the
#: WebSocket before the next one is read: backpressure, and fairness between streams (a
#: bulk stream has one frame queued at a time, so other streams' frames go out between
#: its frames). Smaller chunks are queued and the writer is kicked without waiting;
#: their number is bounded by the stream's send window.
FLUSH_AT: Final = 16 * 1024


class _StreamGone(Exception):
    """The stream closed under us (RESET crossed our frames); stop quietly."""


class Stream:
    """Runs one request: ``handle()``, then the response pumped with flow control."""

    def __init__(
        self, conn: Connection, writer: Writer, stream_id: int, head: RequestHead, end: bool
    ) -> None:
        self.conn = conn
        self.writer = writer
        self.stream_id = stream_id
        self.head = head
        self.window = asyncio.Event()  # set when credit may have grown
        self.reset_code: ErrorCode | None = None
        self.status: int | None = None
        self.bytes_out = 0
        self.started = time.monotonic()
        self.body = RequestBody(self._refund)
        if end:
            self.body.feed(b"", True)
        self.request_body: AsyncIterator[bytes] = EmptyBody() if end else self.body

    def _refund(self, n: int) -> None:
        self.conn.consumed(self.stream_id, n)
        self.writer.kick()

    def cancel_by_peer(self, code: ErrorCode, task: asyncio.Task[None]) -> None:
        """The relay RESET the stream: remember why and cancel the task."""
        self.reset_code = code
        task.cancel()

    def record(self) -> RequestRecord:
        return RequestRecord(
            self.stream_id,
            self.head.method,
            self.head.target,
            self.status,
            self.reset_code,
            (time.monotonic() - self.started) * 1000.0,
            self.body.received,
            self.bytes_out,
        )

    async def run(self, target: Target) -> None:
        """Serve the request; never raises except CancelledError."""
        request = LocalRequest(
            self.stream_id,
            self.head.method,
            self.head.target,
            list(self.head.headers),
            self.request_body,
        )
        try:
            response = await tap.handle(target, request)  # target.handle, or observed
            await self._respond(response)
        except TargetError as exc:
            self._reset(exc.code if self.status is None else ErrorCode.TARGET_ERROR, exc)
        except (_StreamGone, TunnelError):
            pass  # reset by the relay, or the session is closing: nothing to send
        except Exception as exc:  # a bug in a Target wrapper must not take the session down
            logger.exception("target_error", extra={"stream_id": self.stream_id})
            self._reset(ErrorCode.TARGET_ERROR, exc)
        finally:
            self.body.close()

    async def _respond(self, response: LocalResponse) -> None:
        try:
            self._send_head(response)
            async for chunk in response.body:
                if chunk:
                    await self._send(chunk)
            try:
                self.conn.send_data(self.stream_id, b"", end_stream=True)
            except StreamClosedError:
                raise _StreamGone() from None
            self.writer.kick()
        finally:
            aclose = getattr(response.body, "aclose", None)
            if aclose is not None:
                await aclose()
            if response.close is not None:
                await response.close()

    def _send_head(self, response: LocalResponse) -> None:
        head = ResponseHead(response.status, tuple(response.headers))
        try:
            self.conn.send_response(self.stream_id, head)
        except StreamClosedError:
            raise _StreamGone() from None
        except LocalProtocolError as exc:  # checked as the relay would: the session is fine
            raise TargetFailed(f"invalid response head from the target: {exc}") from None
        self.status = response.status
        self.writer.kick()

    async def _send(self, chunk: bytes) -> None:
        if len(chunk) <= self.conn.sendable(self.stream_id) and len(chunk) < FLUSH_AT:
            # The common small case (an SSE event, a small body): no copy, no wait for
            # the writer, so the END that follows can ride on this frame (one fewer).
            self._send_frame(chunk)
            self.writer.kick()
            return
        view = memoryview(chunk)
        while view:
            n = min(await self._credit(), len(view))
            self._send_frame(chunk if n == len(chunk) else view[:n])
            view = view[n:]
            await self.writer.flush()

    def _send_frame(self, data: bytes | memoryview) -> None:
        try:
            self.conn.send_data(self.stream_id, bytes(data) if type(data) is not bytes else data)
        except StreamClosedError:
            raise _StreamGone() from None
        self.bytes_out += len(data)

    async def _credit(self) -> int:
        """Wait until the stream may send; returns how many bytes."""
        while True:
            n = self.conn.sendable(self.stream_id)
            if n:
                return n
            if not self.conn.is_open(self.stream_id):
                raise _StreamGone()
            self.window.clear()
            await self.window.wait()

    def _reset(self, code: ErrorCode, exc: BaseException) -> None:
        if self.conn.is_open(self.stream_id):
            self.reset_code = code
            self.conn.send_reset(self.stream_id, code, str(exc)[:200])
            self.writer.kick()
        logger.info(
            "stream_reset",
            extra={"stream_id": self.stream_id, "code": code.name, "error": str(exc)[:200]},
        )
