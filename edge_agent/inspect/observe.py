"""The Recorder: an observe-only parse of the HTTP/1.1 bytes the agent forwards.

The data path calls, for each exchange it forwards (``xid``: any hashable key that is
unique while the exchange is open)::

    rid = recorder.opened(xid)               # a request arrived (returns the row id)
    recorder.request_bytes(xid, data)        # bytes written to the local target
    recorder.response_bytes(xid, data)       # bytes read back from it
    recorder.mark_duplicate(xid)             # answered by the de-duplication's cache
    recorder.closed(xid, error)              # ended (error: None, or why it failed)

Every call is synchronous and quick and never raises. ``bytes`` handed over are kept
(they are immutable) until parsed; anything else (a ``memoryview`` of a buffer that
will be reused) is copied first. The bytes are parsed with httptools (the request and
the response each with its own parser, chunked encoding undone); a
``text/event-stream`` response is split into SSE events and a 101 into WebSocket
messages, each stamped with the time its bytes arrived; an A2A JSON-RPC request,
response or event gives its ids (:mod:`~edge_agent.inspect.a2a`). Bytes the parser
cannot understand stop the parse of that direction (noted on the row); the forwarding
is not affected in any way. When the inspector is off there is no Recorder and the data
path makes none of these calls.

The parse is lazy: the calls only queue the bytes with their arrival time, and the
parse catches up when the row is read (:meth:`Store.get`, the page's live updates) or
when :data:`BACKLOG` bytes wait. Measured on the development VM with a small GET
through the adapter of :mod:`~edge_agent.inspect.tap`: about 4.5 us of CPU per
exchange in these calls, plus about 17-20 us for its parse when someone looks at it
(before, parsing as the bytes came: about 37 us per exchange, much of it the cyclic GC
collecting each finished parse).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any, Final

import httptools

from edge_agent.inspect import a2a
from edge_agent.inspect.sse import SseParser
from edge_agent.inspect.store import MAX_PREVIEW, Exchange, Side, Store
from edge_agent.inspect.wsframes import FrameParser, WsMessage

logger = logging.getLogger(__name__)

#: Header lines kept per head (more are dropped).
MAX_HEADER_LINES: Final = 256
#: Bytes an exchange holds unparsed. The parse waits until someone looks at the row
#: (the API, the page) so that a request nobody watches costs little; past this many
#: bytes it catches up at once, which bounds the memory the waiting bytes take.
BACKLOG: Final = 16 * 1024


class _Head:
    """httptools callbacks shared by both directions: the head and the body."""

    def __init__(self, parse: _Parse, side: Side) -> None:
        self.parse = parse
        self.side = side
        self.url = b""
        self.raw: list[tuple[bytes, bytes]] = []  # decoded at the end of the head
        self.ended = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw.append((name, value))

    def headers(self) -> list[tuple[str, str]]:
        """The head's header lines, decoded (the first MAX_HEADER_LINES); resets them."""
        raw, self.raw = self.raw[:MAX_HEADER_LINES], []
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw]

    def on_body(self, body: bytes) -> None:
        self.side.keep(body, self.parse.store.body_limit)

    def on_message_complete(self) -> None:
        self.ended = True
        self.side.complete = True


class _RequestHead(_Head):
    def on_headers_complete(self) -> None:
        self.side.headers = self.headers()
        self.parse.request_head(self.url.decode("latin-1"))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.parse.request_ended()


class _ResponseHead(_Head):
    def on_headers_complete(self) -> None:
        self.side.headers = self.headers()
        self.parse.response_head()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self.parse.sse is not None:
            self.parse.sse_bytes(body)

    def on_message_complete(self) -> None:
        if self.parse.exchange.status is not None:  # not the end of a 1xx
            super().on_message_complete()
            self.parse.response_ended()


