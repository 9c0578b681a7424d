"""The inspector's memory: the last ``keep`` exchanges, their bodies up to a limit, and
the masking of secrets.

Bounds (what happens at each limit):

* ``keep`` exchanges (``--inspect-keep``, default :data:`KEEP`): a new one evicts the
  oldest, finished or not (an evicted open exchange is still parsed, just not shown);
* ``body_limit`` bytes per body (``--inspect-body-limit``, default :data:`BODY_LIMIT`):
  beyond it only the size is counted. So the store holds at most about
  ``keep * 2 * body_limit`` bytes of bodies, plus the timelines below;
* :data:`MAX_TIMELINE` SSE events or WebSocket messages per exchange, each with at most
  :data:`MAX_PREVIEW` bytes of its data, and at most ``body_limit`` bytes of data in
  all; later entries are counted, not kept, and entries past the data budget keep
  their time and size only.

Secrets: the store keeps what was forwarded as it was (a replay must send the real
``Authorization``); :class:`Masker` hides secrets whenever something leaves the store
(the JSON API, the page), unless ``reveal`` is set. It masks the values of
:data:`MASKED_HEADERS` and every occurrence of a secret value given to
:meth:`Masker.add_secrets`, or seen in one of those headers (:meth:`Masker.learn`), in
heads, paths, bodies and timelines.

Rows are parsed lazily (:mod:`~edge_agent.inspect.observe`): :meth:`Store.get` and
:meth:`Store.newest_first` catch up the parse of what they return.

Change notification: :meth:`Store.changed` marks a row; listeners get the rows changed
during the last :data:`NOTIFY_DELAY` seconds at once (a busy SSE stream does not become
one notification per event). With no listener nothing is scheduled.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal

#: Exchanges kept by default.
KEEP: Final = 500
#: Body bytes kept per request and per response by default (beyond: size only).
BODY_LIMIT: Final = 1024 * 1024
#: Timeline entries (SSE events, WebSocket messages) kept per exchange.
MAX_TIMELINE: Final = 1000
#: Data bytes kept per timeline entry.
MAX_PREVIEW: Final = 16 * 1024
#: Seconds between a change and the notification that carries it (batching).
NOTIFY_DELAY: Final = 0.05

#: Header values never shown unless ``reveal``.
MASKED_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
#: What a masked value is replaced with.
MASK: Final = "[masked]"
#: Secret values shorter than this are not masked (they would mask ordinary text).
MIN_SECRET: Final = 4
#: Credentials and cookie values seen in heads and remembered for masking.
MAX_LEARNED: Final = 256

State = Literal["open", "done", "error"]
Listener = Callable[[str, int], None]  # ("new" | "update", exchange id)


@dataclasses.dataclass(slots=True, eq=False)
class Side:
    """One direction of an exchange: its head and (the kept part of) its body."""

    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    body: bytearray = dataclasses.field(default_factory=bytearray)
    size: int = 0  # body bytes seen, after chunked decoding
    complete: bool = False  # the message ended (its whole body was seen)
    first_at: float | None = None  # monotonic time of its first byte

    def keep(self, data: bytes, limit: int) -> None:
        room = limit - len(self.body)
        if room > 0:
            self.body += data[:room]
        self.size += len(data)

    @property
    def truncated(self) -> bool:
        return self.size > len(self.body)


@dataclasses.dataclass(slots=True, eq=False)
class Exchange:
    """One request and its response, as the Recorder understood them."""

    id: int
    time: float  # wall clock (epoch seconds) when it was opened
    opened_at: float  # monotonic
    method: str = ""
    path: str = ""
    status: int | None = None
    kind: Literal["http", "sse", "websocket"] = "http"
    state: State = "open"
    error: str | None = None
    done_at: float | None = None  # monotonic
    duplicate: bool = False  # answered by the de-duplication from its cache
    replay_of: int | None = None
    request: Side = dataclasses.field(default_factory=Side)
    response: Side = dataclasses.field(default_factory=Side)
    timeline: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    timeline_dropped: int = 0
    timeline_bytes: int = 0  # data bytes kept in the timeline
    a2a: dict[str, Any] | None = None

    def ms(self, at: float | None) -> float | None:
        """Milliseconds from the opening to ``at`` (None stays None)."""
        return None if at is None else round((at - self.opened_at) * 1000.0, 3)

    def add_event(self, entry: dict[str, Any], limit: int) -> bool:
        """Append a timeline entry; False (and counted) past :data:`MAX_TIMELINE`. Its
        ``data`` is dropped (``cut`` set) once the timeline holds ``limit`` bytes."""
        if len(self.timeline) >= MAX_TIMELINE:
            self.timeline_dropped += 1
            return False
        data = entry.get("data")
        if data is not None:
            if self.timeline_bytes + len(data) > limit:
                del entry["data"]
                entry["cut"] = True
            else:
                self.timeline_bytes += len(data)
        self.timeline.append(entry)
        return True


class Masker:
    """Hides secret header values and secret strings (see the module docstring)."""

    def __init__(self, reveal: bool = False, secrets: Iterable[str] = ()) -> None:
        self.reveal = reveal
        self._given: set[str] = set()
        self._learned: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._secrets: list[str] = []
        self.add_secrets(secrets)

    def add_secrets(self, values: Iterable[str]) -> None:
        """Mask these values wherever they appear (longest first, so no part is left)."""
        self._given |= {v for v in values if len(v) >= MIN_SECRET}
        self._update()

    def learn(self, headers: Iterable[tuple[str, str]]) -> None:
        """Remember the credentials and cookie values in ``headers``, so that a body
        that echoes one (a debugging endpoint, an error page) shows it masked too. The
        last :data:`MAX_LEARNED` are remembered."""
        if self.reveal:
            return
        added = False
        for name, value in headers:
            lname = name.lower()
            if lname not in MASKED_HEADERS:
                continue
            for secret in _credentials(lname, value):
                if len(secret) >= MIN_SECRET and secret not in self._learned:
                    self._learned[secret] = None
                    added = True
        while len(self._learned) > MAX_LEARNED:
            self._learned.popitem(last=False)
        if added:
            self._update()

    def _update(self) -> None:
        self._secrets = sorted(self._given | set(self._learned), key=len, reverse=True)

    def text(self, value: str) -> str:
        if self.reveal:
            return value
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def header(self, name: str, value: str) -> str:
        if self.reveal:
            return value
        lname = name.lower()
        if lname in ("authorization", "proxy-authorization"):
            scheme, sep, _credentials = value.partition(" ")
            return f"{scheme} {MASK}" if sep else MASK
        if lname == "cookie":
            return "; ".join(_mask_pair(p) for p in value.split(";") if p.strip())
        if lname == "set-cookie":
            pair, sep, attributes = value.partition(";")
            return _mask_pair(pair) + (";" + attributes if sep else "")
        return self.text(value)

    def headers(self, pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
        return [[self.text(n), self.header(n, v)] for n, v in pairs]


def _credentials(lname: str, value: str) -> list[str]:
    """The secret parts of a header value (none for a header that is not secret)."""
    if lname in ("authorization", "proxy-authorization"):
        return [value.partition(" ")[2].strip() or value.strip()]
    if lname == "cookie":
        return [pair.partition("=")[2].strip() for pair in value.split(";")]
    if lname == "set-cookie":
        return [value.partition(";")[0].partition("=")[2].strip()]
    return []


def _mask_pair(pair: str) -> str:
    name, sep, _value = pair.strip().partition("=")
    return f"{name}={MASK}" if sep else MASK


class Store:
    """The last ``keep`` exchanges, by id; ids grow from 1 and are never reused."""

    def __init__(
        self,
        keep: int = KEEP,
        body_limit: int = BODY_LIMIT,
        masker: Masker | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if keep < 1 or body_limit < 0:
            raise ValueError("keep must be at least 1 and body_limit not negative")
        self.keep = keep
        self.body_limit = body_limit
        self.masker = masker or Masker()
        self.clock = clock
        self.wall = wall
        self._rows: collections.OrderedDict[int, Exchange] = collections.OrderedDict()
        self._next_id = 1
        self._listeners: set[Listener] = set()
        self._dirty: dict[int, bool] = {}  # id -> is new
        self._flush: asyncio.TimerHandle | None = None
        self._unsettled: dict[int, Callable[[], None]] = {}  # id -> catch up its parse

    def __len__(self) -> int:
        return len(self._rows)

    def new(self, replay_of: int | None = None) -> Exchange:
        """A new open exchange (the oldest one goes when ``keep`` are held)."""
        exchange = Exchange(self._next_id, self.wall(), self.clock(), replay_of=replay_of)
        self._next_id += 1
        self._rows[exchange.id] = exchange
        while len(self._rows) > self.keep:
            evicted, _ = self._rows.popitem(last=False)
            self._unsettled.pop(evicted, None)
        self.changed(exchange, new=True)
        return exchange

    def get(self, exchange_id: int) -> Exchange | None:
        """The exchange, its parse caught up (None when evicted or unknown)."""
        settle = self._unsettled.get(exchange_id)
        if settle is not None:
            settle()
        return self._rows.get(exchange_id)

    def newest_first(self) -> list[Exchange]:
        """Every exchange kept, their parses caught up."""
        for settle in list(self._unsettled.values()):
            settle()
        return list(reversed(self._rows.values()))

    # -- lazy parsing (see edge_agent.inspect.observe) ----------------------------------

    def defer(self, exchange: Exchange, settle: Callable[[], None]) -> None:
        """``exchange`` has bytes waiting: ``settle()`` parses them before it is read."""
        if exchange.id in self._rows:
            self._unsettled[exchange.id] = settle

    def settled(self, exchange: Exchange) -> None:
        self._unsettled.pop(exchange.id, None)

    @property
    def listening(self) -> bool:
        """Someone follows the changes (the page is open)."""
        return bool(self._listeners)

    # -- change notification ------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def changed(self, exchange: Exchange, new: bool = False) -> None:
        """Note a change of ``exchange``; listeners hear of it within NOTIFY_DELAY."""
        if not self._listeners:
            return
        self._dirty[exchange.id] = new or self._dirty.get(exchange.id, False)
        if self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the loop (tests): tell at once
                self._notify()
                return
            self._flush = loop.call_later(NOTIFY_DELAY, self._notify)

    def _notify(self) -> None:
        self._flush = None
        dirty, self._dirty = self._dirty, {}
        for exchange_id, new in dirty.items():
            if exchange_id not in self._rows:
                continue  # evicted before anyone heard of it
            for listener in list(self._listeners):
                listener("new" if new else "update", exchange_id)
