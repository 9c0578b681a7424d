"""The relay's side of one tunnelled request: what the agent sent, waiting for the caller.

A :class:`ProxyStream` is filled by the session's reader (``on_*`` methods: synchronous,
never blocking, never awaiting the caller) and drained by the request's forwarder
(:meth:`ProxyStream.changed`, :meth:`ProxyStream.take`). That split is what keeps one
slow caller from stalling the agent's other streams: the reader only appends.

Memory: buffered response bytes are bounded by the receive window the relay granted
(``wire`` raises FlowControlError beyond it), and the number of buffered pieces is
bounded too, because small pieces are merged (a peer sending 1-byte DATA frames costs a
byte each, not an object each).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Final

from relay.errors import PublicError
from wire import MAX_PAYLOAD, ErrorCode, ResponseHead

#: DATA smaller than this is merged into the previous small piece while the caller has
#: not drained it yet. When the caller keeps up, every DATA frame still becomes its own
#: ``http.response.body`` (SSE events are flushed one by one).
SMALL_PIECE: Final = 16 * 1024


class ProxyStream:
    """State of stream ``sid`` as the forwarder sees it."""

    __slots__ = (
        "_changed",
        "buffered",
        "caller_gone",
        "chunks",
        "credit",
        "fin",
        "head",
        "head_fin",
        "local_error",
        "reset",
        "sid",
    )

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.head: ResponseHead | None = None
        self.head_fin = False  # the head itself ended the response (no body)
        self.chunks: collections.deque[bytes | bytearray] = collections.deque()
        self.buffered = 0  # bytes received from the agent, not yet given to the caller
        self.fin = False  # the agent's response half is complete
        self.reset: tuple[ErrorCode, str] | None = None  # the agent reset it / session lost
        self.caller_gone = False
        self.local_error: PublicError | None = None  # the relay gave up (limit, timeout)
        self._changed = asyncio.Event()
        self.credit = asyncio.Event()  # set when send credit may have grown

    @property
    def dead(self) -> bool:
        """Nothing more will be sent or delivered on this stream."""
        return self.reset is not None or self.caller_gone or self.local_error is not None

    # -- the session reader's side ---------------------------------------------------------

    def on_response(self, head: ResponseHead, fin: bool) -> None:
        self.head = head
        self.head_fin = self.fin = fin
        self._changed.set()

    def on_data(self, data: bytes, fin: bool) -> None:
        if data:
            self._append(data)
        if fin:
            self.fin = True
        self._changed.set()

    def on_reset(self, code: ErrorCode, reason: str) -> int:
        """The stream is gone. Returns the buffered bytes dropped (refund their credit).

        A response that already ended (FIN received) is complete: it stays buffered for
        the caller. (An agent that drains closes its WebSocket right after its last
        END; dropping here turned the last bytes into a clean but empty body.)
        """
        if self.fin:
            return 0
        if self.reset is None:
            self.reset = (code, reason)
        self._wake()
        return self.drop()

    def _append(self, data: bytes) -> None:
        self.buffered += len(data)
        last = self.chunks[-1] if self.chunks else None
        if isinstance(last, bytearray) and len(last) < MAX_PAYLOAD:
            last += data
        elif len(data) < SMALL_PIECE:
            self.chunks.append(bytearray(data))
        else:
            self.chunks.append(data)

    # -- the forwarder's side ----------------------------------------------------------------

    async def changed(self, within: float | None = None) -> bool:
        """Wait until the agent or the caller did something. False after ``within`` s."""
        if within is None:  # no timeout context: one object less per wait
            await self._changed.wait()
            self._changed.clear()
            return True
        try:
            async with asyncio.timeout(within):
                await self._changed.wait()
        except TimeoutError:
            return False
        self._changed.clear()
        return True

    def take(self) -> list[bytes]:
        """All buffered pieces, in order, now owned by the caller of ``take``.

        The caller must return the credit of every byte taken (``consumed``), once it was
        sent or when it is abandoned; :meth:`drop` no longer counts them.
        """
        pieces = [bytes(c) if isinstance(c, bytearray) else c for c in self.chunks]
        self.chunks.clear()
        self.buffered = 0
        return pieces

    def drop(self) -> int:
        """Forget buffered bytes. Returns how many (refund their credit)."""
        dropped, self.buffered = self.buffered, 0
        self.chunks.clear()
        return dropped

    def mark_caller_gone(self) -> None:
        self.caller_gone = True
        self._wake()

    def fail_local(self, error: PublicError) -> None:
        """The relay gives up on the stream (a limit or timeout on the caller's side)."""
        if self.local_error is None:
            self.local_error = error
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self.credit.set()
