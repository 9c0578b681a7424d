"""The Target interface, and :class:`HttpTarget`, which forwards to a local HTTP server.

Every tunnelled stream becomes a :class:`LocalRequest` handed to a :class:`Target`.
Wrappers (de-duplication, a pause gate, an inbound-secret check) are Targets that wrap
Targets. Errors a Target raises, from :mod:`edge_agent.errors`, choose the RESET code:
``TargetUnreachable`` -> CONNECT_ERROR, ``TargetFailed`` (also from the body iterator,
mid-stream) -> TARGET_ERROR, ``TargetTimeout`` -> TARGET_TIMEOUT, ``Unavailable`` ->
UNAVAILABLE.

Cancellation: when the relay RESETs a stream (its caller went away) the stream's task
is cancelled. ``handle()`` is cancelled if it has not returned; otherwise the response
body iterator is closed (``aclose()``) and :attr:`LocalResponse.close` is awaited. Either
must abort the local request so that the local server sees the disconnect.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, Protocol

import aiohttp
from yarl import URL

from edge_agent.errors import ConfigError, TargetFailed, TargetTimeout, TargetUnreachable
from edge_agent.headers import strip_hop_by_hop
from wire import DEFAULT_MAX_STREAMS, MAX_HEADERS, MAX_PAYLOAD


@dataclasses.dataclass(slots=True)
class LocalRequest:
    stream_id: int
    method: str
    target: str  # origin-form path + query, raw, never re-quoted
    headers: list[tuple[str, str]]  # ordered pairs, as received from the relay
    body: AsyncIterator[bytes]  # request body chunks; ends at the relay's FIN


@dataclasses.dataclass(slots=True)
class LocalResponse:
    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]  # response chunks, forwarded as they come (no buffering)
    #: Awaited once when the stream ends, fails or is cancelled, after the body iterator
    #: was closed; releases what ``handle()`` holds (a connection, an app task).
    close: Callable[[], Awaitable[None]] | None = None


class Target(Protocol):
    async def handle(self, request: LocalRequest) -> LocalResponse: ...

    async def aclose(self) -> None: ...


class EmptyBody:
    """A request body known to be empty (the relay's OPEN carried FIN).

    Targets may test ``isinstance(request.body, EmptyBody)`` to send no body at all
    rather than an empty chunked one.
    """

    def __aiter__(self) -> EmptyBody:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


#: TCP connect to the local target, including the wait for a pool slot. aiohttp's
#: default is no limit on either; a target that does not accept in time is TARGET_TIMEOUT.
CONNECT_TIMEOUT: Final = 10.0

#: Connections to the target. One per stream the relay may open by default, so no
#: stream waits for a pool slot (aiohttp's default is 100 in total, unlimited per host).
POOL_LIMIT: Final = DEFAULT_MAX_STREAMS

#: Idle keep-alive connections are closed after this many seconds (aiohttp's default is
#: 15 s). Below uvicorn's 5 s keep-alive, so we never reuse a connection the server is
#: closing at that moment, which would fail a non-idempotent request.
KEEPALIVE_TIMEOUT: Final = 4.0

#: Response bytes aiohttp buffers per connection before it stops reading the socket
#: (its default is 256 KiB). One DATA frame's worth keeps a slow stream's memory small.
READ_BUFSIZE: Final = MAX_PAYLOAD

#: Longest response header line and field (aiohttp's default is 8190 bytes each; big
#: cookies exceed that). Longer headers fail the response with TARGET_ERROR.
MAX_FIELD_SIZE: Final = 32 * 1024

#: Headers aiohttp would add on its own. A forwarder adds none, so they are skipped.
SKIP_AUTO_HEADERS: Final = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def target_url(spec: str) -> str:
    """``8000`` -> ``http://127.0.0.1:8000``; ``host:port`` -> ``http://host:port``.

    Raises ConfigError for anything that is not a port or an http(s) URL.
    """
    if spec.isdigit():
        return f"http://127.0.0.1:{spec}"
    if "://" not in spec:
        spec = f"http://{spec}"
    url = URL(spec)
    if url.scheme not in ("http", "https") or not url.host or url.query_string:
        raise ConfigError(f"target must be a port or an http(s) URL, got {spec!r}")
    return str(url).rstrip("/")


class HttpTarget:
    """Forwards each request to a local HTTP server with one aiohttp ``ClientSession``.

    Bytes pass through as they are: no decompression, no re-quoting of the path, no
    headers of its own (``Host`` becomes the target's host; the relay keeps the public
    one in ``X-Forwarded-Host``). Bodies stream both ways; there is no read timeout,
    so a quiet SSE stream is not an error.

    Args:
        base_url: ``http://host:port`` (optionally with a path prefix), see
            :func:`target_url`.
    """

    def __init__(self, base_url: str, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.base_url = target_url(base_url)
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout, sock_read=None
        )
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # TCP_NODELAY: aiohttp sets it on every connection it opens (base_protocol.py).
        # Defaults kept on purpose: DNS cache 10 s (ttl_dns_cache), happy eyeballs 0.25 s
        # (``localhost`` may resolve to ::1 and 127.0.0.1), no TLS verification changes.
        connector = aiohttp.TCPConnector(
            limit=POOL_LIMIT, limit_per_host=0, keepalive_timeout=KEEPALIVE_TIMEOUT
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            trust_env=False,  # HTTP(S)_PROXY must not apply to the local target
            cookie_jar=aiohttp.DummyCookieJar(),  # never store or add cookies
            skip_auto_headers=SKIP_AUTO_HEADERS,
            read_bufsize=READ_BUFSIZE,
            max_line_size=MAX_FIELD_SIZE,
            max_field_size=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS,
        )

    async def handle(self, request: LocalRequest) -> LocalResponse:
        if self._session is None:
            self._session = self._open()
        url = URL(self.base_url + request.target, encoded=True)
        headers = strip_hop_by_hop(request.headers, also=frozenset({"host"}))
        body = None if isinstance(request.body, EmptyBody) else request.body
        try:
            resp = await self._session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _map_error(exc, connecting=True) from exc
        if resp.status < 200:  # 101 Switching Protocols: upgrades are not tunnelled
            resp.close()
            raise TargetFailed(f"local target answered {resp.status}")
        raw = ((n.decode("latin-1"), v.decode("latin-1")) for n, v in resp.raw_headers)
        return LocalResponse(resp.status, strip_hop_by_hop(raw), _stream(resp), _closer(resp))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _map_error(exc: BaseException, connecting: bool = False) -> Exception:
    """The one place where aiohttp's errors become :class:`TargetError`."""
    if isinstance(exc, asyncio.TimeoutError):  # includes aiohttp's ServerTimeoutError
        return TargetTimeout(f"local target timed out: {type(exc).__name__}")
    if connecting and isinstance(exc, aiohttp.ClientConnectorError):
        return TargetUnreachable(f"cannot connect to the local target: {exc.os_error}")
    return TargetFailed(f"local target failed: {type(exc).__name__}: {exc}")


async def _stream(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    complete = False
    try:
        try:
            async for chunk in resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _map_error(exc) from exc
        complete = True
    finally:
        if complete:
            resp.release()  # back to the pool
        else:
            resp.close()  # abort: the local server sees the connection drop


def _closer(resp: aiohttp.ClientResponse) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        resp.close()  # a no-op after release(); aborts a response never read to the end

    return close
