"""A TCP relay between the agent and the relay that a test can cut: it stands in for
the network (a NAT, a Wi-Fi switch), nothing else. :meth:`LinkCutter.reset` ends every
connection through it with a TCP reset both ways (as ``reject with tcp reset`` on a
router does); :meth:`LinkCutter.blackhole` stops moving bytes (nothing is delivered, no
error is seen) until it is lifted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Final

#: SO_LINGER with a zero timeout: close() sends RST instead of FIN.
_LINGER_RST: Final = struct.pack("ii", 1, 0)
_CHUNK: Final = 256 * 1024


class LinkCutter:
    """Listens on 127.0.0.1 (``port``) and pipes each connection to ``upstream``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.accepted = 0
        self.resets = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[bool]] = set()
        self._open = asyncio.Event()
        self._open.set()

    async def __aenter__(self) -> LinkCutter:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._open.set()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        self._cut()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """RST every connection through the cutter, both ways, now."""
        self.resets += 1
        self._cut()

    def blackhole(self, on: bool) -> None:
        """Stop (True) or resume (False) moving bytes; connections stay open."""
        if on:
            self._open.clear()
        else:
            self._open.set()

    def _cut(self) -> None:
        for pair in list(self._pairs):
            self._cut_pair(pair)
        self._pairs.clear()

    @staticmethod
    def _cut_pair(pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        for writer in pair:
            with contextlib.suppress(OSError):
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            writer.transport.abort()  # with SO_LINGER 0: an RST, not a FIN

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        tasks = [
            asyncio.ensure_future(self._pipe(reader, up_writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(tasks)
        try:
            pending: set[asyncio.Task[bool]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if not all(t.result() for t in done) and pair in self._pairs:
                    self._cut_pair(pair)  # one side failed: so does the other (no FIN)
        finally:
            self._tasks.difference_update(tasks)
            self._pairs.discard(pair)
            for w in pair:
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Move bytes until EOF (True: a clean end, passed on as FIN) or an error."""
        try:
            while data := await reader.read(_CHUNK):
                await self._open.wait()
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except (OSError, ConnectionError):
            return False
        return True