class _Parse:
    """The parse of one exchange (both directions)."""

    def __init__(self, exchange: Exchange, store: Store) -> None:
        self.exchange = exchange
        self.store = store
        # Made at the first catch-up (:meth:`_start`), dropped at the close (:meth:`_end`).
        self.req: _RequestHead
        self.resp: _ResponseHead
        self.req_parser: Any = None
        self.resp_parser: Any = None
        self.req_frames: FrameParser | None = None
        self.resp_frames: FrameParser | None = None
        self.sse: SseParser | None = None
        self.failed = [False, False]  # request, response
        self.backlog: list[tuple[int, float, Any]] = []  # (0 request|1 response|2 closed, t, data)
        self.backlog_size = 0
        self.now = 0.0  # arrival time of the bytes being parsed

    # -- the backlog ------------------------------------------------------------------

    def add(self, direction: int, at: float, data: Any) -> None:
        """Queue bytes (or the close, direction 2) for the parse; catch up when the
        backlog is full. Listeners are told the row changed (they will look at it)."""
        if not self.backlog:
            self.store.defer(self.exchange, self.catch_up)
        self.backlog.append((direction, at, data))
        if direction < 2:
            self.backlog_size += len(data)
        if self.backlog_size > BACKLOG:
            self.catch_up()
        elif self.store.listening:
            self.store.changed(self.exchange)

    def catch_up(self) -> None:
        """Parse everything queued, each piece at its arrival time."""
        self.store.settled(self.exchange)
        backlog, self.backlog, self.backlog_size = self.backlog, [], 0
        if self.req_parser is None:
            self._start()
        for direction, at, data in backlog:
            self.now = at
            try:
                if direction == 0:
                    self.request_bytes(data)
                elif direction == 1:
                    self.response_bytes(data)
                else:
                    self.closed(data)
                    self._end()
            except Exception:  # a bug here: stop parsing, keep what was understood
                logger.exception("inspect_failed", extra={"exchange": self.exchange.id})
                self.failed = [True, True]

    def _start(self) -> None:
        self.req = _RequestHead(self, self.exchange.request)
        self.resp = _ResponseHead(self, self.exchange.response)
        self.req_parser = httptools.HttpRequestParser(self.req)
        self.resp_parser = httptools.HttpResponseParser(self.resp)

    def _end(self) -> None:
        """The exchange is over: drop the parsers and the heads, and with them the
        reference cycle (parse -> head -> parse), so nothing waits for the cyclic GC."""
        self.req_parser = self.resp_parser = None
        del self.req, self.resp
        self.req_frames = self.resp_frames = None
        self.sse = None

    # -- bytes in ------------------------------------------------------------------

    def request_bytes(self, data: bytes) -> None:
        if self.req_frames is not None:
            self._frames(self.req_frames, data, "in")
        elif not self.failed[0] and not self.req.ended:
            self._feed(0, self.req_parser, data)

    def response_bytes(self, data: bytes) -> None:
        if self.resp_frames is not None:
            self._frames(self.resp_frames, data, "out")
        elif not self.failed[1] and not self.resp.ended:
            self._feed(1, self.resp_parser, data)

    def _feed(self, direction: int, parser: Any, data: bytes) -> None:
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(direction, bytes(data[exc.args[0] :]))
        except Exception as exc:  # malformed bytes, or a bug here: stop this direction
            self.failed[direction] = True
            what = "request" if direction == 0 else "response"
            self._note(f"the inspector could not parse the {what}: {type(exc).__name__}")

    def _upgraded(self, direction: int, rest: bytes) -> None:
        frames = FrameParser(MAX_PREVIEW)
        if direction == 0:
            self.req.ended = self.exchange.request.complete = True
            self.req_frames = frames
            if rest:
                self._frames(frames, rest, "in")
            return
        if self.exchange.status != 101:
            return
        self.resp.ended = self.exchange.response.complete = True
        self.exchange.kind = "websocket"
        self.resp_frames = frames
        self.store.changed(self.exchange)
        if rest:
            self._frames(frames, rest, "out")

    # -- heads and ends ------------------------------------------------------------------

    def request_head(self, url: str) -> None:
        exchange = self.exchange
        exchange.method = self.req_parser.get_method().decode("latin-1")
        exchange.path = url
        self.store.masker.learn(exchange.request.headers)
        self.store.changed(exchange)

    def request_ended(self) -> None:
        side = self.exchange.request
        if self.exchange.method == "POST" and side.size and not side.truncated:
            facts = a2a.request_facts(bytes(side.body))
            if facts is not None:
                self.exchange.a2a = facts

    def response_head(self) -> None:
        status = self.resp_parser.get_status_code()
        if status < 200 and status != 101:  # interim: the real head follows
            self.exchange.response.headers = []
            return
        exchange = self.exchange
        exchange.status = status
        self.store.masker.learn(exchange.response.headers)
        content_type = _header(exchange.response.headers, "content-type")
        if content_type.lower().startswith("text/event-stream"):
            exchange.kind = "sse"
            self.sse = SseParser()
        if exchange.method == "HEAD":  # no body, whatever the head says
            self.resp.on_message_complete()
        self.store.changed(exchange)

    def response_ended(self) -> None:
        exchange = self.exchange
        side = exchange.response
        if exchange.a2a is not None and self.sse is None and not side.truncated:
            self._a2a(a2a.loads(bytes(side.body)))

    # -- timelines -------------------------------------------------------------------

    def sse_bytes(self, body: bytes) -> None:
        assert self.sse is not None
        events = self.sse.feed(body)
        if not events:
            return
        t = self.exchange.ms(self.now)
        for event in events:
            entry: dict[str, Any] = {
                "t": t,
                "type": "sse",
                "event": event.event,
                "id": event.id,
                "size": len(event.data),
                "data": event.data[:MAX_PREVIEW],
            }
            if self.exchange.a2a is not None:
                entry["a2a"] = self._a2a(a2a.loads(event.data))
            self.exchange.add_event(entry, self.store.body_limit)
        self.store.changed(self.exchange)

    def _frames(self, parser: FrameParser, data: bytes, direction: str) -> None:
        try:
            messages = parser.feed(bytes(data))
        except Exception as exc:  # cannot happen with any bytes; never let it out
            self._note(f"the inspector could not parse a WebSocket frame: {exc}")
            return
        if not messages:
            return
        t = self.exchange.ms(self.now)
        for message in messages:
            self.exchange.add_event(_ws_entry(t, direction, message), self.store.body_limit)
        self.store.changed(self.exchange)

    def _a2a(self, doc: Any) -> str:
        facts = a2a.response_facts(doc)
        if facts is None or self.exchange.a2a is None:
            return ""
        a2a.merge(self.exchange.a2a, facts)
        return str(facts["label"])

    def _note(self, text: str) -> None:
        logger.debug("inspect_parse_failed", extra={"exchange": self.exchange.id, "note": text})
        if self.exchange.error is None:
            self.exchange.error = text

    def closed(self, error: str | None) -> None:
        exchange = self.exchange
        exchange.done_at = self.now
        if error is not None:
            exchange.state, exchange.error = "error", error
        else:
            exchange.state = "done"
            if exchange.status is not None and not self.resp.ended:
                self.resp.ended = exchange.response.complete = True  # ended by the close
                self.response_ended()
        self.store.changed(exchange)


