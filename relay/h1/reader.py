"""RequestReader: the bytes of one public connection, cut into requests.

State machine (one state at a time; ``_run`` moves through as many as the bytes allow)::

    HEAD --head, no body--------------------------------------------> HEAD (End)
    HEAD --Content-Length--> LENGTH --n bytes-----------------------> HEAD (End)
    HEAD --chunked--> CHUNK_LINE --size>0--> CHUNK_DATA --> CHUNK_CRLF --> CHUNK_LINE
                      CHUNK_LINE --size 0--> TRAILERS --empty line--> HEAD (End)
    any message with Head.upgrade, at its End ----------------------> PAUSED
    PAUSED --resume()--> HEAD;   any state --switch_to_raw()--> RAW (forever)
    any state --error--> DEAD (every later call raises a copy of the error)

Bytes are consumed in whole units (a head, a chunk-size line, a CRLF, a trailer
section, payload bytes); an unfinished unit stays in ``_buf`` and is bounded by the limit
of its state, so a caller can never make the reader hold more than the largest limit plus
one read. Searches in an unfinished unit resume where the last one stopped (``_scanned``),
so feeding N bytes costs O(N) whatever the read sizes are.
"""

from __future__ import annotations

import re
from typing import Final

from relay.h1.errors import BadRequest, ClosedMidRequest, H1Error, HeadTooLarge
from relay.h1.events import END, FORWARDING_FIELDS, Body, Event, Framing, Head
from relay.h1.head import check_partial, parse_head

_HEAD, _LENGTH, _CHUNK_LINE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _PAUSED, _RAW = range(8)

_TOKEN: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED: Final = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# chunk = chunk-size [ chunk-ext ] CRLF, with no whitespace anywhere (the RFC's BWS
# around ";" and "=" is refused: no client sends it, and lenient parsers disagree on it).
_CHUNK_LINE_RE: Final = re.compile(
    rb"([0-9A-Fa-f]{1,16})((?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*)"
)
_CHUNK_PREFIX: Final = re.compile(rb"[0-9A-Fa-f]{0,16}(?:;[^\r\n]*)?\r?")
_TRAILER_SECTION: Final = re.compile(rb"(?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)+\r\n")
_TRAILER_NAMES: Final = re.compile(rb"(?m)^([^:\r\n]+):")
# Fields that must never come from a trailer (RFC 9110 section 6.5.1: framing, routing,
# authentication, and what the relay sets itself): an origin that merges trailers into
# headers would otherwise let a trailer decide what the head decided at the relay.
FORBIDDEN_TRAILERS: Final = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"upgrade",
        b"te",
        b"trailer",
        b"expect",
        b"authorization",
        b"proxy-authorization",
        b"cookie",
    }
) | frozenset(FORWARDING_FIELDS)


