"""One v2 stream piped to one pooled connection to the target: the forwarder's hot path.

Theory of operation. A :class:`Passthrough` is the :class:`~edge_agent.port.StreamHandler`
of one stream. Request bytes go to the target connection as they come (held in a list
while the connection is being made, with the stream's reading paused so that at most
one window is held). Response bytes go to ``stream.write`` as they come, one write per
``data_received``, and are also fed to an observe-only httptools parser that never
changes them; it only finds the end of the response:

* 1xx interim heads pass through and the parser moves on to the next head;
* HEAD: the response ends with its head (the method is read from the request line);
* 204/304, Content-Length, chunked (trailers included): llhttp's message end;
* no framing at all: the end of the connection (``connection_lost`` without error);
* 101: from then on the stream is a raw pipe both ways, each direction half-closed by
  its own EOF (``write_eof`` toward the target, ``stream.end`` toward the relay).

At the response's end the stream is ended with CLOSE unless llhttp says the connection
stays alive. The connection goes back to the pool only when the relay's FIN was seen,
the response was complete and keep-alive holds; anything else closes or aborts it, so a
half-used connection is never reused. Failures before the first response byte reset
the stream with the error's own code (CONNECT_ERROR, TARGET_TIMEOUT, TARGET_ERROR);
after it always TARGET_ERROR. :meth:`Passthrough.aborted` aborts the local connection,
which the local server sees as a disconnect.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

import httptools

from edge_agent.errors import TargetError, TargetFailed
from edge_agent.port import ExchangeRecord, StreamPort
from wire import ErrorCode

if TYPE_CHECKING:
    from edge_agent.forward import HttpForwarder

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


class TargetConnection(asyncio.Protocol):
    """One connection to the target; serves one :class:`Passthrough` at a time."""

    def __init__(self, forwarder: HttpForwarder) -> None:
        self.forwarder = forwarder
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.exchange: Passthrough | None = None
        self.lost = False
        self.write_paused = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.abort()  # bytes on an idle connection: it is out of step, never reuse it
        else:
            exchange.response_data(data)

    def eof_received(self) -> bool | None:
        exchange = self.exchange
        return exchange.response_eof() if exchange is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.connection_lost(exc)
        else:
            self.forwarder.discard(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchange is not None:
            self.exchange.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchange is not None:
            self.exchange.update_reading()

    def send(self, data: bytes) -> None:
        """Write toward the target; a transport that is already failing is aborted (the
        exchange learns it from ``connection_lost``), never raised into the runtime."""
        if self.lost:
            return
        try:
            self.transport.write(data)
        except (RuntimeError, OSError):
            self.abort()

    def abort(self) -> None:
        self.lost = True
        self.transport.abort()


class Passthrough:
    """The handler of one stream (see the module docstring). Made by
    :meth:`edge_agent.forward.HttpForwarder.handler`; never raises into the runtime."""

    def __init__(
        self,
        forwarder: HttpForwarder,
        stream: StreamPort,
        on_done: Callable[[ExchangeRecord], None] | None,
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
        self.started = time.monotonic()
        self.bytes_in = 0
        self.bytes_out = 0
        self.parser: httptools.HttpResponseParser | None = None
        self.status = 0  # final status; 0 until its head is complete
        self.framed = False  # Content-Length or Transfer-Encoding seen in the final head
        self.conn_close = False  # "Connection: close" seen in the final head
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
            if self.replay is not None:
                self._keep(data)
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
        self._finish(f"aborted by the relay: {code.name} {reason}".rstrip())

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
        if reused:
            self.replay = []
        if self.write_paused:
            conn.transport.pause_reading()
        if self.pending:
            pending, self.pending = self.pending, []
            conn.send(b"".join(pending))
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
        parser = self.parser
        if parser is None:
            parser = self.parser = httptools.HttpResponseParser(self)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
            return
        except httptools.HttpParserError as exc:
            self._fail(TargetFailed(f"local target sent an invalid response: {exc}"))
            return
        if self.response_done:
            self._respond_done()

    def response_eof(self) -> bool | None:
        if self.upgraded:
            self.target_eof = True
            self.stream.end()
            self._close_pipe_if_done()
            return True  # keep our half open: the relay may still send
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn = None
        self._settle(exc)
        self.update_reading()

    def _settle(self, exc: Exception | None) -> None:
        if self.upgraded:
            if not self.target_eof:
                self.target_eof = True
                self.stream.end()
            self._finish(None)
        elif self.response_done:
            self._finish(None)  # waiting for the relay's FIN; nothing left to pool
        elif self.status >= 200 and not self.framed and exc is None:
            self.response_done = True  # a body delimited by the end of the connection
            self.keep_alive = False
            self._respond_done()
        elif self.bytes_out == 0 and self._may_replay():
            self.pending, self.replay = self.replay or [], None
            self.forwarder.connect(self)
        elif self.bytes_out == 0:
            self._fail(TargetFailed("local target closed the connection before answering"))
        else:
            self._fail(TargetFailed("local target closed the connection mid-response"))

    # -- httptools callbacks (observe only) ---------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        n = len(name)
        if n == 14 or n == 17:
            low = name.lower()
            if low == b"content-length" or low == b"transfer-encoding":
                self.framed = True
        elif n == 10 and name.lower() == b"connection" and b"close" in value.lower():
            self.conn_close = True

    def on_headers_complete(self) -> None:
        parser = cast(httptools.HttpResponseParser, self.parser)
        status = parser.get_status_code()
        if status < 200 and status != 101:  # interim: passed through, the real head follows
            self.framed = self.conn_close = False
            return
        self.status = status
        self.keep_alive = parser.should_keep_alive()
        if self.method == b"HEAD":  # no body, whatever the head announces
            self.keep_alive = not self.conn_close and parser.get_http_version() == "1.1"
            self.response_done = True

    def on_message_complete(self) -> None:
        if self.status:
            self.response_done = True

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
        line = buf[: buf.find(b"\r\n")]
        self.method, _, rest = line.partition(b" ")
        self.target = rest.rpartition(b" ")[0]
        if host is None:
            return data
        return splice_host(buf[: end + 2], host) + buf[end + 2 :]

    def _keep(self, data: bytes) -> None:
        self.replay_size += len(data)
        if self.replay_size > MAX_REPLAY:
            self.replay = None
        elif self.replay is not None:
            self.replay.append(data)

    def _may_replay(self) -> bool:
        return self.replay is not None and self.head is None and self.method in _IDEMPOTENT

    def _send(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.send(data)
        elif data:
            self.pending.append(data)

    def _respond_done(self) -> None:
        if self.status == 101:
            self._upgrade()
            return
        self.parser = None
        self.stream.end(close=not self.keep_alive)
        self._finish(None)
        if self.request_done:
            self._release()
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

    def _upgrade(self) -> None:
        self.upgraded = self.response_done = True
        self.parser = None

    def _close_pipe_if_done(self) -> None:
        if self.target_eof and self.request_done and self.conn is not None:
            self._drop_connection(abort=False)
            self._finish(None)

    def _fail(self, error: TargetError) -> None:
        if not self.done and not self.gone:
            self.gone = True
            code = error.code if self.bytes_out == 0 else ErrorCode.TARGET_ERROR
            self.stream.reset(code, str(error))
        self._drop_connection(abort=True)
        self._finish(str(error))

    def _drop_connection(self, abort: bool) -> None:
        conn, self.conn = self.conn, None
        self.response_done = True  # drop later request bytes; a late attach() pools the conn
        if conn is not None:
            conn.exchange = None
            if abort:
                conn.abort()
            else:
                conn.transport.close()

    def _finish(self, error: str | None) -> None:
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
                )
            )


def splice_host(head: bytes, host: bytes) -> bytes:
    """``head`` (request line and header lines, each ending in CRLF, no blank line) with
    every Host line replaced by one ``Host: host`` in the first one's place (added
    after the request line if there was none)."""
    lines = head.split(b"\r\n")
    out = [lines[0]]
    placed = False
    for line in lines[1:-1]:
        if line[:5].lower() == b"host:":
            if not placed:
                out.append(b"Host: " + host)
                placed = True
            continue
        out.append(line)
    if not placed:
        out.insert(1, b"Host: " + host)
    out.append(b"")
    return b"\r\n".join(out)
