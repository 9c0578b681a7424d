"""Node hops: a public request for a session held by another node is forwarded there.

The node that received the request (the *entry* node) parsed its head as usual; when no
local session serves the name and the directory names the node that holds one, it sends
the request to that node's public listener over a keep-alive connection between the two
(:class:`LinkPool`), as an HTTP/1.1 request: the caller's head (hop-by-hop headers
dropped, X-Forwarded-* added as a front proxy would) plus ``X-Edge-Hop: <cluster
secret>``. The owner node checks the secret (a public caller cannot spoof a hop: the
header is refused with 403 unless it carries the secret, and stripped before the agent
sees it), trusts the entry node's forwarding headers, and serves the request from its
session as for any caller. A hop never hops again: an owner that lost the session
answers 503 itself.

Bytes are streamed both ways, never buffered whole: request body chunks are written to
the link as they arrive, and the answer's bytes go to the caller as they come back.
Flow control is TCP's: a slow caller pauses reading the link, a slow link pauses reading
the caller. The answer's end is found by the exchange's own response watch, after which
the link goes back to the pool (when both sides keep it alive and the request was sent
whole); a WebSocket or other upgrade turns the link into a pipe for that exchange only.

Pools across nodes: an owner node that no longer holds a member of a pooled name that
other nodes still serve refuses the hop with :class:`HopNotHeld`, a 503 whose head
carries ``X-Edge-Hop: <cluster secret>`` (no agent can forge it). The entry node reads
the head of each answer before the caller sees a byte of it; a refusal, like a link
that could not be opened at all, means the request reached no agent, and
:mod:`relay.cluster.pooling` sends it to another node of the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast
from urllib.parse import urlsplit

from prometheus_client import Counter

from relay.errors import PublicError
from tunnel.link import set_nodelay
from wire import ErrorCode

if TYPE_CHECKING:
    from relay import h1
    from relay.exchange import Exchange
    from relay.metrics import Metrics

log = logging.getLogger(__name__)

#: The header that marks (and authenticates) a forwarded request; lowercased as parsed.
HOP_HEADER: Final = b"x-edge-hop"

#: Seconds to open a link to another node before the caller gets 503.
CONNECT_TIMEOUT: Final = 3.0

#: Idle links kept per node; past it a link that comes back is closed.
MAX_IDLE_PER_NODE: Final = 64

#: Seconds an idle link is kept: well under the owner's keep-alive timeout (15 s), so the
#: entry node never reuses a link the owner is closing.
IDLE_TIMEOUT: Final = 5.0

#: Most bytes of an answer's head the entry node reads before passing the answer on (a
#: 503 is checked for a hop refusal; a longer head is passed on as it is).
MAX_REFUSAL_HEAD: Final = 4096

#: How every answer of a hop refusal begins (the relay's own 503).
REFUSAL_STATUS: Final = b"HTTP/1.1 503 "

#: Write buffer of a link above which the caller's connection stops being read.
WRITE_HIGH: Final = 1024 * 1024
WRITE_LOW: Final = 256 * 1024


class HopForbidden(PublicError):
    code, status, default_message = (
        "hop_forbidden",
        403,
        "X-Edge-Hop is reserved for the relay's own nodes",
    )


class HopNotHeld(PublicError):
    """An owner node's answer to a hop for a pooled name it holds no member of: the
    entry node tries another node of the pool (a caller sees it only through a node
    that cannot, as its own 503)."""

    code, status, default_message = (
        "hop_not_held",
        503,
        "this relay node holds no agent of the pool any more",
    )

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.extra_headers = ((HOP_HEADER, secret.encode("ascii")),)


def is_refusal(head: bytes, secrets: list[str]) -> bool:
    """Whether an answer's head is a :class:`HopNotHeld` of a node of this cluster."""
    return any(b"\r\nx-edge-hop: " + s.encode("ascii") + b"\r\n" in head for s in secrets)


