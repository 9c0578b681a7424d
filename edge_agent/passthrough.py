"""One v2 stream piped to one pooled connection to the target: the forwarder's hot path.

Theory of operation. A :class:`Passthrough` is the :class:`~edge_agent.port.StreamHandler`
of one stream. Request bytes go to the target connection as they come (held in a list
while the connection is being made, with the stream's reading paused so that at most
one window is held; paused again whenever the connection's socket is backed up).
Response bytes go to ``stream.write`` as they come, one write per ``data_received``
(the target's reading paused while the runtime says the stream is over its high mark),
and are shown to the connection's :class:`~edge_agent.http_bytes.ResponseObserver`,
which finds the response's end without changing a byte. After a 101 the stream is a
raw pipe both ways, each direction half-closed by its own EOF (``write_eof`` toward
the target, ``stream.end`` toward the relay).

At the response's end the stream is ended with CLOSE unless the response keeps the
connection alive. The connection goes back to the pool only when the relay's FIN was
seen, the response was complete and keep-alive holds; anything else closes or aborts
it, so a half-used connection is never reused. Failures before the first response
byte reset the stream with the error's own code (CONNECT_ERROR, TARGET_TIMEOUT,
TARGET_ERROR); after it always TARGET_ERROR. :meth:`Passthrough.aborted` aborts the
local connection, which the local server sees as a disconnect.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from edge_agent.errors import TargetError, TargetFailed
from edge_agent.http_bytes import splice_host
from edge_agent.port import ExchangeRecord, StreamPort
from wire import ErrorCode

if TYPE_CHECKING:
    from edge_agent.forward import HttpForwarder, TargetConnection

#: Request bytes kept for a replay: a request on a *reused* connection that the server
#: closed before any response byte (it was closing that idle connection as the request
#: went out) is sent again once on a new connection, if its method is idempotent and
#: it was no longer than this.
MAX_REPLAY: Final = 64 * 1024

_IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

#: Longest request head this side buffers while looking for the request line (or, in
#: the Host-rewriting modes, for the end of the head). The relay has already limited
#: the head; a longer one is reset as TARGET_ERROR.
MAX_REQUEST_HEAD: Final = 64 * 1024


class Passthrough:
    """The handler of one stream (see the module docstring). Made by
    :meth:`edge_agent.forward.HttpForwarder.handler`; never raises into the runtime."""

    def __init__(
        self,
        forwarder: HttpForwarder,
        stream: StreamPort,
        on_done: Callable[[ExchangeRecord], None] | None,
        started: float,
    ) -> None:
        self.forwarder = forwarder
        self.stream = stream
        self.on_done = on_done
        self.conn: TargetConnection | None = None
        self.pending: list[bytes] = []  # request bytes that came before the connection
        self.replay: list[bytes] | None = None  # request bytes sent on a reused connection
        self.replay_size = 0
        self.head: bytes | None = b""  # request head bytes until the request line is read
        self.method = b""
        self.target = b""
        self.started = started  # time.monotonic() when the stream came
        self.bytes_in = 0
        self.bytes_out = 0
        self.status = 0  # final status; 0 until its head is complete
        self.keep_alive = False
        self.request_done = False  # the relay's FIN
        self.response_done = False  # the observe-only parser saw the response's end
        self.upgraded = False
        self.target_eof = False
        self.done = False  # the record was given; the response half is over
        self.gone = False  # reset by us or aborted by the relay: the stream is closed
        self.reading_paused = False  # our pause_reading() on the stream is in force
        self.write_paused = False  # the runtime's pause_writing() is in force

    # -- StreamHandler: the relay's side ------------------------------------------------

    def data(self, data: bytes) -> None:
        if self.response_done and not self.upgraded and self.conn is None:
            return  # the exchange is over and its connection gone: drop (credit flows on)
        self.bytes_in += len(data)
        if self.head is not None:
            data = self._read_head(data)
        conn = self.conn
        if conn is not None:
            conn.send(data)
            if self.replay is not None:  # kept for a replay while it is short enough
                self.replay_size += len(data)
                if self.replay_size > MAX_REPLAY:
                    self.replay = None
                else:
                    self.replay.append(data)
        elif data:
            self.pending.append(data)

    def end(self, close: bool) -> None:
        self.request_done = True
        if self.head is not None and self.forwarder.host_value is not None:
            data = self.head  # FIN before a whole head: pass it on as is
            self.head = None
            self._send(data)
        conn = self.conn
        if conn is None:
            return
        if self.upgraded:
            if conn.transport.can_write_eof():
                conn.transport.write_eof()
            self._close_pipe_if_done()
        elif self.response_done:
            self._release()
            self.update_reading()

    def aborted(self, code: ErrorCode, reason: str) -> None:
        self.gone = True
        self._drop_connection(abort=True)
        self._finish(f"aborted by the relay: {code.name} {reason}".rstrip(), code)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.conn is not None:
            self.conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.conn is not None and not self.conn.lost:
            self.conn.transport.resume_reading()

    # -- the forwarder's side: connection -----------------------------------------------

    def attach(self, conn: TargetConnection, reused: bool) -> None:
        """Use ``conn`` (pooled when ``reused``, else new); flushes what was held."""
        if self.done or (self.response_done and not self.upgraded):
            self.forwarder.release(conn)  # aborted while connecting: keep it for the next
            return
        self.conn = conn
        conn.exchange = self
        conn.observer.start(self.method == b"HEAD")
        if reused:
            self.replay = []
        if self.write_paused:
            conn.transport.pause_reading()
        if self.pending:
            pending, self.pending = self.pending, []
            conn.send(b"".join(pending))
        if self.reading_paused != conn.write_paused:  # paused while connecting, or backed up
            self.update_reading()

    def connect_failed(self, error: TargetError) -> None:
        self._fail(error)

    def update_reading(self) -> None:
        """Pause the stream's credit while the connection is being made or its socket is
        backed up; once the response is over, only while the rest of the request is still
        written to a connection that is backed up."""
        conn = self.conn
        if self.response_done:
            want = conn is not None and conn.write_paused
        else:
            want = conn is None or conn.write_paused
        if want != self.reading_paused and not self.gone:
            self.reading_paused = want
            if want:
                self.stream.pause_reading()
            else:
                self.stream.resume_reading()

    # -- the target's side: response bytes ----------------------------------------------

    def response_data(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.response_done:
            if not self.upgraded:  # bytes after a complete response: out of step
                self._fail(TargetFailed("local target sent bytes after its response"))
                return
            self.stream.write(data)
            return
        self.stream.write(data)
        conn = self.conn
        if conn is None:
            return
        observer = conn.observer
        try:
            observer.feed(data)
        except TargetFailed as exc:
            self._fail(exc)
            return
        self.status = observer.status  # known once the head is complete (request lines)
        if observer.complete:
            self.keep_alive = observer.keep_alive
            self._respond_done(observer.upgrade)

    def response_eof(self) -> bool | None:
        if self.upgraded:
            self.target_eof = True
            self.stream.end()
            self._close_pipe_if_done()
            return True  # keep our half open: the relay may still send
        return None

    def connection_lost(self, conn: TargetConnection, exc: Exception | None) -> None:
        self.conn = None
        self._settle(conn, exc)
        self.update_reading()

    def _settle(self, conn: TargetConnection, exc: Exception | None) -> None:
        if self.upgraded:
            if not self.target_eof:
                self.target_eof = True
                self.stream.end()
            self._finish(None)
        elif self.response_done:
            self._finish(None)  # waiting for the relay's FIN; nothing left to pool
        elif conn.observer.ends_at_eof() and exc is None:
            self.status = conn.observer.status  # a body delimited by the end of the connection
            self._respond_done(upgrade=False)
        elif self.bytes_out == 0 and self._may_replay():
            self.pending, self.replay = self.replay or [], None
            self.forwarder.connect(self)
        elif self.bytes_out == 0:
            self._fail(TargetFailed("local target closed the connection before answering"))
        else:
            self._fail(TargetFailed("local target closed the connection mid-response"))

    # -- internals -------------------------------------------------------------------------

    def _read_head(self, data: bytes) -> bytes:
        """Find the request line (and splice Host when asked); return what to send now."""
        buf = self.head + data if self.head else data
        host = self.forwarder.host_value
        end = buf.find(b"\r\n\r\n" if host is not None else b"\r\n")
        if end < 0:
            if len(buf) > MAX_REQUEST_HEAD:
                self._fail(TargetFailed("request head too long"))
                return b""
            self.head = buf
            return data if host is None else b""
        self.head = None
        # The request line is "METHOD TARGET VERSION"; a target may hold spaces.
        line = buf[:end] if host is None else buf[: buf.find(b"\r\n")]
        self.method, _, rest = line.partition(b" ")
        self.target = rest.rpartition(b" ")[0]
        if self.method == b"HEAD" and self.conn is not None:
            self.conn.observer.head_only = True  # attach() started it before the line came
        if host is None:
            return data
        return splice_host(buf[: end + 2], host) + buf[end + 2 :]

    def _may_replay(self) -> bool:
        return self.replay is not None and self.head is None and self.method in _IDEMPOTENT

    def _send(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.send(data)
        elif data:
            self.pending.append(data)

    def _respond_done(self, upgrade: bool) -> None:
        self.response_done = True
        if upgrade:
            self.upgraded = True
            return
        self.stream.end(close=not self.keep_alive)
        self._finish(None)
        if self.request_done:
            self._release()
        if self.reading_paused or self.conn is not None:  # else nothing paused, nothing to watch
            self.update_reading()

    def _release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        conn.exchange = None
        if self.keep_alive and not conn.lost:
            if self.write_paused:
                conn.transport.resume_reading()
            self.forwarder.release(conn)
        else:
            conn.transport.close()

    def _close_pipe_if_done(self) -> None:
        if self.target_eof and self.request_done and self.conn is not None:
            self._drop_connection(abort=False)
            self._finish(None)

    def _fail(self, error: TargetError) -> None:
        code = error.code if self.bytes_out == 0 else ErrorCode.TARGET_ERROR
        if not self.done and not self.gone:
            self.gone = True
            self.stream.reset(code, str(error), after_queued=True)
        self._drop_connection(abort=True)
        self._finish(str(error), code)

    def _drop_connection(self, abort: bool) -> None:
        conn, self.conn = self.conn, None
        self.response_done = True  # drop later request bytes; a late attach() pools the conn
        if conn is not None:
            conn.exchange = None
            if abort:
                conn.abort()
            else:
                conn.transport.close()

    def _finish(self, error: str | None, reset: ErrorCode | None = None) -> None:
        if self.done:
            return
        self.done = True
        if self.on_done is not None:
            self.on_done(
                ExchangeRecord(
                    self.stream.sid,
                    self.method.decode("latin-1"),
                    self.target.decode("latin-1"),
                    self.status or None,
                    (time.monotonic() - self.started) * 1000.0,
                    self.bytes_in,
                    self.bytes_out,
                    error,
                    reset,
                )
            )
