"""Raw HTTP/1.1 over a socket, for requests an HTTP client library would not send."""

from __future__ import annotations

import asyncio
import json
from typing import Any


async def exchange(port: int, data: bytes, read_for: float = 5.0) -> bytes:
    """Send ``data``, then read until the relay closes the connection (or ``read_for`` s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(read_for):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def error_code(response: bytes) -> str:
    body = response.split(b"\r\n\r\n", 1)[1]
    code: Any = json.loads(body)["error"]["code"]
    return str(code)
