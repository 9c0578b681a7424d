"""The platform-to-agent HTTP call of the A2A proxy (aiohttp client).

One ``POST <agent url>`` with the normalized JSON-RPC body, redirects NOT followed,
the response read whole into memory (the real proxy buffers, it never streams)
up to the response limit. Client settings, written down on purpose:

- ``ClientTimeout(total=None, connect=None, sock_connect=<connect timeout>,
  sock_read=None)``: no overall or read timeout here; the proxy wraps the call in
  its own idle and ceiling deadlines (``asyncio.timeout``), and "next" adds a
  response-head timeout;
- ``TCPConnector(limit=100, use_dns_cache=False, resolver=GuardedResolver)``: every
  connection resolves again and refuses addresses the dispatch SSRF rules forbid
  (the "SSRF-checked dialer" of "next"; it also closes the DNS-rebinding gap);
- TLS certificates are verified (aiohttp's default ``ssl=True``);
- ``auto_decompress=True``: like Go's transport, a gzip body is returned decoded,
  and the size limit counts decoded bytes; ``trust_env=False``: no proxy from the
  environment.

Errors are sorted the way the Go proxy sorts them (``isUpstreamBusyError``):
EOF and connection resets before the response head are "busy" (the call gets
queued); refused connections, DNS failures, a connect timeout and a response-head
timeout are "unreachable" (502). Deadlines fired by the caller's ``asyncio.timeout``
propagate as ``TimeoutError``; :attr:`Progress.head_received` tells the proxy
whether that happened before or after the response head.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from devplatform import __version__
from devplatform.bodies import read_at_most
from devplatform.config import UPSTREAM_POOL_LIMIT
from devplatform.errors import UpstreamBusy, UpstreamReadError, UpstreamUnreachable
from devplatform.ssrf import dispatch_blocks, parse_address

logger = logging.getLogger(__name__)

USER_AGENT = f"molecule-devplatform/{__version__}"
_RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}


@dataclass(slots=True)
class Progress:
    """Filled in while a call runs; read after a deadline fired."""

    head_received: bool = False
    status: int = 0


@dataclass(frozen=True, slots=True)
class AgentResponse:
    status: int
    body: bytes


class GuardedResolver(AbstractResolver):
    """System resolver that refuses addresses the dispatch SSRF rules forbid."""

    def __init__(self, *, saas: bool, allow_localhost: bool) -> None:
        self._inner = ThreadedResolver()
        self._saas = saas
        self._allow_localhost = allow_localhost

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._allow_localhost and host == "localhost":
            return results
        for result in results:
            address = parse_address(result["host"])
            if address is None or dispatch_blocks(address, self._saas):
                raise OSError(f"refusing to connect to {host}: address not allowed")
        return results

    async def close(self) -> None:
        await self._inner.close()


class UpstreamClient:
    """Owns the aiohttp session; create inside the running loop, close at shutdown."""

    def __init__(self, *, connect_timeout: float, saas: bool, allow_localhost: bool) -> None:
        connector = aiohttp.TCPConnector(
            limit=UPSTREAM_POOL_LIMIT,
            use_dns_cache=False,
            resolver=GuardedResolver(saas=saas, allow_localhost=allow_localhost),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=connect_timeout, sock_read=None
            ),
            auto_decompress=True,
            trust_env=False,
        )

    async def close(self) -> None:
        await self._session.close()

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        bearer: str | None,
        header_timeout: float | None,
        max_body: int,
        refuse_oversize: bool,
        progress: Progress,
    ) -> AgentResponse:
        """POST and buffer the answer. Over ``max_body``: truncate, or raise if
        ``refuse_oversize``. Raises an ``UpstreamError`` or ``TimeoutError``."""
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        response = await self._send(url, body, headers, header_timeout)
        progress.head_received, progress.status = True, response.status
        async with response:
            data = await _read_limited(response, max_body, refuse_oversize)
        return AgentResponse(response.status, data)

    async def _send(
        self, url: str, body: bytes, headers: dict[str, str], header_timeout: float | None
    ) -> aiohttp.ClientResponse:
        head_deadline = asyncio.timeout(header_timeout)
        try:
            async with head_deadline:
                return await self._session.post(
                    url, data=body, headers=headers, allow_redirects=False
                )
        except TimeoutError as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise UpstreamUnreachable("dial tcp: i/o timeout") from exc
            if head_deadline.expired():
                raise UpstreamUnreachable("timeout awaiting response headers") from exc
            raise
        except aiohttp.ClientError as exc:
            raise _classify(exc) from exc


def _classify(exc: aiohttp.ClientError) -> UpstreamBusy | UpstreamUnreachable:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnreachable(f"dial failed: {exc.os_error}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamBusy("EOF")
    if isinstance(exc, aiohttp.ClientOSError) and exc.errno in _RESET_ERRNOS:
        return UpstreamBusy("connection reset by peer")
    text = str(exc)
    if "EOF" in text or "connection reset" in text.lower():
        return UpstreamBusy(text)
    return UpstreamUnreachable(text or type(exc).__name__)


async def _read_limited(response: aiohttp.ClientResponse, limit: int, refuse: bool) -> bytes:
    try:
        body, over = await read_at_most(response.content, limit)
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamReadError(str(exc), status=response.status, too_large=False) from exc
    if over and refuse:
        raise UpstreamReadError(
            f"response body exceeds {limit} byte limit: A2A body exceeds size limit",
            status=response.status,
            too_large=True,
        )
    return body  # over and not refused: cut, like Go's io.LimitReader
