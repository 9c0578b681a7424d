"""One public request forwarded down a tunnel stream, and its answer coming back.

The request's bytes go down as the caller sent them (head rewritten by
:func:`relay.h1.rewrite_head`); the response's bytes come back and are written to the
caller unchanged. The relay looks at the response only through :class:`ResponseWatch`,
an observe-only parse (httptools, C) that finds its status (metrics, request lines) and
its end, and refuses anything but exactly one final response per exchange: an agent
must never be able to put bytes on a public connection that the caller would read as
the answer to its *next* request, which may be for another tunnel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import httptools

from wire import ErrorCode

if TYPE_CHECKING:
    from relay.cluster.hop import NodeStream
    from relay.public import PublicConnection
    from tunnel import Stream


#: Largest response head to a HEAD request (it is checked on its own bytes).
MAX_HEAD_RESPONSE: Final = 64 * 1024


class ResponseError(Exception):
    """The agent's bytes are not one well-formed HTTP/1.1 response."""


class ResponseWatch:
    """Observe-only check of one exchange's response bytes.

    Args:
        head_only: the request was HEAD (the response has no body, whatever it says).
        upgrade: the request asked for an upgrade (a 101 is allowed).
    """

    __slots__ = (
        "complete",
        "head",
        "head_only",
        "keep_alive",
        "parser",
        "status",
        "upgrade",
        "upgraded",
    )

    def __init__(self, head_only: bool, upgrade: bool) -> None:
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.head_only = head_only
        self.upgrade = upgrade
        self.status = 0  # the final status, once its head is complete
        self.complete = False
        self.keep_alive = False
        self.upgraded = False
        self.head = bytearray()  # HEAD only: the bytes so far (one head, small)

    def feed(self, data: bytes) -> None:
        """Check ``data``. Raises ResponseError when it breaks the rules."""
        if self.upgraded:
            return
        parser = self.parser
        if parser is None:
            raise ResponseError("bytes after the end of the exchange")
        if self.complete:
            raise ResponseError("bytes after the end of the response")
        if self.head_only:
            # The parser would read a body that a HEAD response does not have: it must
            # end exactly at its blank line, checked below on the bytes themselves.
            self.head += data
            if len(self.head) > MAX_HEAD_RESPONSE:
                raise ResponseError("the response head to a HEAD request is too large")
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self.status != 101:
                raise ResponseError("an upgrade the request did not ask for") from None
            self.upgraded = True
        except httptools.HttpParserError as exc:
            raise ResponseError(f"malformed response: {exc}") from None
        if self.head_only and self.complete and not self.head.endswith(b"\r\n\r\n"):
            raise ResponseError("bytes after the end of a response to HEAD")

    def release(self) -> None:
        """The exchange is over: drop the parser, which holds this object (the pair is
        then freed by reference counting instead of by the cyclic collector)."""
        self.parser = None

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            raise ResponseError("a second response")

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None  # called by it
        status = parser.get_status_code()
        if status < 200 and status != 101:
            return  # interim (100, 103): the final head follows
        if status == 101 and not self.upgrade:
            raise ResponseError("101 to a request that did not ask for an upgrade")
        self.status = status
        self.keep_alive = parser.should_keep_alive()
        if self.head_only:
            self.complete = True

    def on_message_complete(self) -> None:
        if self.status and self.status != 101:
            self.complete = True


class Exchange:
    """The stream handler of one forwarded request (see :class:`tunnel.StreamHandler`)."""

    __slots__ = (
        "conn",
        "headers",
        "keep_alive",
        "kept",
        "method",
        "name",
        "path",
        "replay",
        "request_done",
        "sent",
        "slot",
        "started",
        "stream",
        "tries",
        "watch",
    )

    def __init__(
        self,
        conn: PublicConnection,
        name: str,
        method: bytes,
        path: bytes,
        keep_alive: bool,
        upgrade: bool,
        started: float,
    ) -> None:
        self.conn = conn
        self.name = name
        self.method = method
        self.path = path
        self.keep_alive = keep_alive
        self.watch = ResponseWatch(method == b"HEAD", upgrade)
        self.started = started
        self.sent = 0  # response bytes written to the caller
        self.request_done = False  # the caller's request bytes all went down
        self.slot: tuple[str, str] | None = None  # (tunnel, caller address) it counts for
        self.headers: list[tuple[bytes, bytes]] = []  # the request's (a relay error's Accept)
        self.stream: Stream | NodeStream | None = None  # NodeStream: held by another node
        # Pools only (relay.pools): the request's bytes so far, to open it again on
        # another session if the first never got them (None: not kept).
        self.replay: list[bytes] | None = None
        self.kept = 0  # bytes in ``replay``
        self.tries = 0  # times opened again

    @property
    def head_only(self) -> bool:
        return self.watch.head_only

    @property
    def status(self) -> int:
        return self.watch.status

    # -- tunnel.StreamHandler ---------------------------------------------------------------

    def data(self, data: bytes) -> None:
        watch = self.watch
        if watch.parser is None and not watch.upgraded:
            return  # the exchange is over (its stream is being reset): nothing reaches the caller
        try:
            watch.feed(data)
        except ResponseError as exc:
            self.conn.agent_broke(self, str(exc))
            return
        if not self.sent:
            self.replay = None  # answered: never opened again
            self.conn.first_byte(self)
        self.sent += len(data)
        self.conn.write(data)
        if watch.upgraded:
            self.conn.upgraded(self)

    def end(self, close: bool) -> None:
        watch = self.watch
        if not watch.complete and not watch.upgraded and not (close and watch.status):
            self.conn.agent_broke(self, "the response ended early")
            return
        self.conn.response_done(self, close or not watch.keep_alive)

    def aborted(self, code: ErrorCode, reason: str) -> None:
        self.conn.exchange_aborted(self, code, reason)

    def pause_writing(self) -> None:
        self.conn.pause_reading()

    def resume_writing(self) -> None:
        self.conn.resume_reading()
