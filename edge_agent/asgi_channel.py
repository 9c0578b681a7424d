"""A bounded byte buffer between one producer and one consumer (ASGI ``send()`` -> tunnel)."""

from __future__ import annotations

import asyncio
from collections import deque


class Channel:
    """Holds at most about ``limit`` bytes; :meth:`put` waits while it is full.

    :meth:`close` ends it (first close wins): the consumer gets the remaining chunks,
    then ``None`` at a clean end or the close error; a waiting producer returns at once.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: deque[bytes] = deque()
        self._size = 0
        self._closed = False
        self._error: BaseException | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def drained(self) -> bool:
        """Closed, and the consumer took everything."""
        return self._closed and not self._items

    async def put(self, data: bytes) -> None:
        while self._size >= self._limit and not self._closed:
            self._writable.clear()
            await self._writable.wait()
        self.put_nowait(data)

    def put_nowait(self, data: bytes) -> None:
        """Append without waiting (dropped if closed)."""
        if self._closed:
            return
        self._items.append(data)
        self._size += len(data)
        self._readable.set()

    def close(self, error: BaseException | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._readable.set()
        self._writable.set()

    async def get(self) -> bytes | None:
        """The next chunk; None at a clean end. Raises the close error after the last chunk."""
        while not self._items:
            if self._closed:
                if self._error is not None:
                    raise self._error
                return None
            self._readable.clear()
            await self._readable.wait()
        data = self._items.popleft()
        self._size -= len(data)
        if self._size < self._limit:
            self._writable.set()
        return data
