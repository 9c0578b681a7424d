"""What a tunnel stream looks like to the code that serves it (protocol v2).

A v2 stream carries the raw HTTP/1.1 bytes of one exchange. The tunnel runtime owns the
stream; a consumer (:class:`edge_agent.forward.HttpForwarder`, the object bridge in
:mod:`edge_agent.bridge`) sees it only through :class:`StreamPort`, and the runtime talks
back through the :class:`StreamHandler` the consumer returns. Both are structural: the
runtime's :class:`tunnel.Stream` satisfies :class:`StreamPort` (tests use a lighter
fake), and the handler protocol is the runtime's own :class:`tunnel.StreamHandler`.

Call order the runtime guarantees to a handler: any number of :meth:`StreamHandler.data`
calls, then at most one :meth:`StreamHandler.end`; :meth:`StreamHandler.aborted` at any
time (after it, nothing else). Every call comes from the session's reader, synchronously:
a handler never blocks and never awaits in them.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from tunnel import StreamHandler
from wire import ErrorCode

__all__ = ["ExchangeRecord", "StreamHandler", "StreamPort"]


class StreamPort(Protocol):
    """One tunnel stream, seen from the agent.

    ``write`` never blocks: bytes are queued and ``buffered`` grows; past the runtime's
    high mark it calls the handler's ``pause_writing`` (and ``resume_writing`` below the
    low mark). ``end`` completes our half once the queued bytes are out; ``close=True``
    sets the CLOSE flag (the relay closes the public connection after this response).
    ``reset`` aborts both halves. ``pause_reading`` stops returning credit for received
    bytes, so the relay stops after one window; ``resume_reading`` returns it again.
    """

    sid: int

    @property
    def buffered(self) -> int: ...

    def write(self, data: bytes) -> None: ...

    def end(self, close: bool = False) -> None: ...

    def reset(self, code: ErrorCode, reason: str = "", after_queued: bool = False) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


@dataclasses.dataclass(slots=True)
class ExchangeRecord:
    """One exchange, for request lines and the inspector (an ``on_done`` callback's argument).

    ``method`` and ``target`` come from the request line as sent to the target (empty if
    none arrived); ``status`` is the final response status (101 for an upgrade), None if
    no final head arrived; ``bytes_in``/``bytes_out`` count raw bytes (heads included) in
    each direction; ``error`` is None for a clean end, else why the stream was reset or
    aborted. The callback runs synchronously inside the handler (often from the
    session's reader): it must be cheap and must not raise, nor change the record (the
    next sink sees the same one).

    Not frozen: one is made per request, and a frozen dataclass's ``__init__`` (an
    ``object.__setattr__`` call per field) took 1.9 us where this one takes 0.45 us.
    """

    sid: int
    method: str
    target: str
    status: int | None
    duration_ms: float
    bytes_in: int
    bytes_out: int
    error: str | None
    reset: ErrorCode | None = None  # the RESET code that ended the stream, if any