def _ws_entry(t: float | None, direction: str, message: WsMessage) -> dict[str, Any]:
    entry: dict[str, Any] = {"t": t, "type": "ws", "dir": direction, "kind": message.kind}
    entry["size"] = message.size
    if message.opcode == 1:
        entry["data"] = message.preview.decode("utf-8", "replace")
    elif message.opcode == 8 and len(message.preview) >= 2:
        code = int.from_bytes(message.preview[:2], "big")
        entry["data"] = f"{code} {message.preview[2:].decode('utf-8', 'replace')}".strip()
    else:
        entry["hex"] = message.preview[:64].hex(" ")
    return entry


def _header(headers: list[tuple[str, str]], name: str) -> str:
    for n, v in headers:
        if n.lower() == name:
            return v
    return ""


class Recorder:
    """Feeds exchanges into a :class:`Store` (see the module docstring for the calls)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._open: dict[Hashable, _Parse] = {}

    @property
    def open_exchanges(self) -> int:
        return len(self._open)

    def opened(self, xid: Hashable, *, replay_of: int | None = None) -> int:
        """A new exchange under ``xid``; returns its row id (``replay_of``: the row it
        replays). Reusing an open ``xid`` ends the old one first."""
        if xid in self._open:
            self.closed(xid, "superseded")
        exchange = self.store.new(replay_of)
        self._open[xid] = _Parse(exchange, self.store)
        return exchange.id

    def request_bytes(self, xid: Hashable, data: bytes) -> None:
        parse = self._open.get(xid)
        if parse is not None and data:
            self._add(parse, 0, parse.exchange.request, data)

    def response_bytes(self, xid: Hashable, data: bytes) -> None:
        parse = self._open.get(xid)
        if parse is not None and data:
            self._add(parse, 1, parse.exchange.response, data)

    def mark_duplicate(self, xid: Hashable) -> None:
        parse = self._open.get(xid)
        if parse is not None:
            parse.exchange.duplicate = True
            self.store.changed(parse.exchange)

    def closed(self, xid: Hashable, error: str | None = None) -> None:
        parse = self._open.pop(xid, None)
        if parse is not None:
            try:
                parse.add(2, self.store.clock(), error)
            except Exception:  # a bug in the inspector must never reach the data path
                logger.exception("inspect_failed", extra={"exchange": parse.exchange.id})

    def _add(self, parse: _Parse, direction: int, side: Side, data: bytes) -> None:
        now = self.store.clock()
        if side.first_at is None:
            side.first_at = now
        try:
            parse.add(direction, now, data if type(data) is bytes else bytes(data))
        except Exception:  # a bug in the inspector must never reach the data path
            logger.exception("inspect_failed", extra={"exchange": parse.exchange.id})
