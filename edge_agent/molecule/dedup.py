"""De-duplication of re-sent A2A JSON-RPC calls, as a Target wrapper.

The Molecule platform's proxy queues a call whose dispatch timed out or was reset and
re-sends the *same* JSON-RPC body later (contract §7.4). Without this wrapper the local
agent would process that message twice. :class:`DedupTarget` makes it see each message
once:

* A request qualifies when it is a ``POST`` with a JSON content type whose body (at
  most ``max_request_bytes``) is a JSON-RPC object with ``params.message.messageId``:
  A2A 1.0 ``SendMessage`` / ``SendStreamingMessage`` and 0.3 ``message/send`` /
  ``message/stream`` alike. The key is (path, method, messageId). Anything else passes
  through with its body re-fed chunk for chunk.
* The first arrival is forwarded by a *detached* task that tees the response: chunks go
  to the first caller as they come (no buffering on its path) and into the cache.
* A duplicate that arrives while the first runs waits for it to complete, then gets the
  cached status, headers and body; one that arrives later gets them at once.
* The first caller going away (the relay RESETs the stream when the platform's request
  times out) does **not** cancel the local request: finishing it is what lets the
  re-send be answered from the cache. This mirrors the platform, which detaches the
  forwarded call from its caller too. Only when the response cannot be cached (too
  large) and nobody is reading it is the local request aborted.

Limits: only 2xx responses are cached (an error may be retried for real); a response
larger than ``max_response_bytes`` is not cached; the cache holds at most
``max_entries`` completed responses and ``max_bytes`` of bodies (least recently used
go first) for ``ttl`` seconds; at most ``max_pending`` first arrivals are tracked at
once (beyond that, requests pass through un-deduplicated).

Safety: a duplicate must also carry the same ``params`` (compared by a digest of their
canonical JSON) to be answered from the cache, so knowing someone's messageId is not
enough to read their answer. A replay is byte-for-byte the first response, including
its JSON-RPC ``id`` (the platform's re-send carries the same one).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Final

from edge_agent.bridge import WebSocketClosed, delegate_websocket
from edge_agent.errors import TargetFailed
from edge_agent.inspect import tap
from edge_agent.port import StreamHandler, StreamPort
from edge_agent.target import EmptyBody, LocalRequest, LocalResponse, Target

logger = logging.getLogger(__name__)

#: Largest request body inspected. The "current" platform proxy caps A2A requests at
#: 1 MiB; a larger body is forwarded without de-duplication (its prefix re-fed).
MAX_REQUEST_BYTES: Final = 1024 * 1024
#: Largest response kept for replay (the platform buffers up to 10 MiB).
MAX_RESPONSE_BYTES: Final = 2 * 1024 * 1024
#: Completed responses kept, and their total body bytes.
MAX_ENTRIES: Final = 512
MAX_BYTES: Final = 32 * 1024 * 1024
#: First arrivals tracked at once (each holds a detached task and its request body).
MAX_PENDING: Final = 256
#: How long a completed response can be replayed. The platform re-sends a queued call on
#: later heartbeats (30 s apart, at most 5 attempts), so minutes would do; an hour is safe.
TTL: Final = 3600.0
#: Longer message ids are not tracked (real ones are UUIDs).
MAX_MESSAGE_ID_LENGTH: Final = 256
#: Response chunks queued for a slow first caller before the local read waits for it.
FIRST_CALLER_QUEUE: Final = 16

Key = tuple[str, str, str]
_END: Final = object()


@dataclasses.dataclass(frozen=True, slots=True)
class DedupLimits:
    max_request_bytes: int = MAX_REQUEST_BYTES
    max_response_bytes: int = MAX_RESPONSE_BYTES
    max_entries: int = MAX_ENTRIES
    max_bytes: int = MAX_BYTES
    max_pending: int = MAX_PENDING
    ttl: float = TTL


class _Entry:
    """One message: its forwarding in progress, then its cached response."""

    def __init__(self, fingerprint: bytes, max_bytes: int) -> None:
        self.fingerprint = fingerprint
        self.max_bytes = max_bytes
        self.head = asyncio.Event()  # set when the head arrived or forwarding failed
        self.done = asyncio.Event()  # set when complete (cached or not) or failed
        self.failure: BaseException | None = None
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.cacheable = True
        self.cached = False
        self.completed_at = 0.0
        self.first_attached = True
        self.queue: asyncio.Queue[object] = asyncio.Queue(FIRST_CALLER_QUEUE)

    def keep(self, chunk: bytes) -> None:
        if not self.cacheable:
            return
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.cacheable, self.chunks = False, []
        else:
            self.chunks.append(chunk)

    async def deliver(self, item: object) -> None:
        if self.first_attached:
            await self.queue.put(item)

    def fail_first(self, error: BaseException) -> None:
        """Hand ``error`` to the first caller without waiting (its stream is failing)."""
        if not self.first_attached:
            return
        if self.queue.full():
            self.queue.get_nowait()  # a chunk of a response that fails anyway
        self.queue.put_nowait(error)

    def detach_first(self) -> None:
        """The first caller stopped reading: unblock the forwarder, drop what is queued."""
        self.first_attached = False
        while not self.queue.empty():
            self.queue.get_nowait()

    def replay(self) -> LocalResponse:
        return LocalResponse(self.status, list(self.headers), _iterate(tuple(self.chunks)))


class DedupTarget:
    """Wraps ``inner`` so that a re-sent A2A message reaches it once (see module doc)."""

    def __init__(
        self,
        inner: Target,
        limits: DedupLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._limits = limits or DedupLimits()
        self._clock = clock
        self._pending: dict[Key, _Entry] = {}
        self._done: collections.OrderedDict[Key, _Entry] = collections.OrderedDict()
        self._done_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_progress(self) -> int:
        """Messages the local agent is working on, including ones whose caller left."""
        return len(self._pending)

    @property
    def cached_entries(self) -> int:
        return len(self._done)

    @property
    def cached_bytes(self) -> int:
        return self._done_bytes

    async def handle(self, request: LocalRequest) -> LocalResponse:
        if not _may_qualify(request):
            return await self._inner.handle(request)
        chunks, complete = await _read_prefix(request.body, self._limits.max_request_bytes)
        if not complete:
            rest = _chain(chunks, request.body)
            return await self._inner.handle(dataclasses.replace(request, body=rest))
        refed = dataclasses.replace(request, body=_iterate(chunks))
        parsed = _dedup_key(request.target, b"".join(chunks))
        if parsed is None or len(self._pending) >= self._limits.max_pending:
            return await self._inner.handle(refed)
        return await self._dedup(refed, chunks, *parsed)

    def websocket(
        self, request: LocalRequest, stream: StreamPort, on_close: WebSocketClosed
    ) -> StreamHandler | None:
        """A WebSocket carries no A2A message to de-duplicate: passed on as it is."""
        return delegate_websocket(self._inner, request, stream, on_close)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._inner.aclose()

    async def _dedup(
        self, request: LocalRequest, chunks: Sequence[bytes], key: Key, fingerprint: bytes
    ) -> LocalResponse:
        while True:
            entry = self._lookup(key)
            if entry is None:
                return await self._first(request, key, fingerprint)
            if entry.fingerprint != fingerprint:
                logger.warning("dedup_params_differ message_id=%s: forwarded as new", key[2])
                return await self._inner.handle(dataclasses.replace(request, body=_iterate(chunks)))
            if not entry.done.is_set():
                logger.info("dedup_waiting message_id=%s stream_id=%d", key[2], request.stream_id)
                await entry.done.wait()
            if entry.cached:
                logger.info("dedup_replayed message_id=%s stream_id=%d", key[2], request.stream_id)
                tap.mark_duplicate()
                self._done.move_to_end(key)
                return entry.replay()
            # The first failed or was too large to keep: this one is forwarded after all.
            request = dataclasses.replace(request, body=_iterate(chunks))

    def _lookup(self, key: Key) -> _Entry | None:
        entry = self._pending.get(key)
        if entry is not None:
            return entry
        entry = self._done.get(key)
        if entry is not None and self._clock() - entry.completed_at > self._limits.ttl:
            self._forget(key)
            return None
        return entry

    async def _first(self, request: LocalRequest, key: Key, fingerprint: bytes) -> LocalResponse:
        entry = _Entry(fingerprint, self._limits.max_response_bytes)
        self._pending[key] = entry  # no await since _lookup: concurrent duplicates see it
        task = asyncio.create_task(self._forward(request, key, entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            await entry.head.wait()
        except asyncio.CancelledError:
            entry.detach_first()  # the forwarding goes on, for the re-send
            raise
        if entry.failure is not None:
            raise entry.failure
        return LocalResponse(
            entry.status, list(entry.headers), self._first_body(entry), _detacher(entry)
        )

    async def _first_body(self, entry: _Entry) -> AsyncIterator[bytes]:
        try:
            while True:
                item = await entry.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, bytes)
                yield item
        finally:
            entry.detach_first()

    async def _forward(self, request: LocalRequest, key: Key, entry: _Entry) -> None:
        """Runs detached from the first caller; never raises (except when cancelled)."""
        try:
            response = await self._inner.handle(request)
        except BaseException as exc:
            self._fail(key, entry, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        entry.status, entry.headers = response.status, list(response.headers)
        entry.head.set()
        try:
            await self._pump(response, entry)
        except BaseException as exc:
            self._fail(key, entry, exc)
            entry.fail_first(_as_target_error(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        finally:
            await _close(response)
        self._complete(key, entry)

    async def _pump(self, response: LocalResponse, entry: _Entry) -> None:
        async for chunk in response.body:
            entry.keep(chunk)
            if not entry.first_attached and not entry.cacheable:
                raise TargetFailed("response too large to keep and its caller is gone")
            await entry.deliver(chunk)
        await entry.deliver(_END)

    def _fail(self, key: Key, entry: _Entry, exc: BaseException) -> None:
        if entry.done.is_set():
            return
        entry.failure = _as_target_error(exc)
        self._pending.pop(key, None)
        entry.head.set()
        entry.done.set()

    def _complete(self, key: Key, entry: _Entry) -> None:
        self._pending.pop(key, None)
        entry.cached = entry.cacheable and 200 <= entry.status < 300
        if entry.cached:
            entry.completed_at = self._clock()
            self._done[key] = entry
            self._done_bytes += entry.size
            self._evict()
        entry.done.set()

    def _evict(self) -> None:
        limits = self._limits
        while self._done and (
            len(self._done) > limits.max_entries or self._done_bytes > limits.max_bytes
        ):
            self._forget(next(iter(self._done)))

    def _forget(self, key: Key) -> None:
        entry = self._done.pop(key)
        self._done_bytes -= entry.size


def _may_qualify(request: LocalRequest) -> bool:
    """A POST with a body declared as JSON (the platform always sends application/json)."""
    if request.method != "POST" or isinstance(request.body, EmptyBody):
        return False
    types = [v for n, v in request.headers if n.lower() == "content-type"]
    return len(types) == 1 and "json" in types[0].lower()


def _dedup_key(target: str, body: bytes) -> tuple[Key, bytes] | None:
    """(path, method, messageId) and a digest of ``params``, or None if not a message."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    method, params = doc.get("method"), doc.get("params")
    if not isinstance(method, str) or not isinstance(params, dict):
        return None
    message = params.get("message")
    message_id = message.get("messageId") if isinstance(message, dict) else None
    if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_MESSAGE_ID_LENGTH:
        return None
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    fingerprint = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).digest()
    return (target, method, message_id), fingerprint


async def _read_prefix(body: AsyncIterator[bytes], limit: int) -> tuple[list[bytes], bool]:
    """Chunks read (at most one past ``limit`` bytes) and whether the body ended."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in body:
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return chunks, False
    return chunks, True


async def _iterate(chunks: Sequence[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _chain(head: Sequence[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk


def _detacher(entry: _Entry) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        entry.detach_first()

    return close


async def _close(response: LocalResponse) -> None:
    aclose = getattr(response.body, "aclose", None)
    if aclose is not None:
        await aclose()
    if response.close is not None:
        await response.close()


def _as_target_error(exc: BaseException) -> BaseException:
    if isinstance(exc, asyncio.CancelledError):
        return TargetFailed("the forwarding was stopped")
    return exc