class RequestReader:
    """Sans-I/O reader of the requests on one connection: bytes in, events out.

    Args:
        max_head: most bytes from the first byte of a request to the end of its head
            (request line, header lines, final CRLF CRLF). Counted on the bytes received,
            whatever has been parsed, so a header line or name that never ends is refused
            at the limit: :class:`HeadTooLarge` (431). Default 16 KiB: browsers send
            under 2 KiB; nginx's default large buffer is 8 KiB.
        max_headers: most header lines in a head; more is :class:`HeadTooLarge`.
            Default 100, the figure httpcore, h11 and Go use for a sane request.
        max_chunk_ext: most bytes of chunk extensions on one chunk-size line; a longer
            line is :class:`BadRequest`. Default 256: extensions are not used in
            practice, and an uncapped line is memory a caller controls.
        max_trailers: most bytes of a trailer section, final CRLF included; more is
            :class:`HeadTooLarge`. Default 8 KiB.

    Call :meth:`feed` with every read and :meth:`eof` when the caller closes. Events come
    in order: ``Head``, ``Body``*, ``End``, then the next request's (pipelining: bytes
    after an ``End`` are kept and parsed as the next request). After the ``End`` of a
    request whose ``Head.upgrade`` is set, the reader pauses and keeps what follows
    until the caller decides: :meth:`switch_to_raw` if the upgrade was accepted,
    :meth:`resume` if it was declined.
    """

    def __init__(
        self,
        max_head: int = 16384,
        max_headers: int = 100,
        max_chunk_ext: int = 256,
        max_trailers: int = 8192,
    ) -> None:
        self.max_head = max_head
        self.max_headers = max_headers
        self.max_chunk_ext = max_chunk_ext
        self.max_trailers = max_trailers
        self._state = _HEAD
        self._buf = bytearray()  # unconsumed bytes: the start of an unfinished unit
        self._scanned = 0  # bytes of the unfinished unit already searched
        self._lines = 0  # line ends seen in an unfinished head
        self._remaining = 0  # payload bytes left (LENGTH, CHUNK_DATA)
        self._skipped_crlf = False  # the one empty line allowed before a request line
        self._upgrade = False  # the current request asked for an upgrade
        self._error: H1Error | None = None

    # -- public --------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        """Events completed by ``data``, in order.

        Raises:
            BadRequest: the bytes break a rule (see :mod:`relay.h1.head` and the chunked
                rules in the package docstring).
            HeadTooLarge: a limit of the constructor was passed.
        """
        if self._error is not None:
            raise self._dead()
        if self._state == _HEAD and not self._buf:
            # The common case, one read holding exactly one head: skip the state machine.
            stop = data.find(b"\r\n\r\n", 0, self.max_head) + 4
            if stop == len(data) > 4 and data[0] != 0x0D:
                events: list[Event] = []
                try:
                    self._started(parse_head(data, self.max_headers), events)
                except H1Error as exc:
                    self._die(exc)
                    raise
                return events
        elif self._state == _RAW:
            return [Body(data, len(data))] if data else []
        view: bytes | bytearray = data
        if self._buf:
            self._buf += data
            view = self._buf
        events = []
        try:
            pos = self._run(view, events)
        except H1Error as exc:
            self._die(exc)
            raise
        if view is self._buf:
            del self._buf[:pos]
        elif pos < len(view):
            self._buf = bytearray(memoryview(view)[pos:])
        return events

    def eof(self) -> list[Event]:
        """The caller closed its side. Between requests, paused or raw: no events.

        Raises:
            ClosedMidRequest: the close cut a request (head, body or trailers).
        """
        if self._error is not None:
            raise self._dead()
        if self._state in (_RAW, _PAUSED):
            return []
        if self._state == _HEAD and not self._buf:
            return []
        exc = ClosedMidRequest()
        self._die(exc)
        raise exc

    def switch_to_raw(self) -> list[Event]:
        """Stop parsing: the bytes held now, and every later byte, come out as ``Body``.

        For an accepted upgrade (after the response 101). Returns the bytes the reader
        held (received after the upgrade request), as one ``Body``, or nothing.
        """
        if self._error is not None:
            raise self._dead()
        self._state = _RAW
        held, self._buf = bytes(self._buf), bytearray()
        return [Body(held, len(held))] if held else []

    def resume(self) -> list[Event]:
        """Parse on after a declined upgrade: the held bytes are the next request."""
        if self._error is not None:
            raise self._dead()
        if self._state != _PAUSED:
            return []
        self._state = _HEAD
        return self.feed(b"")

    @property
    def paused(self) -> bool:
        """True after the End of an upgrade request, until resume() or switch_to_raw()."""
        return self._state == _PAUSED

    # -- the state machine ---------------------------------------------------------------

    def _run(self, view: bytes | bytearray, events: list[Event]) -> int:
        """Consume what ``view`` allows; returns the position of the first unconsumed byte.

        Body bytes consumed in one call come out as one ``Body`` per request.
        """
        pos, end = 0, len(view)
        body_from = decoded = 0
        while True:
            state = self._state
            if state == _HEAD:
                new = self._head(view, pos, events) if pos < end else pos
                if new == pos:
                    return pos
                pos = body_from = new
                decoded = 0
                continue
            if state == _PAUSED:
                if end - pos > self.max_head:
                    raise HeadTooLarge("too many bytes after an upgrade request")
                return pos
            if state == _LENGTH or state == _CHUNK_DATA:
                take = min(self._remaining, end - pos)
                pos += take
                decoded += take
                self._remaining -= take
                if self._remaining:
                    break
                if state == _CHUNK_DATA:
                    self._state = _CHUNK_CRLF
                    continue
            else:
                new = self._chunked(state, view, pos)
                if new == pos:
                    break
                pos = new
                if self._state != _HEAD:
                    continue
            self._flush(view, body_from, pos, decoded, events)
            self._end(events)
            body_from = pos
        self._flush(view, body_from, pos, decoded, events)
        return pos

    def _head(self, view: bytes | bytearray, pos: int, events: list[Event]) -> int:
        """Consume a complete head at ``pos`` (or one leading CRLF); else consume nothing."""
        avail = len(view) - pos
        if not self._scanned and not self._skipped_crlf and view[pos] == 0x0D:
            if avail < 2:
                return pos
            if view[pos + 1] == 0x0A:  # one empty line before a request is ignored
                self._skipped_crlf = True
                return pos + 2
        start = pos + max(self._scanned - 3, 0)
        stop = view.find(b"\r\n\r\n", start, pos + self.max_head)
        if stop < 0:
            # Bad bytes inside the limit are a 400 however the reads were cut.
            self._look(view, pos, pos + self._scanned, min(len(view), pos + self.max_head))
            if avail >= self.max_head:
                raise HeadTooLarge()
            self._scanned = avail
            return pos
        stop += 4
        self._started(parse_head(bytes(view[pos:stop]), self.max_headers), events)
        return stop

    def _started(self, head: Head, events: list[Event]) -> None:
        """A head is complete: report it and expect its body (or its end)."""
        self._scanned = self._lines = 0
        events.append(head)
        self._upgrade = head.upgrade is not None
        if head.framing is Framing.CHUNKED:
            self._state = _CHUNK_LINE
        elif head.length:
            self._state, self._remaining = _LENGTH, head.length
        else:  # _end(events), inlined (most requests have no body)
            events.append(END)
            self._skipped_crlf = False
            self._state = _PAUSED if self._upgrade else _HEAD

    def _look(self, view: bytes | bytearray, pos: int, start: int, end: int) -> None:
        """Early refusal of an unfinished head: bad bytes, or too many lines already.

        ``view[start:end]`` arrived since the last look; the byte before it is looked at
        again (a CR at the end of the last read), never one before the head (``pos``).
        """
        check_partial(view, max(start - 1, pos), end)
        self._lines += view.count(b"\n", start, end)
        if self._lines > self.max_headers + 1:
            raise HeadTooLarge(f"more than {self.max_headers} header lines")

    def _chunked(self, state: int, view: bytes | bytearray, pos: int) -> int:
        if state == _CHUNK_LINE:
            return self._chunk_line(view, pos)
        if state == _CHUNK_CRLF:
            got = view[pos : pos + 2]
            if got == b"\r\n":
                self._state = _CHUNK_LINE
                return pos + 2
            if got != b"\r" and got:
                raise BadRequest("chunk data not followed by CRLF")
            return pos
        return self._trailers(view, pos)

    def _chunk_line(self, view: bytes | bytearray, pos: int) -> int:
        cap = 16 + self.max_chunk_ext + 2
        stop = view.find(b"\r\n", pos, pos + cap)
        if stop < 0:
            if len(view) - pos >= cap:
                raise BadRequest("chunk-size line too long")
            if not _CHUNK_PREFIX.fullmatch(view, pos, len(view)):
                raise BadRequest("invalid chunk size")
            return pos
        m = _CHUNK_LINE_RE.fullmatch(view, pos, stop)
        if m is None:
            raise BadRequest("invalid chunk size")
        if len(m.group(2)) > self.max_chunk_ext:
            raise BadRequest("chunk extensions too long")
        size = int(m.group(1), 16)
        if size:
            self._state, self._remaining = _CHUNK_DATA, size
        else:
            self._state = _TRAILERS
        return stop + 2

    def _trailers(self, view: bytes | bytearray, pos: int) -> int:
        avail = len(view) - pos
        if view[pos : pos + 2] == b"\r\n":  # no trailers
            self._scanned = 0
            self._state = _HEAD
            return pos + 2
        stop = view.find(b"\r\n\r\n", pos + max(self._scanned - 3, 0), pos + self.max_trailers)
        if stop < 0:
            if avail >= self.max_trailers:
                raise HeadTooLarge("trailer section too large")
            check_partial(view, pos + max(self._scanned - 1, 0), len(view))
            self._scanned = avail
            return pos
        stop += 4
        section = bytes(view[pos:stop])
        if not _TRAILER_SECTION.fullmatch(section):
            raise BadRequest("invalid trailer section")
        names = _TRAILER_NAMES.findall(section.lower())
        if not FORBIDDEN_TRAILERS.isdisjoint(names):
            raise BadRequest("a trailer field that must come in the head")
        self._scanned = 0
        self._state = _HEAD
        return stop

    def _flush(
        self, view: bytes | bytearray, start: int, stop: int, decoded: int, events: list[Event]
    ) -> None:
        if stop <= start:
            return
        if start == 0 and stop == len(view) and type(view) is bytes:
            data = view
        else:
            data = bytes(memoryview(view)[start:stop])
        events.append(Body(data, decoded))

    def _end(self, events: list[Event]) -> None:
        events.append(END)
        self._skipped_crlf = False
        self._state = _PAUSED if self._upgrade else _HEAD

    def _die(self, exc: H1Error) -> None:
        # A copy, not ``exc``: the raised error's traceback holds this reader's frames,
        # and keeping it here would make a cycle that holds the reader (and the
        # connection, with its buffers) until a full collection: under a flood of bad
        # heads that was tens of MiB of garbage.
        self._error = type(exc)(exc.message)
        self._buf = bytearray()

    def _dead(self) -> H1Error:
        assert self._error is not None
        return type(self._error)(self._error.message)
