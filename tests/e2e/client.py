"""Callers for the end-to-end tests: an aiohttp session that changes nothing, a raw
HTTP/1.1 exchange for bytes no client library would send, and a bounded poll."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

#: Seconds a single caller request may take in these tests before it counts as hung.
REQUEST_TIMEOUT = 60.0


def session(limit: int = 100, **kwargs: Any) -> aiohttp.ClientSession:
    """A caller that passes bytes as they are: no decompression, no cookie jar, no
    added headers, no proxy from the environment."""
    kwargs.setdefault("timeout", aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=0),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        **kwargs,
    )


async def relay_error(resp: aiohttp.ClientResponse) -> str:
    """The stable code of a relay-made error, after checking its JSON and header agree."""
    body = json.loads(await resp.read())
    code: str = body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert resp.headers.get("x-edge-error") == code, resp.headers
    assert resp.headers.get("content-type") == "application/json"
    return code


async def until(check: Callable[[], bool], within: float, what: str = "condition") -> float:
    """Poll ``check`` every 20 ms; return the seconds it took. Fails after ``within`` s."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"{what}: not true after {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@dataclasses.dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]  # names lowercased, order and duplicates kept
    body: bytes
    complete: bool  # the body ended as its framing says (not cut off)

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


async def raw_exchange(port: int, request: bytes, within: float = 20.0) -> RawResponse:
    """Send ``request`` as is on a new connection and read one response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(within):
            writer.write(request)
            await writer.drain()
            return await read_response(reader, head_only=request.startswith(b"HEAD "))
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader, head_only: bool = False) -> RawResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
    response = RawResponse(status, headers, b"", True)
    if head_only or status in (204, 304) or 100 <= status < 200:
        return response
    try:
        if "chunked" in ",".join(response.values("transfer-encoding")).lower():
            response.body = await _read_chunked(reader)
        elif lengths := response.values("content-length"):
            response.body = await reader.readexactly(int(lengths[0]))
        else:
            response.body = await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        response.complete = False
    return response


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers from the relay
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