class HopMetrics:
    """Hop counters in the relay's own registry, one child per peer node."""

    def __init__(self, metrics: Metrics) -> None:
        self._out = Counter(
            "edge_cluster_hops_out",
            "Public requests this node forwarded to the node that holds the session.",
            ["node"],
            registry=metrics.registry,
        )
        self._in = Counter(
            "edge_cluster_hops_in",
            "Requests another node forwarded here (authenticated by the cluster secret).",
            registry=metrics.registry,
        )
        self._failed = Counter(
            "edge_cluster_hop_failures",
            "Forwarded requests whose link to the owner node failed before any answer.",
            ["node"],
            registry=metrics.registry,
        )
        self._children: dict[tuple[str, str], Counter] = {}

    def out(self, node: str) -> None:
        self._child("out", node).inc()

    def received(self) -> None:
        self._in.inc()

    def failed(self, node: str) -> None:
        self._child("failed", node).inc()

    def _child(self, kind: str, node: str) -> Counter:
        child = self._children.get((kind, node))
        if child is None:
            parent = self._out if kind == "out" else self._failed
            child = self._children[(kind, node)] = parent.labels(node=node)
        return child


def hop_value(head: h1.Head) -> bytes | None:
    """The X-Edge-Hop value of a request, or None; several values count as forged."""
    found: bytes | None = None
    for name, value in head.headers:
        if name == HOP_HEADER:
            if found is not None:
                return b""
            found = value
    return found


def secret_matches(value: bytes, secrets: list[str]) -> bool:
    """Whether ``value`` is one of the cluster's secrets (constant time per secret)."""
    ok = False
    for secret in secrets:
        ok |= hmac.compare_digest(value, secret.encode("ascii"))
    return ok


def hop_head(raw: bytes, secret: str) -> bytes:
    """The forwarded head: ``raw`` (a rewritten head ending in CRLF CRLF) plus the hop."""
    return raw[:-2] + b"X-Edge-Hop: " + secret.encode("ascii") + b"\r\n\r\n"


class HopLink(asyncio.Protocol):
    """One keep-alive connection to another node; serves one :class:`NodeStream` at a
    time."""

    def __init__(self, pool: LinkPool, node: str) -> None:
        self.pool = pool
        self.node = node
        self.transport: asyncio.Transport | None = None
        self.stream: NodeStream | None = None
        self.lost = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)

    def data_received(self, data: bytes) -> None:
        if self.stream is None:
            self.close()  # bytes on an idle link: it cannot be trusted for the next one
            return
        self.stream.received(data)

    def eof_received(self) -> bool | None:
        if self.stream is not None:
            self.stream.link_ended()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.forget(self)
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.link_ended()

    def pause_writing(self) -> None:
        if self.stream is not None:
            self.stream.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.stream is not None:
            self.stream.handler.resume_writing()

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()


