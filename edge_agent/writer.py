"""The single writer of a tunnel session: sends ``conn.data_to_send()`` in order.

Every part of the session that queues frames (stream tasks, the reader's WINDOW
refunds) calls :meth:`Writer.kick` or awaits :meth:`Writer.flush`; only the writer task
takes frames out of the :class:`wire.Connection` and sends them, so frames leave in the
order they were queued, and the reader never waits for the socket.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection

from edge_agent.errors import TunnelError
from wire import Connection


class Writer:
    def __init__(self, ws: ClientConnection, conn: Connection) -> None:
        self._ws = ws
        self._conn = conn
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        self._closed: BaseException | None = None

    def kick(self) -> None:
        """Frames were queued: send them soon (does not wait)."""
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything queued so far was handed to the WebSocket.

        This is the producers' backpressure: ``send()`` waits while the socket's write
        buffer is above its limit. Raises TunnelError once the session is closed.
        """
        if self._closed is not None:
            raise TunnelError("tunnel closed") from self._closed
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        await waiter

    async def _send_batch(self, messages: list[bytes]) -> None:
        """Send several messages with one socket write and one drain.

        ``ws.send()`` per message costs a ``transport.write`` (a syscall) and a drain
        check each; a response is often RESPONSE + DATA queued together. This is what
        ``send()`` does for one message, under the same ``send_context()`` (its state
        check, its close and error handling, and its drain on exit).
        """
        ws = self._ws
        async with ws.send_context():
            for message in messages:
                ws.protocol.send_binary(message)
            ws.transport.writelines(ws.protocol.data_to_send())

    async def run(self) -> None:
        """Send until the WebSocket fails or the task is cancelled."""
        waiters: list[asyncio.Future[None]] = []
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                waiters, self._waiters = self._waiters, []
                messages = self._conn.data_to_send()
                if len(messages) == 1:
                    await self._ws.send(messages[0])
                elif messages:
                    await self._send_batch(messages)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        except BaseException as exc:
            self._closed = exc
            for waiter in waiters + self._waiters:
                if not waiter.done():
                    waiter.set_exception(TunnelError("tunnel closed"))
            self._waiters.clear()
            raise
