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

import dataclasses
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, Protocol

from yarl import URL

from edge_agent.errors import ConfigError
from edge_agent.headers import strip_hop_by_hop
from edge_agent.http1 import Exchange, Pool
from wire import DEFAULT_MAX_STREAMS

#: Most header fields in a response head from the target; more is TARGET_ERROR.
MAX_HEADERS: Final = 256


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


async def close_response(response: LocalResponse) -> None:
    """Release what a response holds: its body iterator, then its ``close``."""
    aclose = getattr(response.body, "aclose", None)
    if aclose is not None:
        await aclose()
    if response.close is not None:
        await response.close()


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


#: TCP (and TLS) connect to the local target, including the wait for a pool slot. A
#: target that does not accept in time is TARGET_TIMEOUT.
CONNECT_TIMEOUT: Final = 10.0

#: Connections to the target in use at once. One per stream the relay may open by
#: default, so no stream waits for a pool slot.
POOL_LIMIT: Final = DEFAULT_MAX_STREAMS

#: Idle keep-alive connections are reused for this many seconds at most. Below
#: uvicorn's 5 s keep-alive, so we never reuse a connection the server is closing at
#: that moment, which would fail a non-idempotent request.
KEEPALIVE_TIMEOUT: Final = 4.0

#: Longest response header field, name plus value (big cookies exceed 8 KiB). Longer
#: headers, or more than MAX_HEADERS, fail the response with TARGET_ERROR.
MAX_FIELD_SIZE: Final = 32 * 1024


def target_url(spec: str) -> str:
    """``8000`` or ``:8000`` -> ``http://127.0.0.1:8000``; ``host:port`` ->
    ``http://host:port``; an ``http(s)://`` URL as it is.

    Raises ConfigError, with one line saying what is wrong, for anything else.
    """
    given = spec
    if spec.startswith(":"):
        spec = spec[1:]
    if spec.rstrip("/").isdigit():  # "8001/" is a port too, not a host named 8001
        spec = spec.rstrip("/")
        _check_port(int(spec), given)
        return f"http://127.0.0.1:{spec}"
    if "://" not in spec:
        spec = f"http://{spec}"
    try:
        url = URL(spec)
        port = url.port
    except ValueError as exc:
        raise ConfigError(f"target {given!r} is not a port or an http(s) URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host or url.query_string:
        raise ConfigError(f"target must be a port or an http(s) URL, got {given!r}")
    if port is not None:
        _check_port(port, given)
    return str(url).rstrip("/")


def _check_port(port: int, given: str) -> None:
    if not 0 < port < 65536:
        raise ConfigError(f"target {given!r}: a port is 1-65535")


class HttpTarget:
    """Forwards each request to a local HTTP server over a keep-alive pool
    (:mod:`edge_agent.http1`).

    Bytes pass through as they are: no decompression, no re-quoting of the path, no
    headers of its own (``Host`` becomes the target's host; the relay keeps the public
    one in ``X-Forwarded-Host``). Bodies stream both ways; there is no read timeout,
    so a quiet SSE stream is not an error. https targets are verified against the
    system's CA certificates.

    Args:
        base_url: ``http://host:port`` (optionally with a path prefix), see
            :func:`target_url`.
    """

    def __init__(self, base_url: str, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.base_url = target_url(base_url)
        url = URL(self.base_url)
        host = url.raw_host or ""
        port = url.port or (443 if url.scheme == "https" else 80)
        authority = f"[{host}]" if ":" in host else host
        if not url.is_default_port():
            authority += f":{port}"
        self._host_header = ("Host", authority)
        self._prefix = url.raw_path.rstrip("/")
        self._address = (host, port, url.scheme == "https")
        self._connect_timeout = connect_timeout
        self._pool: Pool | None = None

    def _open(self) -> Pool:
        host, port, tls = self._address
        return Pool(
            host,
            port,
            tls=ssl.create_default_context() if tls else None,
            connect_timeout=self._connect_timeout,
            limit=POOL_LIMIT,
            keepalive=KEEPALIVE_TIMEOUT,
            max_field=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS,
        )

    async def handle(self, request: LocalRequest) -> LocalResponse:
        if self._pool is None:
            self._pool = self._open()
        headers = strip_hop_by_hop(request.headers, also=_DROP_REQUEST)
        headers.insert(0, self._host_header)
        body = None if isinstance(request.body, EmptyBody) else request.body
        exchange = await self._pool.request(
            request.method, self._prefix + request.target, headers, body
        )
        raw = ((n.decode("latin-1"), v.decode("latin-1")) for n, v in exchange.headers)
        return LocalResponse(
            exchange.status, strip_hop_by_hop(raw), exchange.body(), _closer(exchange)
        )

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


#: Request headers the target never gets from the relay's list: ``Host`` is the
#: target's own, and the body's framing is this hop's (Content-Length is kept).
_DROP_REQUEST: Final = frozenset({"host"})


def _closer(exchange: Exchange) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        exchange.finish(False)  # a no-op after a complete body; else aborts the request

    return close