class NodeStream:
    """What :class:`relay.exchange.Exchange` talks to instead of a tunnel stream when the
    session is on another node: the same surface (write, end, reset, pause/resume
    reading, closed, ending)."""

    __slots__ = (
        "_answer",
        "_pending",
        "_retry",
        "closed",
        "ending",
        "handler",
        "link",
        "node",
        "pool",
        "refused",
        "tried",
        "unsent",
    )

    def __init__(
        self,
        pool: LinkPool,
        node: str,
        handler: Exchange,
        head: bytes,
        head_only: bool,
        tried: frozenset[str] = frozenset(),
    ) -> None:
        """``head_only``: the request is its head (no body, no upgrade): safe to resend.
        ``tried``: nodes this exchange was sent to before (and that never got it)."""
        self.pool = pool
        self.node = node
        self.handler = handler
        self.closed = False
        self.ending = False
        self.tried = tried
        #: No byte of the request left this node yet (no link carried it).
        self.unsent = True
        #: The owner refused the hop (HopNotHeld): no agent got the request.
        self.refused = False
        #: The answer's first bytes while they may still be a refusal (None: passed on).
        self._answer: bytearray | None = bytearray()
        pool.busy[node] = pool.busy.get(node, 0) + 1
        self.link: HopLink | None = pool.take(node)
        self._pending: list[bytes] | None = None
        #: On a reused link: the head, sent again on a new link if the old one turns out
        #: closed by the owner before any answer (see :meth:`link_ended`).
        self._retry: bytes | None = None
        if self.link is not None:
            self._retry = head if head_only else None
            self._attach(self.link)
            self.write(head)
        else:
            self._pending = [head]
            handler.pause_writing()  # read no more of the caller until the link is up
            pool.open(node, self)

    # -- the exchange's side ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed or self.ending or not data:
            return
        if self._pending is not None:
            self._pending.append(data)
        elif self.link is not None and self.link.transport is not None:
            self.link.transport.write(data)

    def end(self, close: bool = False) -> None:
        """The caller's request is complete. HTTP framing already says so; only an
        upgraded pipe passes the half-close on."""
        if self.closed or self.ending:
            return
        self.ending = True
        link = self.link
        if self.handler.watch.upgraded and link is not None and link.transport is not None:
            if link.transport.can_write_eof():
                link.transport.write_eof()

    def reset(self, code: ErrorCode = ErrorCode.CANCEL, reason: str = "") -> None:
        """Give up on the exchange: the link is cut (its state is unknown)."""
        if self.closed:
            return
        self._close()
        link, self.link = self.link, None
        if link is not None:
            link.stream = None
            link.abort()

    def pause_reading(self) -> None:
        if self.link is not None and self.link.transport is not None:
            self.link.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.link is not None and self.link.transport is not None:
            self.link.transport.resume_reading()

    # -- the link's side ----------------------------------------------------------------------

    def connected(self, link: HopLink) -> None:
        pending, self._pending = self._pending, None
        if self.closed:
            self.pool.give_back(link)
            return
        self._attach(link)
        assert link.transport is not None  # connected
        link.transport.writelines(pending or ())
        self.handler.resume_writing()

    def connect_failed(self, detail: str) -> None:
        self._pending = None
        if self.closed:
            return
        self._close()
        self.pool.down[self.node] = asyncio.get_running_loop().time()
        self.pool.metrics.failed(self.node)
        log.warning("cluster_hop_failed", extra={"node": self.node, "detail": detail})
        self.handler.aborted(ErrorCode.UNAVAILABLE, f"owner node {self.node}: {detail}")

    def received(self, data: bytes) -> None:
        self._retry = None  # the owner answered on this link: no resend from here on
        if self._answer is not None:
            data = self._check_answer(data)
            if not data:
                return
        handler = self.handler
        handler.data(data)
        watch = handler.watch
        if watch.complete and not self.closed:
            self._finish(close=not watch.keep_alive)

    def link_ended(self) -> None:
        """The owner closed the link (or it broke).

        A reused link that the owner closed while idle (a race with its keep-alive
        timeout or a drain) fails before any answer: a request that was all head (no
        body, no upgrade) is then sent again once on a new link, as HTTP clients do.
        """
        if self.closed:
            return
        link, self.link = self.link, None
        if link is not None:
            link.stream = None
            link.close()
        retry, self._retry = self._retry, None
        if retry is not None and not self.handler.sent:
            self._pending = [retry]
            self.handler.pause_writing()
            self.pool.open(self.node, self)
            return
        self._close()
        if self.handler.sent or self.handler.watch.upgraded:
            self.handler.end(True)  # a pipe's end; or an answer cut short (the exchange says)
            return
        self.pool.down[self.node] = asyncio.get_running_loop().time()  # a pool's last pick
        self.pool.metrics.failed(self.node)
        self.handler.aborted(ErrorCode.UNAVAILABLE, f"owner node {self.node} closed the link")

    def _check_answer(self, data: bytes) -> bytes:
        """Read the answer's head until it is surely not a refusal; returns the bytes to
        pass on (b"" while waiting, or after a refusal, which aborts the exchange)."""
        answer = self._answer
        assert answer is not None  # checked by the caller
        if not answer and not data.startswith(REFUSAL_STATUS[: len(data)]):
            self._answer = None  # not a 503: the usual case, decided without a copy
            return data
        answer += data
        if not answer.startswith(REFUSAL_STATUS[: len(answer)]):
            self._answer = None  # not a 503: the usual case, decided on the first bytes
            return bytes(answer)
        end = answer.find(b"\r\n\r\n")
        if end < 0 and len(answer) < MAX_REFUSAL_HEAD:
            return b""
        self._answer = None
        if end < 0 or not is_refusal(bytes(answer[: end + 2]), self.pool.secrets()):
            return bytes(answer)
        self.refused = True
        self.pool.down[self.node] = asyncio.get_running_loop().time()  # picked last a while
        self.reset()  # the rest of the refusal is not read: the link goes
        log.info("cluster_hop_refused", extra={"node": self.node, "agent": self.handler.name})
        self.handler.aborted(ErrorCode.REFUSED_STREAM, f"node {self.node} holds no agent of it")
        return b""

    def _close(self) -> None:
        """The stream is over (once): the node has one exchange less in flight."""
        self.closed = True
        left = self.pool.busy.get(self.node, 1) - 1
        if left > 0:
            self.pool.busy[self.node] = left
        else:
            self.pool.busy.pop(self.node, None)

    def _attach(self, link: HopLink) -> None:
        self.link = link
        self.unsent = False
        link.stream = self

    def _finish(self, close: bool) -> None:
        self._close()
        link, self.link = self.link, None
        reuse = not close and self.handler.request_done and not self.handler.watch.upgraded
        if link is not None:
            link.stream = None
            if reuse:
                self.pool.give_back(link)
            else:
                link.close()
        self.handler.end(close)


