"""The Recorder's installation, and the object-path adapter that replays use.

:func:`install` puts the Recorder in place for the whole process (the tunnel's streams
reach it through :class:`edge_agent.inspect.streamtap.TappedTarget`, as raw bytes).
:func:`observe` feeds it an exchange run on objects (:class:`LocalRequest` in,
:class:`LocalResponse` out) written back as HTTP/1.1 bytes: the inspector's replays,
which call the local target directly, use it. The de-duplication calls
:func:`mark_duplicate` when it answers a re-send from its cache; :data:`current` says
which exchange the running task serves.
"""

from __future__ import annotations

import contextvars
import dataclasses
import http
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import TYPE_CHECKING

from edge_agent.target import EmptyBody, LocalRequest, LocalResponse, Target

if TYPE_CHECKING:
    from edge_agent.inspect.observe import Recorder

_recorder: Recorder | None = None

#: The exchange the current task forwards (set only while the inspector is on).
current: contextvars.ContextVar[Hashable | None] = contextvars.ContextVar(
    "inspected_exchange", default=None
)


def install(recorder: Recorder | None) -> None:
    """Start (a Recorder) or stop (None) observing every request of this process."""
    global _recorder
    _recorder = recorder


def installed() -> Recorder | None:
    return _recorder


def handle(target: Target, request: LocalRequest) -> Awaitable[LocalResponse]:
    """``target.handle(request)``, observed when a Recorder is installed."""
    recorder = _recorder
    if recorder is None:
        return target.handle(request)
    return observe(recorder, target, request)[1]


def mark_duplicate() -> None:
    """The request being handled in this task was answered from the de-duplication
    cache (a re-sent A2A call): mark its row."""
    recorder = _recorder
    xid = current.get()
    if recorder is not None and xid is not None:
        recorder.mark_duplicate(xid)


@dataclasses.dataclass(slots=True, eq=False)
class _Outcome:
    complete: bool = False
    error: str | None = None


def observe(
    recorder: Recorder, target: Target, request: LocalRequest, *, replay_of: int | None = None
) -> tuple[int, Awaitable[LocalResponse]]:
    """Open a row for ``request`` and return its id and the forwarding to await: the
    response it gives reports its body and ``close`` to the Recorder. Replay uses it
    too (``replay_of``: the row replayed)."""
    xid = object()
    row = recorder.opened(xid, replay_of=replay_of)
    has_body = not isinstance(request.body, EmptyBody)
    chunked = has_body and not _has(request.headers, "content-length")
    recorder.request_bytes(xid, request_head(request, chunked))
    if has_body:
        body = _request_body(recorder, xid, request.body, chunked)
        request = dataclasses.replace(request, body=body)
    return row, _forward(recorder, xid, target, request)


async def _forward(
    recorder: Recorder, xid: Hashable, target: Target, request: LocalRequest
) -> LocalResponse:
    token = current.set(xid)
    try:
        response = await target.handle(request)
    except BaseException as exc:
        recorder.closed(xid, _why(exc))
        raise
    finally:
        current.reset(token)
    recorder.response_bytes(xid, response_head(response))
    outcome = _Outcome()
    return LocalResponse(
        response.status,
        response.headers,
        _response_body(recorder, xid, response.body, outcome),
        _closer(recorder, xid, response, outcome),
    )


def request_head(request: LocalRequest, chunked: bool) -> bytes:
    lines = [f"{request.method} {request.target} HTTP/1.1\r\n"]
    lines += [f"{n}: {v}\r\n" for n, v in request.headers]
    if chunked:
        lines.append("transfer-encoding: chunked\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1", "replace")


def response_head(response: LocalResponse) -> bytes:
    try:
        reason = http.HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {response.status} {reason}\r\n"]
    lines += [f"{n}: {v}\r\n" for n, v in response.headers]
    lines.append("\r\n")
    return "".join(lines).encode("latin-1", "replace")


async def _request_body(
    recorder: Recorder, xid: Hashable, body: AsyncIterator[bytes], chunked: bool
) -> AsyncIterator[bytes]:
    async for chunk in body:
        if chunk:
            recorder.request_bytes(xid, b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        yield chunk
    if chunked:
        recorder.request_bytes(xid, b"0\r\n\r\n")


async def _response_body(
    recorder: Recorder, xid: Hashable, body: AsyncIterator[bytes], outcome: _Outcome
) -> AsyncIterator[bytes]:
    try:
        async for chunk in body:
            recorder.response_bytes(xid, chunk)
            yield chunk
        outcome.complete = True
    except Exception as exc:
        outcome.error = _why(exc)
        raise
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()


def _closer(
    recorder: Recorder, xid: Hashable, response: LocalResponse, outcome: _Outcome
) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        try:
            if response.close is not None:
                await response.close()
        finally:
            error = None if outcome.complete else outcome.error or "cut off (stream reset)"
            recorder.closed(xid, error)

    return close


def _why(exc: BaseException) -> str:
    """The row's error text: a cancellation is the stream being reset (or the agent
    stopping); anything else names its exception."""
    if not isinstance(exc, Exception):
        return "cancelled (stream reset)"
    return f"{type(exc).__name__}: {exc}"[:300]


def _has(headers: list[tuple[str, str]], name: str) -> bool:
    return any(n.lower() == name for n, _ in headers)
