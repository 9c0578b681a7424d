"""uvicorn's httptools protocol with the guards a public edge needs.

uvicorn 0.54's httptools implementation has no limit on the size of a request head and
no timeout for receiving it (``h11_max_incomplete_event_size`` applies to h11 only, and
the keep-alive timer is not armed on a fresh connection). This subclass adds:

* a cap on the head (request line + header lines): past
  :data:`relay.config.PARSER_MAX_HEADER_BYTES` the caller gets 431 and the connection
  is closed, before the app ever sees the request;
* a head timeout: a connection that has not completed its request head within the
  configured time is closed (408 if it had started one; silently if it sent nothing);
* TCP_NODELAY on every accepted socket, so small frames (SSE events) are not delayed
  (asyncio and uvloop set it today; setting it here keeps it true whatever the loop).

Parse errors are answered with the relay's JSON error (400 ``bad_request``) instead of
uvicorn's plain text. It overrides only parser callbacks and ``send_400_response``; all
else is uvicorn's.
"""

from __future__ import annotations

import asyncio
import socket
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from relay.errors import BadRequest, HeadersTooLarge, PublicError, RequestTimeout, http_error


class _HeadTooLarge(Exception):
    """Raised inside a parser callback; httptools turns it into a parse error."""


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def guarded_protocol(max_head_bytes: int, head_timeout: float) -> type[HttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with the given limits."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _head_started = False
        _head_too_large = False
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            set_nodelay(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._head_started = True
            self._arm_head_timer()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm_head_timer()
            self._head_started = False
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            # A parse error: answer with the relay's JSON error like everywhere else.
            if self._head_too_large:
                self._send_error(HeadersTooLarge())
            else:
                self._send_error(BadRequest("the request is not valid HTTP/1.1"))

        def _count(self, n: int) -> None:
            self._head_bytes += n
            if self._head_bytes > max_head_bytes:
                self._head_too_large = True
                raise _HeadTooLarge()

        def _arm_head_timer(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(head_timeout, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            if self._head_started:
                self._send_error(RequestTimeout("the request head was sent too slowly"))
            else:
                self.transport.close()

        def _send_error(self, exc: PublicError) -> None:
            status, headers, body = http_error(exc)
            lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
            lines += [name + b": " + value + b"\r\n" for name, value in headers]
            lines.append(b"connection: close\r\n\r\n")
            self.transport.write(b"".join(lines) + body)
            self.transport.close()

    return GuardedHttpToolsProtocol
