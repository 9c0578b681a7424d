"""The public side: one ``asyncio.Protocol`` per caller connection, bytes in and out.

Each request's head is parsed (:mod:`relay.h1`) only to decide: which tunnel (routing),
whether the caller may call it (caller auth), whether it fits the limits; then its
bytes go down a new tunnel stream as they came (head rewritten by splicing: routing
prefix stripped, X-Forwarded-* added), and the response's bytes come back to the caller
unchanged (:mod:`relay.exchange`). One exchange at a time per connection; a pipelined
next request waits in the reader, and reading pauses until the exchange ends.

Routing:

* host-based, when a wildcard domain D is configured (``--domain``; on a loopback relay
  without one, ``localhost``): ``Host: <name>.D`` sends the whole path to tunnel
  ``name`` (no prefix);
* path-based, always: ``/a/<name>/rest`` sends ``/rest`` (query kept) to tunnel
  ``name`` with ``X-Forwarded-Prefix: /a/<name>``. ``/a/<name>`` alone is ``/``.

The name is read from the raw path (never percent-decoded) and must be a lowercase DNS
label, so ``%2e%2e``, ``..`` or an encoded slash can never select another tunnel.

Errors before the first response byte are the relay's JSON answers
(:mod:`relay.answers`); after it, a failure aborts the connection (a definite error,
never a clean but truncated end).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Final, cast

from relay import control, h1, pools
from relay.answers import CLOSE_AFTER, error_response, wants_html
from relay.cluster.hop import HOP_HEADER, NodeStream
from relay.config import MAX_REQUEST_HEADERS, RESERVED_NAMES
from relay.errors import (
    AgentOffline,
    AgentUnavailable,
    BadRequest,
    BodyTooLarge,
    PublicError,
    RelayConfigError,
    RelayDraining,
    RequestTimeout,
    ResponseTimeout,
    TooManyClientStreams,
    TooManyStreams,
    TunnelRevoked,
    UnknownTunnel,
    UpstreamFailed,
    error_for_reset,
)
from relay.exchange import Exchange
from relay.headers import check_caller
from tunnel.link import set_nodelay
from wire import ErrorCode, LocalProtocolError, StreamKind
from wire.rules import RESERVED_PREFIX, valid_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from relay.agents import AgentSession
    from relay.app import RelayApp

log = logging.getLogger(__name__)

PATH_PREFIX: Final = b"/a/"
_RESERVED: Final = RESERVED_PREFIX.encode()

#: Status recorded (metrics) for a request whose caller left before any answer.
CALLER_GONE: Final = 499

#: Bytes buffered for a caller above which its stream stops returning credit (the agent
#: stops after one window), and below which it resumes.
WRITE_HIGH: Final = 1024 * 1024
WRITE_LOW: Final = 256 * 1024

#: Bytes a caller may send past the request being served (pipelined requests) before
#: the relay stops reading its connection until the exchange ends.
PIPELINE_LIMIT: Final = 64 * 1024

#: Bytes of a refused request's body the relay reads and drops before it closes the
#: connection anyway (so that the caller, still uploading, can read the answer).
DISCARD_LIMIT: Final = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    name: str
    target: bytes  # origin-form target for the agent (prefix stripped, query kept)
    prefix: bytes | None  # X-Forwarded-Prefix (path routing only)


def host_label(host: bytes, suffix: bytes | None) -> str | None:
    """``name`` when ``host`` (a Host value) is ``<name>.D`` for the host-routing domain
    D (``suffix`` is ``.D``), else None (the relay's own host; reserved labels such as
    www.D or relay.D are the relay's too).

    On bytes, and decoding only a match: it runs for every request of a relay on
    loopback (``localhost`` routing), most of which name the relay's own host.
    """
    if suffix is None:
        return None
    host = host.strip().lower()
    if host.startswith(b"["):
        return None  # an IPv6 literal never names a tunnel
    colon = host.rfind(b":")
    if colon >= 0:
        host = host[:colon]
    if not host.endswith(suffix):
        return None
    label = host[: -len(suffix)].decode("latin-1")
    return label if label not in RESERVED_NAMES else None


class Router:
    """Finds the tunnel each request of one connection is for.

    A connection's requests nearly always repeat its Host, and mostly its tunnel name:
    what routing learned from them (the Host's label, that a name is valid) is kept for
    the next request, which then only compares bytes.

    Args:
        suffix: ``.D`` for the host-routing domain D, or None (see :func:`host_label`).
    """

    __slots__ = ("_host", "_label", "_label_valid", "_name", "_name_b", "suffix")

    def __init__(self, suffix: bytes | None) -> None:
        self.suffix = suffix
        self._host: bytes | None = None  # the last Host, and what it gave:
        self._label: str | None = None
        self._label_valid = False
        self._name_b: bytes | None = None  # the last valid name from a path, and decoded
        self._name = ""

    def label(self, host: bytes) -> str | None:
        """:func:`host_label` of ``host``."""
        if host != self._host:
            label = host_label(host, self.suffix)
            self._label_valid = label is not None and valid_name(label)
            self._label = label
            self._host = host
        return self._label

    def route(self, head: h1.Head) -> Route:
        """The tunnel ``head`` is for. Raises UnknownTunnel or BadRequest."""
        target = head.target
        label = self._label if head.host == self._host else self.label(head.host)
        if label is not None:
            if not self._label_valid:
                raise UnknownTunnel()
            return Route(label, target, None)
        if not target.startswith(PATH_PREFIX):
            raise UnknownTunnel()
        path, question, query = target.partition(b"?")
        name_b, slash, rest = path[len(PATH_PREFIX) :].partition(b"/")
        if name_b != self._name_b:
            if not name_b:
                raise UnknownTunnel()
            name = name_b.decode("latin-1")
            if not valid_name(name):
                raise BadRequest("invalid tunnel name")
            self._name_b, self._name = name_b, name
        return Route(self._name, (slash + rest or b"/") + question + query, PATH_PREFIX + name_b)


class PublicConnection(asyncio.Protocol):
    """One caller's connection to the relay."""

    def __init__(self, app: RelayApp, tls: bool) -> None:
        self.app = app
        self.state = app.state
        self.tls = tls
        settings = self.state.settings
        self.reader = h1.RequestReader(
            max_head=settings.max_header_bytes, max_headers=MAX_REQUEST_HEADERS
        )
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.trusted = False  # the caller is a trusted front proxy (--trusted-proxy)
        self.server_port = 0
        self.forwarding: h1.Forwarding  # set once the caller's address is known
        self.router = Router(app.route_suffix)
        self.exchange: Exchange | None = None
        self._rate_start = 0.0  # the minimum body rate's window: when it began
        self._rate_bytes = 0  # and the body bytes received in it
        self.events: collections.deque[h1.Event] = collections.deque()
        self.discarding = 0  # >0: dropping a refused request's body; close at its end
        self.keep_discarded = False
        self.body_received = 0
        self.waiting = 0  # bytes received after the current request, while it is served
        self.started = False  # bytes of a next request arrived (head timeout: 408)
        self.closing = False
        self._reading_paused = False
        self._writing_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""
        self._timer_at = 0.0  # when the pending handle fires
        self._deadline = 0.0  # when the armed timeout expires
        self._loop = asyncio.get_running_loop()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        # uvloop's default (64 KiB high) paused a download after each frame: the
        # stream's credit then waited for the caller's socket, one frame at a time.
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        proxies = self.app.trusted_proxies
        self.trusted = bool(proxies) and h1.trusted_proxy(self.client_ip, proxies)
        if not self.trusted and self.state.offenders.blocked(self.client_ip):
            self.state.metrics.connection_blocked()
            self.abort()  # before any read: an address that keeps sending garbage
            return
        sock = transport.get_extra_info("sockname")
        self.server_port = sock[1] if sock else 0
        proto = "https" if self.tls else "http"
        self.forwarding = h1.Forwarding(self.client_ip, proto, self.server_port)
        self.app.connections.add(self)
        self._arm("head", self.state.settings.header_timeout)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.started = True
        elif exchange.request_done and not exchange.watch.upgraded:  # a pipelining caller
            self.waiting += len(data)
            if self.waiting > PIPELINE_LIMIT:
                self.pause_reading()
        try:
            self.events.extend(self.reader.feed(data))
        except h1.H1Error as exc:
            self._refuse_malformed(exc)
            return
        self._pump()

    def eof_received(self) -> bool | None:
        """The caller closed its side: on an upgraded pipe the half-close is passed on;
        otherwise the caller is gone."""
        exchange = self.exchange
        if exchange is None:
            return None  # between requests: close
        if exchange.watch.upgraded:
            if exchange.stream is not None:
                exchange.stream.end()
            return True
        # A half-close cannot be told from a caller that left (both are a FIN); a caller
        # that left must cancel the local request (an SSE stream, a slow target), as
        # nginx does by default.
        self._caller_gone()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.connections.discard(self)
        self._disarm()
        if self._timer is not None:  # do not keep a closed connection alive until then
            self._timer.cancel()
            self._timer = None
        if self.exchange is not None:
            self._caller_gone()

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.exchange is not None and self.exchange.stream is not None:
            self.exchange.stream.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.exchange is not None and self.exchange.stream is not None:
            self.exchange.stream.resume_reading()

    # -- reading the caller -------------------------------------------------------------------

    def _pump(self) -> None:
        events = self.events
        while events and not self.closing:
            event = events[0]
            if type(event) is h1.Head and (self.exchange is not None or self.discarding):
                return  # a pipelined request waits for this exchange
            events.popleft()
            if type(event) is h1.Head:
                self._on_head(event)
            elif type(event) is h1.Body:
                self._on_body(event)
            else:
                self._on_end()

    def _on_head(self, head: h1.Head) -> None:
        self._timer_kind = ""  # _disarm(), inlined (per request)
        self.body_received = 0
        self.started = False
        try:
            # The relay's own paths live on its own host only: a host-routed tunnel
            # gets /_edge/... too (its app may use that path).
            if head.target.startswith(_RESERVED) and self.router.label(head.host) is None:
                control.handle(self, head)
            else:
                self._forward(head)
        except PublicError as exc:
            self._answer_error(exc, head)

    def _on_body(self, body: h1.Body) -> None:
        if self.discarding:
            self.discarding += len(body.data)
            if self.discarding > DISCARD_LIMIT:
                self.close()
            return
        exchange = self.exchange
        if exchange is None or exchange.stream is None:
            return
        self.body_received += body.decoded
        if self.body_received > self.state.settings.max_request_body:
            self._fail_exchange(exchange, BodyTooLarge())
            return
        if not exchange.watch.upgraded and not self._check_rate(len(body.data)):
            self._fail_exchange(exchange, RequestTimeout("the request body is too slow"))
            self.close()
            return
        self.state.metrics.bytes_in += len(body.data)
        if exchange.replay is not None:
            pools.keep(exchange, body.data)
        exchange.stream.write(body.data)
        if not exchange.watch.upgraded:
            self._arm("body", self.state.settings.body_idle_timeout)

    def _on_end(self) -> None:
        if self.discarding:
            self.discarding = 0
            if self.keep_discarded:
                self.next_request()
            else:
                self.close()
            return
        exchange = self.exchange
        if exchange is None or exchange.stream is None:
            return
        if self._timer_kind == "body":  # _disarm_kind("body"), inlined (per request)
            self._timer_kind = ""
        if not exchange.request_done and not exchange.watch.upgrade:
            exchange.stream.end()  # a request without a body was ended at its open
        exchange.request_done = True
        # Reading goes on (a caller that leaves is noticed at once); what a pipelining
        # caller sends meanwhile waits in the reader, up to PIPELINE_LIMIT bytes.
        self.waiting = 0

    # -- forwarding ---------------------------------------------------------------------------

    def _forward(self, head: h1.Head) -> None:
        state = self.state
        settings = state.settings
        if state.draining:
            raise RelayDraining()
        where = self.router.route(head)
        cluster = state.cluster
        hop = cluster is not None and cluster.arrived(self, head)
        session = state.registry.lookup(where.name)
        if session is not None and cluster is not None and not session.accepting:
            session = cluster.instead(session)  # None: a pool's other nodes serve it
        if session is None:
            node = cluster.owner(where.name) if cluster is not None and not hop else None
            if node is None:
                if hop:
                    assert cluster is not None  # a hop arrived through it
                    cluster.not_here(where.name, head)  # a pool served by other nodes
                raise self._missing(where.name)
            assert cluster is not None  # a node was found through it
            cluster.forward(self, head, where, node)
            return
        if session.kind is not StreamKind.HTTP:  # a TCP or TLS tunnel has no HTTP side
            raise UnknownTunnel()
        caller_auth = session.caller_auth
        strip_auth = check_caller(head.headers, caller_auth, where.name) if caller_auth else False
        if head.framing is h1.Framing.LENGTH and head.length > settings.max_request_body:
            raise BodyTooLarge()
        raw = h1.rewrite_head(
            head,
            target=where.target,
            forwarding=self.forwarding,
            host=head.host,
            prefix=where.prefix,
            trusted=self.trusted,
            strip=((b"authorization",) if strip_auth else ()) + ((HOP_HEADER,) if hop else ()),
        )
        self._open(session, head, where, raw)

    def _open(self, session: AgentSession, head: h1.Head, where: Route, raw: bytes) -> None:
        if not session.accepting:
            raise AgentUnavailable()
        conn = session.session.conn
        if not conn.can_open():
            if conn.open_streams >= conn.max_streams:
                raise TooManyStreams()
            raise AgentUnavailable("the session ran out of stream ids; the agent must reconnect")
        exchange = self._new_exchange(head, where)
        if session.pool:  # a copy, to open it again on another member (relay.pools)
            exchange.replay = []
            pools.keep(exchange, raw)
        self._begin(exchange)
        no_body = head.framing is h1.Framing.NONE and not exchange.watch.upgrade
        try:
            exchange.stream = session.session.open(
                StreamKind.HTTP, exchange, raw, end=no_body, tunnel=session.index
            )
        except LocalProtocolError:
            self._end_exchange()
            raise AgentUnavailable("the agent's session cannot take a stream now") from None
        self.state.metrics.bytes_in += len(raw)
        exchange.request_done = no_body
        self._arm("response", self.state.settings.response_timeout)

    def start_exchange(
        self, head: h1.Head, where: Route, raw: bytes, stream: Callable[[Exchange], NodeStream]
    ) -> None:
        """Serve ``head`` through the stream ``stream(exchange)`` makes, instead of a
        tunnel stream: the cluster's hop to the node that holds the session."""
        exchange = self._new_exchange(head, where)
        self._begin(exchange)
        exchange.stream = stream(exchange)
        self.state.metrics.bytes_in += len(raw)
        exchange.request_done = head.framing is h1.Framing.NONE and not exchange.watch.upgrade
        self._arm("response", self.state.settings.response_timeout)

    def _new_exchange(self, head: h1.Head, where: Route) -> Exchange:
        upgrade = head.upgrade is not None
        exchange = Exchange(
            self, where.name, head.method, where.target, head.keep_alive, upgrade, time.monotonic()
        )
        exchange.headers = head.headers  # read only if the relay answers with an error
        return exchange

    def _begin(self, exchange: Exchange) -> None:
        """The exchange takes one of its caller's slots on the tunnel (429 beyond them:
        one address cannot hold every stream of a tunnel with slow uploads). A trusted
        front proxy speaks for many callers and has no cap."""
        if not self.trusted:
            key = (exchange.name, self.client_ip)
            counts = self.app.client_streams
            held = counts.get(key, 0)
            if held >= self.state.settings.max_client_streams:
                raise TooManyClientStreams()
            counts[key] = held + 1
            exchange.slot = key
        self.exchange = exchange
        self._rate_start = self._loop.time()
        self._rate_bytes = 0

    def _end_exchange(self) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.watch.release()
        if exchange is not None and exchange.slot is not None:
            counts = self.app.client_streams
            left = counts.get(exchange.slot, 1) - 1
            if left > 0:
                counts[exchange.slot] = left
            else:
                counts.pop(exchange.slot, None)
            exchange.slot = None

    def _check_rate(self, n: int) -> bool:
        """Count ``n`` body bytes; False when the body is slower than the minimum rate over
        a whole window (waiting for the agent's credit does not count: see resume)."""
        self._rate_bytes += n
        now = self._loop.time()
        elapsed = now - self._rate_start
        if elapsed < self.state.settings.body_rate_window:
            return True
        if self._rate_bytes < self.state.settings.min_body_rate * elapsed:
            return False
        self._rate_start, self._rate_bytes = now, 0
        return True

    def _missing(self, name: str) -> PublicError:
        """503 for a name that has a token or had a session lately, 410 for one whose
        token was revoked, else 404."""
        store = self.state.store
        try:
            store.refresh()  # a stat; re-reads only when the file changed
        except RelayConfigError:
            pass
        if store.owns(name):
            return AgentOffline()
        if store.revoked(name):
            return TunnelRevoked()
        if self.state.registry.known(name):
            return AgentOffline()
        return UnknownTunnel()

    # -- the exchange's callbacks -----------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.state.metrics.bytes_out += len(data)

    def first_byte(self, exchange: Exchange) -> None:
        if self._timer_kind == "response":  # _disarm_kind, inlined (per request)
            self._timer_kind = ""
        self.state.metrics.first_byte(exchange.started)

    def upgraded(self, exchange: Exchange) -> None:
        """A 101 went to the caller: from now on the connection is a raw pipe."""
        self._disarm()
        stream = exchange.stream
        for event in self.reader.switch_to_raw():
            if stream is not None and type(event) is h1.Body:
                stream.write(event.data)
        self.resume_reading()

    def response_done(self, exchange: Exchange, close: bool) -> None:
        if exchange is not self.exchange:
            return
        stream = exchange.stream
        watch = exchange.watch  # its status: the property costs a call per request
        if watch.upgrade and not watch.upgraded:
            # No upgrade after all: the request ended with its head; parse on.
            if stream is not None and not stream.ending:
                stream.end()
            exchange.request_done = True
            self.events.extend(self.reader.resume())
        elif stream is not None and not exchange.request_done:
            # The response ended before the request (an early 404, 413...): the rest of
            # the caller's body goes nowhere, and is read and dropped so that the
            # connection can carry the next request (the caller was told nothing else).
            stream.reset(ErrorCode.NO_ERROR)
            self._done(exchange, watch.status)
            if close or not exchange.keep_alive:
                self.close()
            else:
                self._start_discard(keep=True)
            return
        if watch.upgraded and stream is not None and not stream.ending:
            stream.end()  # the pipe closes both ways: the agent's side learns it too
        self._done(exchange, watch.status)
        if close or not exchange.keep_alive or watch.upgraded:
            self.close()
        else:
            self.next_request()

    def exchange_aborted(self, exchange: Exchange, code: ErrorCode, reason: str) -> None:
        if exchange is not self.exchange:
            return
        self.state.metrics.reset("agent", code)
        if exchange.sent:
            self._cut(exchange, f"agent reset the stream ({code.name})")
            return
        cluster = self.state.cluster
        if cluster is not None and isinstance(exchange.stream, NodeStream):
            error = cluster.failed(exchange, exchange.stream)  # None: another node serves it
            if error is not None:
                self._answer_failed(exchange, error)
            return
        if pools.retryable(exchange, code):
            if pools.retry(exchange, self.state, self.app.pools):
                return  # another session of the pool serves it
            if cluster is not None and (refusal := cluster.refusal(exchange)) is not None:
                self._answer_failed(exchange, refusal)  # the entry node tries another node
                return
        self._answer_failed(exchange, error_for_reset(code))

    def agent_broke(self, exchange: Exchange, detail: str) -> None:
        log.warning("agent_response_invalid", extra={"agent": exchange.name, "detail": detail})
        if exchange.stream is not None:
            exchange.stream.reset(ErrorCode.PROTOCOL_ERROR)
        if exchange.sent:
            self._cut(exchange, detail)
        else:
            self._answer_failed(exchange, UpstreamFailed("the agent sent an invalid response"))

    # -- ending an exchange -------------------------------------------------------------------

    def _fail_exchange(self, exchange: Exchange, error: PublicError) -> None:
        """The relay gives up on a request (limit, timeout) on the caller's side."""
        if exchange.stream is not None and not exchange.stream.closed:
            exchange.stream.reset(ErrorCode.CANCEL)
            self.state.metrics.reset("relay", ErrorCode.CANCEL)
        if exchange.sent:
            self._cut(exchange, error.message)
        else:
            self._answer_failed(exchange, error)

    def _answer_failed(self, exchange: Exchange, error: PublicError) -> None:
        self._end_exchange()
        self.state.metrics.request_done(error.status, error.code, exchange.name, exchange.started)
        close = error.status in CLOSE_AFTER or not exchange.keep_alive
        if not exchange.request_done and not close:
            self._start_discard(keep=True)
            close = False
        elif not exchange.request_done:
            close = True
        html = wants_html(exchange.headers)
        self._write_answer(error_response(error, close, html), close)

    def _answer_error(self, exc: PublicError, head: h1.Head) -> None:
        self.state.metrics.request_done(exc.status, exc.code)
        close = exc.status in CLOSE_AFTER or not head.keep_alive
        if exc.status == 413 and head.framing is h1.Framing.LENGTH:
            close = True  # do not read the oversized body
        has_body = head.framing is not h1.Framing.NONE
        if has_body and not close:
            self._start_discard(keep=True)
        elif has_body:
            self._start_discard(keep=False)
        html = wants_html(head.headers)
        self._write_answer(error_response(exc, close, html), close and not has_body)

    def _write_answer(self, data: bytes, close: bool) -> None:
        self.write(data)
        if close:
            self.close()
        elif not self.discarding:
            self.next_request()

    def _start_discard(self, keep: bool) -> None:
        self.discarding = 1
        self.keep_discarded = keep
        self.resume_reading()
        self._arm("body", self.state.settings.body_idle_timeout)

    def _cut(self, exchange: Exchange, detail: str) -> None:
        log.info("response_aborted", extra={"agent": exchange.name, "detail": detail})
        self._done(exchange, exchange.status or 502)
        self.abort()

    def _done(self, exchange: Exchange, status: int) -> None:
        self._end_exchange()
        self.state.metrics.request_done(status, None, exchange.name, exchange.started)

    def next_request(self) -> None:
        self._arm("idle", self.state.settings.keep_alive_timeout)
        self.resume_reading()
        if self.events:  # a pipelined request
            self._pump()

    def _caller_gone(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        self._end_exchange()
        if exchange.stream is not None and not exchange.stream.closed:
            exchange.stream.reset(ErrorCode.CANCEL)
            self.state.metrics.reset("relay", ErrorCode.CANCEL)
        status = exchange.status if exchange.sent else CALLER_GONE
        self.state.metrics.request_done(status, None, exchange.name, exchange.started)

    # -- timers -------------------------------------------------------------------------------

    # One lazy timer per connection: arming records a deadline, and the timer handle is
    # replaced only when the new deadline is earlier than the pending one (a timer that
    # fires early re-arms itself for the deadline). A request used to create and cancel
    # two or three handles.

    def _arm(self, kind: str, seconds: float) -> None:
        self._timer_kind = kind
        self._deadline = deadline = self._loop.time() + seconds
        if self._timer is not None:
            if deadline >= self._timer_at:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _disarm(self) -> None:
        self._timer_kind = ""  # a pending handle fires, finds nothing, and goes

    def _on_timer(self) -> None:
        self._timer = None
        if not self._timer_kind:
            return
        if self._loop.time() < self._deadline:
            self._timer_at = self._deadline
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        self._timeout()

    def _timeout(self) -> None:
        kind, self._timer_kind = self._timer_kind, ""
        exchange = self.exchange
        if kind == "response" and exchange is not None:
            self._fail_exchange(exchange, ResponseTimeout())
        elif kind == "body" and exchange is not None:
            self._fail_exchange(exchange, RequestTimeout("the request body stalled"))
        elif kind in ("head", "idle") and self.started:
            self._refuse(RequestTimeout("the request head took too long"))
        else:  # idle keep-alive, a silent new connection, or a stalled discard
            self.close()

    # -- connection control -------------------------------------------------------------------

    def _refuse_malformed(self, error: h1.H1Error) -> None:
        if not self.trusted and self.state.offenders.offence(self.client_ip):
            log.warning("public_address_blocked", extra={"client": self.client_ip})
        exchange = self.exchange
        if exchange is not None:  # a broken body: the stream cannot end cleanly
            self._fail_exchange(exchange, error)
            self.close()
            return
        self._refuse(error)

    def _refuse(self, error: PublicError) -> None:
        self.state.metrics.request_done(error.status, error.code)
        self.write(error_response(error, close=True))
        self.close()

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self._rate_start, self._rate_bytes = self._loop.time(), 0  # paused time is not slow
        if self._reading_paused and self.transport is not None and not self.closing:
            self._reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Close after what was written (the caller reads the whole answer)."""
        self.closing = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Cut the connection now (a reset: the caller sees a definite error)."""
        self.closing = True
        self._disarm()
        if self.transport is not None:
            self.transport.abort()

    def adopt_upgrade(self) -> bytes:
        """The connection becomes an agent's WebSocket: stop serving it as public.

        Returns the bytes the reader holds past the upgrade request.
        """
        self.closing = True
        self._disarm()
        self.app.connections.discard(self)
        held = self.reader.switch_to_raw()
        held.extend(e for e in self.events if type(e) is h1.Body)
        self.events.clear()
        return b"".join(e.data for e in held if type(e) is h1.Body)
