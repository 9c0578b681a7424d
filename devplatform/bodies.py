"""Bounded reads of HTTP bodies, shared by the A2A route (request bodies) and the
upstream dispatch (agent response bodies)."""

from __future__ import annotations

from typing import Final

from aiohttp import StreamReader

#: Size of one read from a body stream, in bytes.
READ_CHUNK: Final = 64 * 1024


async def read_at_most(content: StreamReader, limit: int) -> tuple[bytes, bool]:
    """Read up to ``limit`` bytes: ``(body, over)``, where ``over`` says the body went
    past ``limit`` (``body`` is then cut to ``limit``; the rest is left unread, like
    Go's ``io.LimitReader``). At most ``limit + 1`` bytes are read. The stream's own
    errors propagate; the caller maps them."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await content.read(min(READ_CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:limit], True
