"""The ASGI ``websocket`` scope of an in-process app, over one upgraded tunnel stream.

Theory of operation. The object bridge (:mod:`edge_agent.bridge`) hands a stream whose
request asks for ``Upgrade: websocket`` to :meth:`edge_agent.asgi.AsgiTarget.websocket`,
which makes one :class:`AsgiWebSocket`: the stream's :class:`~edge_agent.port.StreamHandler`
from then on, and the ``receive``/``send`` pair of one app call. The WebSocket framing is
the websockets library's sans-I/O :class:`~websockets.server.ServerProtocol`, used twice:
once (CONNECTING) only to check the handshake request and build the 101, then a second
one (OPEN) for the frames, because the first one's parser still expects an HTTP request.

* Handshake: an invalid request (no key, wrong version) is answered by the library's
  4xx and the app is never called. Otherwise the app gets ``websocket.connect``; its
  ``websocket.accept`` writes the 101 with the subprotocol and headers it chose (no
  extension is negotiated: permessage-deflate is off, as on the tunnel itself); its
  ``websocket.close`` before that is a 403, an app that fails or returns first a 500, and
  ``websocket.http.response.*`` (the denial-response extension) its own answer.
* Messages: fragments are joined into one message of at most ``max_message`` bytes (1009
  beyond); text must be UTF-8 (1007); pings are answered by the protocol itself. Messages
  the app has not received are held up to ``inbox_limit`` bytes; past it the stream's
  reading pauses (the relay stops after one window), so a slow app does not grow memory.
  ``send()`` waits while the stream is over the runtime's high mark.
* Closing: close codes and reasons pass both ways (``websocket.close`` <-> a close
  frame, a close frame -> ``websocket.disconnect``). The socket is over when both halves
  of the stream ended, or the relay aborted it (1006 for the app); a peer that does not
  complete a closing handshake within ``close_timeout`` is reset. Then ``on_close`` is
  called once (for the request line, with the duration), ``send()`` raises
  :class:`ClientDisconnected`, and an app still running after ``disconnect_grace`` is
  cancelled. An app that returns after accepting closes with 1000, one that raises 1011.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import http
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

from websockets.datastructures import Headers
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from edge_agent.asgi_lifespan import Message, Receive, Send
from edge_agent.port import StreamPort
from wire import ErrorCode

#: Largest message (all its fragments) the app may receive; a bigger one closes the
#: socket with 1009. uvicorn's default ``ws_max_size``, so apps behave as under uvicorn.
MAX_MESSAGE: Final = 16 * 1024 * 1024

#: Received message bytes held for an app that has not called ``receive()``; past it the
#: stream's reading pauses (one more window may still arrive), below half it resumes.
INBOX_LIMIT: Final = 1024 * 1024

#: Seconds a peer has to complete the closing handshake (its close frame, then the end of
#: its half) once ours was sent; then the stream is reset.
CLOSE_TIMEOUT: Final = 10.0

#: Largest body of a denial response (``websocket.http.response.body``), buffered whole
#: so that it goes out with its Content-Length.
MAX_DENIAL_BODY: Final = 64 * 1024

#: Request bytes held while the app has not accepted yet (a client must wait for the 101
#: before it sends frames; the stream's reading is paused meanwhile).
MAX_EARLY_DATA: Final = 64 * 1024

logger = logging.getLogger(__name__)

#: The websockets library's own lines (handshakes, "connection closed"): under the name
#: the agent's ``-vvv`` turns on, as for its tunnel.
_protocol_logger: Final = logging.getLogger("tunnel.websocket")

_FRAMING: Final = frozenset({"content-length", "transfer-encoding", "connection"})

#: Characters that would split or end a header line (response splitting).
_UNSAFE: Final = re.compile(r"[\r\n\0]")


@dataclasses.dataclass(frozen=True, slots=True)
class WebSocketLimits:
    """The limits of one in-process WebSocket (defaults: the constants above)."""

    max_message: int = MAX_MESSAGE
    inbox_limit: int = INBOX_LIMIT
    close_timeout: float = CLOSE_TIMEOUT
    disconnect_grace: float = 5.0  # as AsgiTarget's: then a running app is cancelled


DEFAULT_LIMITS: Final = WebSocketLimits()


#: ``on_close(status, bytes_out, error, reset)``: the handshake's status (101, or the
#: rejection's), bytes written to the stream, why it ended badly (None for a clean end)
#: and the RESET code if the stream was reset or aborted.
OnClose = Callable[[int | None, int, str | None, ErrorCode | None], None]


#: The app called with its scope: ``call(receive, send)``.
AppCall = Callable[[Receive, Send], Awaitable[None]]


class ClientDisconnected(OSError):
    """``send()`` on a socket that is closed (ASGI asks servers for an OSError here)."""


class _Phase(enum.Enum):
    CONNECTING = "connecting"  # waiting for the app's accept
    OPEN = "open"  # 101 sent: frames both ways
    CLOSED = "closed"  # the socket is over for the app (both halves, a reset or a rejection)


class AsgiWebSocket:
    """One WebSocket between the tunnel and the app (see the module docstring).

    Args:
        stream: the upgraded stream (the handshake request has been read).
        request: the handshake request, for the handshake checks.
        on_close: called once when the socket is over.
        limits: sizes and timeouts (:class:`WebSocketLimits`).
    """

    def __init__(
        self,
        stream: StreamPort,
        request: Request,
        on_close: OnClose,
        limits: WebSocketLimits = DEFAULT_LIMITS,
    ) -> None:
        self.stream = stream
        self.request = request
        self.on_close = on_close
        self.max_message = limits.max_message
        self.inbox_limit = limits.inbox_limit
        self.close_timeout = limits.close_timeout
        self.disconnect_grace = limits.disconnect_grace
        self.phase = _Phase.CONNECTING
        # no subprotocols, no extensions: the app's choice
        self.handshake = ServerProtocol(logger=_protocol_logger)
        self.response = self.handshake.accept(request)
        self.proto: ServerProtocol | None = None
        self.task: asyncio.Task[None] | None = None
        self.early: list[bytes] = []
        self.early_size = 0
        self.inbox: deque[tuple[Message, int]] = deque()  # with its size on the wire
        self.inbox_size = 0
        self.ready = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.reading_paused = False
        self.parts: list[bytes] = []
        self.text = False
        self.connect_sent = False
        self.disconnect: Message | None = None
        self.denial: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self.denial_body: list[bytes] = []
        self.our_eof = False
        self.their_eof = False
        self.status: int | None = None
        self.sent = 0
        self.timer: asyncio.TimerHandle | None = None

    @property
    def valid(self) -> bool:
        """The handshake request is a valid WebSocket upgrade (else :meth:`reject_invalid`)."""
        return self.response.status_code == 101

    def reject_invalid(self) -> None:
        """Answer an invalid handshake request with the library's own 4xx."""
        self._answer(self.response)

    def start(self, call: AppCall) -> asyncio.Task[None]:
        """Run ``call(receive, send)`` (the app with its scope) in a task of its own;
        the stream's reading pauses until the app accepts."""
        self.stream.pause_reading()  # a client may not send frames before the 101
        self.reading_paused = True
        self.task = asyncio.create_task(self._run(call), name=f"asgi-ws-{self.stream.sid}")
        return self.task

    async def _run(self, call: AppCall) -> None:
        try:
            await call(self.receive, self.send)
        except ClientDisconnected:
            self._app_ended(CloseCode.NORMAL_CLOSURE)  # it sent to a closed socket: fine
        except Exception:
            logger.exception("asgi_app_error", extra={"stream_id": self.stream.sid})
            self._app_ended(CloseCode.INTERNAL_ERROR)
        else:
            self._app_ended(CloseCode.NORMAL_CLOSURE)

    def _app_ended(self, code: CloseCode) -> None:
        if self.phase is _Phase.CONNECTING:
            self._answer(self.handshake.reject(500, "Internal Server Error\n"))
        elif self.phase is _Phase.OPEN and self.proto is not None:
            if self.proto.state is State.OPEN:
                self.proto.send_close(code)
                self._flush()

    # -- ASGI receive / send ------------------------------------------------------------

    async def receive(self) -> Message:
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        while not self.inbox:
            if self.disconnect is not None:
                return self.disconnect
            self.ready.clear()
            await self.ready.wait()
        message, size = self.inbox.popleft()
        self.inbox_size -= size
        if self.reading_paused and self.inbox_size <= self.inbox_limit // 2:
            self._resume_reading()
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self._accept(message.get("subprotocol"), message.get("headers") or [])
        elif kind == "websocket.send":
            await self._send_message(message)
        elif kind == "websocket.close":
            self._close(message.get("code", 1000), message.get("reason") or "")
        elif kind == "websocket.http.response.start":
            self._denial_start(message)
        elif kind == "websocket.http.response.body":
            self._denial_body(message)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def _accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        if self.phase is _Phase.CLOSED:
            raise ClientDisconnected("the client went away before the accept")
        if self.phase is not _Phase.CONNECTING or self.denial is not None:
            raise RuntimeError("websocket.accept after the handshake was answered")
        response = self.response
        if subprotocol is not None:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
        for name, value in _safe(headers):
            response.headers[name] = value
        self.status = 101
        self._write(response.serialize())
        self.phase = _Phase.OPEN
        self.proto = ServerProtocol(
            state=State.OPEN, max_size=self.max_message, logger=_protocol_logger
        )
        early, self.early = self.early, []
        for data in early:
            self.data(data)
        self._resume_reading()

    async def _send_message(self, message: Message) -> None:
        proto = self.proto
        if self.phase is _Phase.CONNECTING:
            raise RuntimeError("websocket.send before websocket.accept")
        if proto is None or self.phase is _Phase.CLOSED or proto.state is not State.OPEN:
            raise ClientDisconnected("the WebSocket is closed")
        text = message.get("text")
        if text is not None:
            proto.send_text(text.encode())
        else:
            proto.send_binary(message.get("bytes") or b"")
        self._flush()
        if not self.writable.is_set():
            await self.writable.wait()

    def _close(self, code: int, reason: str) -> None:
        if self.phase is _Phase.CONNECTING and self.denial is None:
            self._answer(self.handshake.reject(403, "Forbidden\n"))
        elif self.proto is not None and self.proto.state is State.OPEN:
            self.proto.send_close(code, reason)
            self._flush()
        # else: already closing or closed; a second close is a no-op, as in uvicorn

    def _denial_start(self, message: Message) -> None:
        if self.phase is not _Phase.CONNECTING or self.denial is not None:
            raise RuntimeError("websocket.http.response.start after the handshake was answered")
        self.denial = (int(message["status"]), list(message.get("headers") or []))

    def _denial_body(self, message: Message) -> None:
        if self.denial is None or self.phase is not _Phase.CONNECTING:
            raise RuntimeError("websocket.http.response.body without its start")
        self.denial_body.append(bytes(message.get("body", b"")))
        body = b"".join(self.denial_body)
        if len(body) > MAX_DENIAL_BODY:
            raise RuntimeError(f"a denial response body is limited to {MAX_DENIAL_BODY} bytes")
        if not message.get("more_body", False):
            status, raw = self.denial
            # this side frames the body
            headers = Headers((n, v) for n, v in _safe(raw) if n.lower() not in _FRAMING)
            headers["Content-Length"] = str(len(body))
            headers["Connection"] = "close"
            self._answer(Response(status, _reason(status), headers, body))

    # -- StreamHandler: the relay's side ------------------------------------------------

    def data(self, data: bytes) -> None:
        proto = self.proto
        if self.phase is _Phase.CLOSED:
            return
        if proto is None:
            self._hold_early(data)
            return
        proto.receive_data(data)
        for event in proto.events_received():
            if isinstance(event, Frame):
                self._frame(proto, event)
        self._flush()

    def end(self, close: bool) -> None:
        self.their_eof = True
        if self.phase is _Phase.CONNECTING:  # the client left before the app accepted
            self.our_eof = True
            self.stream.end(close=True)
            self._set_disconnect(CloseCode.ABNORMAL_CLOSURE, "")
            self._over("the client left before the accept", None)
            return
        if self.proto is not None:
            self.proto.receive_eof()  # after no close frame: 1006 for the app
            self._flush()
        self._set_disconnect(CloseCode.ABNORMAL_CLOSURE, "")
        self._maybe_over()

    def aborted(self, code: ErrorCode, reason: str) -> None:
        self._set_disconnect(CloseCode.ABNORMAL_CLOSURE, "")
        self._over(f"aborted by the relay: {code.name} {reason}".rstrip(), code)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # -- internals ----------------------------------------------------------------------

    def _hold_early(self, data: bytes) -> None:
        self.early.append(data)
        self.early_size += len(data)
        if self.early_size > MAX_EARLY_DATA:
            self.stream.reset(ErrorCode.LIMIT_EXCEEDED, "WebSocket frames before the 101")
            self._over("WebSocket frames before the 101", ErrorCode.LIMIT_EXCEEDED)

    def _frame(self, proto: ServerProtocol, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self.text = opcode is Opcode.TEXT
            self.parts = [bytes(frame.data)]
        elif opcode is Opcode.CONT:
            self.parts.append(bytes(frame.data))
        elif opcode is Opcode.CLOSE:
            close = proto.close_rcvd or Close(CloseCode.NO_STATUS_RCVD, "")
            self._set_disconnect(close.code, close.reason)
            return
        else:
            return  # PING (the protocol queued the PONG) or PONG
        if frame.fin:
            self._deliver(proto)

    def _deliver(self, proto: ServerProtocol) -> None:
        data = b"".join(self.parts)
        self.parts = []
        message: Message
        if self.text:
            try:
                message = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                proto.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
                self._set_disconnect(CloseCode.INVALID_DATA, "")
                return
        else:
            message = {"type": "websocket.receive", "bytes": data}
        self.inbox.append((message, len(data)))
        self.inbox_size += len(data)
        self.ready.set()
        if self.inbox_size > self.inbox_limit and not self.reading_paused:
            self.reading_paused = True
            self.stream.pause_reading()

    def _flush(self) -> None:
        proto = self.proto
        if proto is None:
            return
        for chunk in proto.data_to_send():
            if self.phase is _Phase.CLOSED:
                continue  # the stream is gone: what the protocol still says goes nowhere
            if chunk:
                self._write(chunk)
            elif not self.our_eof:
                self.our_eof = True
                self.stream.end()
        if proto.close_sent is not None:
            if proto.close_rcvd is None and proto.parser_exc is not None:
                self._set_disconnect(proto.close_sent.code, proto.close_sent.reason)
            self._arm_close_timer()
        self._maybe_over()

    def _arm_close_timer(self) -> None:
        if self.timer is None and self.phase is not _Phase.CLOSED:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        if self.phase is not _Phase.CLOSED:
            self.stream.reset(ErrorCode.CANCEL, "WebSocket closing handshake timed out")
            self._set_disconnect(CloseCode.ABNORMAL_CLOSURE, "")
            self._over("closing handshake timed out", ErrorCode.CANCEL)

    def _answer(self, response: Response) -> None:
        """An HTTP answer instead of the 101: written, the stream ended, the socket over."""
        self.status = response.status_code
        self._write(response.serialize())
        self.our_eof = True
        self.stream.end(close=True)
        self._set_disconnect(CloseCode.ABNORMAL_CLOSURE, "")
        error = None if response.status_code < 500 else "the app failed before accepting"
        self._over(error, None)

    def _write(self, data: bytes) -> None:
        if not self.our_eof and self.phase is not _Phase.CLOSED:
            self.sent += len(data)
            self.stream.write(data)

    def _set_disconnect(self, code: int, reason: str) -> None:
        if self.disconnect is None:
            self.disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self.ready.set()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.phase is not _Phase.CLOSED:
            self.reading_paused = False
            self.stream.resume_reading()

    def _maybe_over(self) -> None:
        if self.our_eof and self.their_eof:
            self._over(None, None)

    def _over(self, error: str | None, reset: ErrorCode | None) -> None:
        if self.phase is _Phase.CLOSED:
            return
        self.phase = _Phase.CLOSED
        self.writable.set()
        if self.timer is not None:
            self.timer.cancel()
        task = self.task
        if task is not None and not task.done():
            timer = asyncio.get_running_loop().call_later(self.disconnect_grace, task.cancel)
            task.add_done_callback(lambda _: timer.cancel())
        self.on_close(self.status, self.sent, error, reset)


def _safe(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The app's headers as text; RuntimeError (the app's send fails) for a header that
    would split the response head."""
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw]
    if any(_UNSAFE.search(n) or _UNSAFE.search(v) for n, v in headers):
        raise RuntimeError("a response header contains CR, LF or NUL")
    return headers


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""
