"""One connected tunnel session: HELLO/WELCOME, the reader, the writer, stream tasks.

Theory of operation: the reader task only dispatches (feeds request bodies, wakes
senders, starts and cancels stream tasks) and never awaits a local target, so one slow
stream cannot stall the others. Each stream runs in its own task (:mod:`streams`), and
every frame leaves through the single :class:`~edge_agent.writer.Writer`. The session
ends when the WebSocket closes; stream tasks still running then are cancelled, which
aborts their local requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from edge_agent.errors import AgentError, AuthError, NameTakenError, TunnelError
from edge_agent.streams import RequestRecord, Stream
from edge_agent.target import Target
from edge_agent.writer import Writer
from wire import (
    CallerCredential,
    Connection,
    DataReceived,
    ErrorCode,
    Event,
    GoAwayReceived,
    Hello,
    ProtocolError,
    RequestReceived,
    Role,
    StreamReset,
    Welcome,
    WelcomeReceived,
    WindowUpdated,
)

#: Seconds the relay has to answer HELLO with WELCOME before the session is dropped.
WELCOME_TIMEOUT: Final = 10.0

#: Seconds :meth:`TunnelSession.drain` waits for in-flight streams by default.
DRAIN_TIMEOUT: Final = 30.0

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclasses.dataclass(slots=True)
class Hooks:
    """Callbacks; they run on the reader's path, so they must be quick (an exception is
    logged and ignored)."""

    on_ready: Callable[[Welcome], None] | None = None
    on_request: Callable[[RequestRecord], None] | None = None


class TunnelSession:
    """Serves one WebSocket until it closes.

    Args:
        ws: an open WebSocket to the relay's connect endpoint.
        target: where requests go.
        name: the tunnel name asked for in HELLO (None: the relay picks, open mode).
        caller_auth: the credentials public callers must present (see :meth:`update_hello`).
        is_paused: read for each new stream; True answers it with RESET UNAVAILABLE.
    """

    def __init__(
        self,
        ws: ClientConnection,
        target: Target,
        *,
        name: str | None,
        caller_auth: Sequence[CallerCredential] = (),
        agent: str = "",
        is_paused: Callable[[], bool] = lambda: False,
        hooks: Hooks | None = None,
    ) -> None:
        self.ws = ws
        self.target = target
        self.name = name
        self.agent = agent
        self.is_paused = is_paused
        self.hooks = hooks or Hooks()
        self.conn = Connection(Role.AGENT)
        self.writer = Writer(ws, self.conn)
        self.welcome: Welcome | None = None
        self.ready_at: float | None = None  # monotonic time of WELCOME
        self.draining = False
        self._caller_auth = tuple(caller_auth)
        self._sent_auth = self._caller_auth
        self._streams: dict[int, tuple[Stream, asyncio.Task[None]]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._ready = asyncio.Event()
        self._fatal: AgentError | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    @property
    def tunnel_name(self) -> str | None:
        """The name the relay granted (WELCOME); before it, the one HELLO asked for,
        which is None when the token names the tunnel."""
        return self.welcome.name if self.welcome is not None else self.name

    async def run(self, welcome_timeout: float = WELCOME_TIMEOUT) -> None:
        """Serve until the WebSocket closes (normally: returns).

        Raises:
            TunnelError: no WELCOME in time, a protocol error, or the connection failed.
            AuthError / NameTakenError: the relay revoked our token or gave our name away.
        """
        self._send_hello()
        reader = asyncio.create_task(self._read(), name="tunnel-reader")
        writer = asyncio.create_task(self.writer.run(), name="tunnel-writer")
        self._tasks = [reader, writer]
        self.writer.kick()
        try:
            await self._wait_welcome(reader, welcome_timeout)
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await self._shutdown()
        if self._fatal is not None:
            raise self._fatal
        _raise_failure(reader)

    async def _wait_welcome(self, reader: asyncio.Task[None], limit: float) -> None:
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({ready, reader}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self._ready.is_set() and not reader.done():
            raise TunnelError(f"no WELCOME from the relay within {limit:g} s")

    async def _shutdown(self) -> None:
        for _stream, task in list(self._streams.values()):
            task.cancel()
        for task in self._tasks:
            task.cancel()
        pending = [task for _s, task in self._streams.values()] + self._tasks
        await asyncio.gather(*pending, return_exceptions=True)
        await self.ws.close()

    def abort(self) -> None:
        """Stop now: the reader is cancelled, so :meth:`run` returns; streams are cancelled."""
        for task in self._tasks[:1]:
            task.cancel()

    async def drain(self, deadline: float = DRAIN_TIMEOUT) -> None:
        """Send GOAWAY, refuse new streams, wait for in-flight ones,
        then close the WebSocket (which ends :meth:`run`).

        Args:
            deadline: seconds to wait for in-flight streams; later ones are cancelled.
        """
        self.draining = True
        self.conn.send_goaway(ErrorCode.NO_ERROR, "agent draining")
        self.writer.kick()
        logger.info(
            "tunnel_draining", extra={"agent": self.tunnel_name, "streams": self.active_streams}
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), deadline)
        await self.ws.close()

    def update_hello(self, caller_auth: Sequence[CallerCredential]) -> None:
        """Replace the caller credentials the relay enforces (re-sends HELLO once up)."""
        self._caller_auth = tuple(caller_auth)
        if self.conn.established:
            self._send_hello()

    def _send_hello(self) -> None:
        self._sent_auth = self._caller_auth
        self.conn.send_hello(Hello(self.name, self._caller_auth, self.agent))
        self.writer.kick()

    # -- reader ----------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    raise TunnelError("text message on the tunnel")
                for event in self.conn.receive(message):
                    self._dispatch(event)
                self.writer.kick()
        except ProtocolError as exc:
            logger.error(
                "tunnel_protocol_error", extra={"agent": self.tunnel_name, "error": str(exc)}
            )
            self.conn.send_goaway(exc.code, str(exc)[:200])
            with contextlib.suppress(TunnelError):
                await asyncio.wait_for(self.writer.flush(), 1.0)
            raise TunnelError(f"relay broke the protocol: {exc}") from exc
        except ConnectionClosed as exc:
            raise TunnelError(f"tunnel closed: {exc}") from exc

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            self._on_data(event)
        elif isinstance(event, WindowUpdated):
            self._on_window(event)
        elif isinstance(event, RequestReceived):
            self._on_request(event)
        elif isinstance(event, StreamReset):
            self._on_reset(event)
        elif isinstance(event, WelcomeReceived):
            self._on_welcome(event.welcome)
        elif isinstance(event, GoAwayReceived):
            self._on_goaway(event)

    def _on_data(self, event: DataReceived) -> None:
        entry = self._streams.get(event.stream_id)
        if entry is not None:
            entry[0].body.feed(event.data, event.end_stream)
        elif event.data:  # the stream's task is done: drop the bytes, return the credit
            self.conn.consumed(event.stream_id, len(event.data))

    def _on_window(self, event: WindowUpdated) -> None:
        if event.stream_id == 0:
            for stream, _task in self._streams.values():
                stream.window.set()
        elif (entry := self._streams.get(event.stream_id)) is not None:
            entry[0].window.set()

    def _on_request(self, event: RequestReceived) -> None:
        sid = event.stream_id
        if self.draining or self.is_paused():
            code = ErrorCode.REFUSED_STREAM if self.draining else ErrorCode.UNAVAILABLE
            self.conn.send_reset(sid, code, "agent draining" if self.draining else "agent paused")
            self._report(Stream(self.conn, self.writer, sid, event.head, True), code)
            return
        stream = Stream(self.conn, self.writer, sid, event.head, event.end_stream)
        task = asyncio.create_task(stream.run(self.target), name=f"stream-{sid}")
        self._streams[sid] = (stream, task)
        self._idle.clear()
        task.add_done_callback(lambda _t: self._stream_done(stream))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "stream_opened",
                extra={"agent": self.tunnel_name, "stream_id": sid, "method": event.head.method},
            )

    def _stream_done(self, stream: Stream) -> None:
        self._streams.pop(stream.stream_id, None)
        if not self._streams:
            self._idle.set()
        self._report(stream, None)

    def _report(self, stream: Stream, code: ErrorCode | None) -> None:
        if code is not None:
            stream.reset_code = code
        if self.hooks.on_request is not None:
            _call_hook(self.hooks.on_request, stream.record())

    def _on_reset(self, event: StreamReset) -> None:
        entry = self._streams.get(event.stream_id)
        logger.info(
            "stream_reset",
            extra={
                "agent": self.tunnel_name,
                "stream_id": event.stream_id,
                "code": event.code.name,
            },
        )
        if entry is not None:
            entry[0].cancel_by_peer(event.code, entry[1])

    def _on_welcome(self, welcome: Welcome) -> None:
        self.welcome = welcome
        self.ready_at = time.monotonic()
        self._ready.set()
        if self._caller_auth != self._sent_auth:  # changed while HELLO was in flight
            self._send_hello()
        logger.info("tunnel_ready", extra={"agent": welcome.name, "urls": list(welcome.urls)})
        if self.hooks.on_ready is not None:
            _call_hook(self.hooks.on_ready, welcome)

    def _on_goaway(self, event: GoAwayReceived) -> None:
        logger.info("goaway_received", extra={"agent": self.tunnel_name, "code": event.code.name})
        if event.code is ErrorCode.UNAUTHORIZED:
            self._fatal = AuthError(f"the relay revoked this agent's token: {event.reason}")
        elif event.code is ErrorCode.REPLACED:
            self._fatal = NameTakenError(
                f"another agent session took the name {self.tunnel_name!r}: {event.reason}"
            )
        # No new streams will come: finish the in-flight ones, then close.
        if not self.draining:
            self._tasks.append(asyncio.create_task(self.drain(), name="tunnel-drain"))


def _call_hook(hook: Callable[[_T], None], value: _T) -> None:
    """Run an embedder's callback; its bugs are logged, they do not end the session."""
    try:
        hook(value)
    except Exception:
        logger.exception("hook_failed", extra={"hook": getattr(hook, "__name__", repr(hook))})


def _raise_failure(reader: asyncio.Task[None]) -> None:
    """Re-raise what ended the reader, unless it ended cleanly or was cancelled."""
    if reader.done() and not reader.cancelled():
        exc = reader.exception()
        if exc is not None:
            raise exc