class LinkPool:
    """Keep-alive links to the other nodes, opened on demand."""

    def __init__(self, metrics: HopMetrics, secrets: Callable[[], list[str]] = list) -> None:
        self.metrics = metrics
        self.secrets = secrets  # the cluster's secrets (a refusal carries one)
        #: Exchanges in flight to each node (streams not closed): the pool's spread.
        self.busy: dict[str, int] = {}
        #: When a link to each node last failed to open (loop time).
        self.down: dict[str, float] = {}
        self.idle: dict[str, list[HopLink]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tls: ssl.SSLContext | None = None

    def take(self, node: str) -> HopLink | None:
        links = self.idle.get(node)
        loop = asyncio.get_running_loop()
        while links:
            link = links.pop()
            if not link.lost and loop.time() - link.idle_since < IDLE_TIMEOUT:
                return link
            link.close()
        return None

    def give_back(self, link: HopLink) -> None:
        links = self.idle.setdefault(link.node, [])
        if link.lost or len(links) >= MAX_IDLE_PER_NODE:
            link.close()
            return
        link.idle_since = asyncio.get_running_loop().time()
        links.append(link)

    def forget(self, link: HopLink) -> None:
        links = self.idle.get(link.node)
        if links and link in links:
            links.remove(link)

    def open(self, node: str, stream: NodeStream) -> None:
        task = asyncio.get_running_loop().create_task(self._open(node, stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, node: str, stream: NodeStream) -> None:
        parts = urlsplit(node)
        context = self._context() if parts.scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, link = await loop.create_connection(
                    lambda: HopLink(self, node), parts.hostname or "", parts.port or 0, ssl=context
                )
        except (OSError, TimeoutError) as exc:
            stream.connect_failed(str(exc) or type(exc).__name__)
            return
        log.info("cluster_link_opened", extra={"node": node})
        stream.connected(link)

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for links in self.idle.values():
            for link in links:
                with contextlib.suppress(Exception):
                    link.close()
        self.idle.clear()
