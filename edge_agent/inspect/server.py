"""The inspector's HTTP server on 127.0.0.1: the page, the JSON API and its SSE stream.

Why not uvicorn or aiohttp: the agent already has httptools (its HTTP client parses
with it), and this server handles one developer's browser, not traffic. A small
``asyncio.Protocol`` with ``httptools.HttpRequestParser`` serves it; each connection
carries one request (``Connection: close``), except ``/api/events``, which stays open.

Memory, measured on the development VM (CPython 3.11, uvloop; ``edge-agent http`` to a
port, connected and idle, three processes each): 33.2 MiB RSS with the inspector on,
32.1 MiB with ``--no-inspect``, so the whole inspector (this server, the store, the
Recorder and its parsers) costs about 1.1 MiB, of which about 0.35 MiB is Python heap
(tracemalloc) and the rest the interpreter's arenas. Holding 500 small exchanges (200
byte POSTs) it was 34.7 MiB, 36.8 MiB once they were all parsed (listed). Importing
uvicorn's server would have added about 1.4 MiB on its own, aiohttp's web server about
11 MiB.

Routes (documented in docs/inspector.md): ``GET /`` (the page), ``GET /api/requests``,
``GET /api/requests/{id}``, ``POST /api/requests/{id}/replay``, ``GET /api/events``,
``GET /metrics`` (Prometheus text format).

It answers only requests whose ``Host`` names the loopback address it listens on (a
web page elsewhere cannot read it through DNS rebinding), and a ``POST`` only without
an ``Origin`` or with its own (no cross-site replay).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
import re
from typing import TYPE_CHECKING, Any, Final, cast

import httptools

from edge_agent.inspect import views
from edge_agent.inspect.replay import Replayer, ReplayError
from edge_agent.inspect.store import Store

if TYPE_CHECKING:
    from edge_agent.inspect.metrics import AgentMetrics

logger = logging.getLogger(__name__)

#: Largest request body the API reads (a replay's edits); larger ones get 413.
MAX_API_BODY: Final = 16 * 1024 * 1024
#: Longest request head (URL plus header lines) the API reads; longer ones get 431.
MAX_API_HEAD: Final = 64 * 1024
#: Notifications queued for one ``/api/events`` client; a client that falls this far
#: behind is disconnected (its EventSource reconnects and the page reloads the list).
EVENTS_QUEUE: Final = 1000
#: Seconds between SSE keep-alive comments on an idle ``/api/events``.
EVENTS_PING: Final = 15.0
#: Ports tried after the default one when it is taken.
PORT_SEARCH: Final = 20

_PAGES: Final = frozenset({"/", "/index.html"})
_API: Final = frozenset({"/api/requests", "/api/events", "/metrics"})
_DETAIL: Final = re.compile(r"^/api/requests/(\d+)$")
_REPLAY: Final = re.compile(r"^/api/requests/(\d+)/replay$")

_PAGE_HEADERS: Final = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; "
     "style-src 'unsafe-inline'; connect-src 'self'; img-src data:"),
    ("X-Frame-Options", "DENY"),
)  # fmt: skip


class Request:
    __slots__ = ("body", "headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body


class _Conn(asyncio.Protocol):
    """One client connection: parse one request, hand it to the server, close."""

    def __init__(self, server: InspectorServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = bytearray()
        self.headers: dict[str, str] = {}
        self.head_size = 0
        self.body = bytearray()
        self.gone = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone.set()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.reply(400, {"error": "no upgrades here"})
        except (httptools.HttpParserError, _TooLarge) as exc:
            status = exc.status if isinstance(exc, _TooLarge) else 400
            self.reply(status, {"error": "bad request"})

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > MAX_API_BODY:
            raise _TooLarge(413)
        self.body += body

    def on_message_complete(self) -> None:
        if self.transport is None or self.task is not None:
            return
        self.transport.pause_reading()
        path = self.url.decode("latin-1").partition("?")[0]
        method = self.parser.get_method().decode("latin-1")
        request = Request(method, path, self.headers, bytes(self.body))
        self.task = asyncio.get_running_loop().create_task(self.server.dispatch(self, request))
        self.server.track(self.task)

    def _count(self, n: int) -> None:
        self.head_size += n
        if self.head_size > MAX_API_HEAD:
            raise _TooLarge(431)

    # -- answering -----------------------------------------------------------------

    def reply(
        self,
        status: int,
        body: Any,
        content_type: str = "application/json",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        if isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        head = _head(status, content_type, (*headers, ("Content-Length", str(len(data)))))
        self.write(head + data)
        self.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _TooLarge(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _head(status: int, content_type: str, headers: tuple[tuple[str, str], ...]) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
        f"Content-Type: {content_type}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        "Connection: close",
        *(f"{n}: {v}" for n, v in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_REASONS: Final = {
    200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
    421: "Misdirected Request", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}  # fmt: skip


class InspectorServer:
    """Serves ``store`` (and replays through ``replayer``) on a loopback address.

    Args:
        store: what is shown.
        replayer: how ``POST .../replay`` reaches the local target (None: 404).
    """

    def __init__(self, store: Store, replayer: Replayer | None) -> None:
        self.store = store
        self.replayer = replayer
        self.metrics: AgentMetrics | None = None  # /metrics, when the command keeps them
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._page: bytes | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, host: str, port: int, search: int = 0) -> str:
        """Listen on ``host:port``, or the next of ``search`` ports if it is taken.

        Raises OSError when no port could be bound.
        """
        loop = asyncio.get_running_loop()
        for candidate in range(port, port + search + 1) if port else (0,):
            try:
                self._server = await loop.create_server(
                    lambda: _Conn(self), host, candidate, reuse_address=True
                )
                break
            except OSError:
                if candidate >= port + search:
                    raise
        # uvloop's Server is no asyncio.Server subclass, but has ``sockets`` too.
        sockname = cast(asyncio.Server, self._server).sockets[0].getsockname()
        self.host, self.port = host, int(sockname[1])
        return self.url

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- dispatch --------------------------------------------------------------------

    async def dispatch(self, conn: _Conn, request: Request) -> None:
        try:
            refusal = self._refusal(request)
            if refusal is not None:
                conn.reply(*refusal)
                return
            await self._route(conn, request)
        except Exception:
            logger.exception("inspect_server_error", extra={"path": request.path})
            conn.reply(500, {"error": "internal error"})

    def _refusal(self, request: Request) -> tuple[int, dict[str, str]] | None:
        host = request.headers.get("host", "")
        if host not in self._hosts():
            return 421, {"error": "this inspector answers on its loopback address only"}
        origin = request.headers.get("origin")
        if request.method == "POST" and origin is not None and origin != f"http://{host}":
            return 403, {"error": "cross-origin requests are refused"}
        return None

    def _hosts(self) -> set[str]:
        names = {"localhost", self.host, f"[{self.host}]" if ":" in self.host else self.host}
        return {f"{name}:{self.port}" for name in names}

    async def _route(self, conn: _Conn, request: Request) -> None:
        path, method = request.path, request.method
        replay, detail = _REPLAY.match(path), _DETAIL.match(path)
        if not (replay or detail or path in _PAGES or path in _API):
            conn.reply(404, {"error": f"no route {method} {path}"})
        elif method != ("POST" if replay else "GET"):
            conn.reply(405, {"error": f"{method} not allowed on {path}"})
        elif replay:
            self.replay(conn, int(replay.group(1)), request.body)
        elif detail:
            self.detail(conn, int(detail.group(1)))
        elif path == "/api/events":
            await self.events(conn)
        elif path == "/api/requests":
            conn.reply(200, self.rows())
        elif path == "/metrics":
            self.metrics_page(conn)
        else:
            conn.reply(200, self.page(), "text/html; charset=utf-8", _PAGE_HEADERS)

    def page(self) -> bytes:
        if self._page is None:
            files = importlib.resources.files("edge_agent.inspect")
            self._page = files.joinpath("page.html").read_bytes()
        return self._page

    def metrics_page(self, conn: _Conn) -> None:
        if self.metrics is None:
            conn.reply(404, {"error": "no metrics in this process"})
            return
        from edge_agent.inspect.metrics import CONTENT_TYPE

        conn.reply(200, self.metrics.render(), CONTENT_TYPE)

    def rows(self) -> list[dict[str, Any]]:
        masker = self.store.masker
        return [views.summary(exchange, masker) for exchange in self.store.newest_first()]

    def detail(self, conn: _Conn, exchange_id: int) -> None:
        exchange = self.store.get(exchange_id)
        if exchange is None:
            conn.reply(404, {"error": f"no request {exchange_id} (gone, or never was)"})
        else:
            conn.reply(200, views.detail(exchange, self.store.masker))

    def replay(self, conn: _Conn, exchange_id: int, body: bytes) -> None:
        if self.replayer is None:
            conn.reply(404, {"error": "replay is not available"})
            return
        try:
            edits = json.loads(body) if body.strip() else {}
            if not isinstance(edits, dict):
                raise ReplayError(400, "the edits must be a JSON object")
            new_id = self.replayer.replay(exchange_id, edits)
        except ValueError as exc:
            status = exc.status if isinstance(exc, ReplayError) else 400
            conn.reply(status, {"error": str(exc)})
            return
        conn.reply(200, {"id": new_id})

    async def events(self, conn: _Conn) -> None:
        """``/api/events``: ``event: new`` / ``event: update`` with the row as data."""
        queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue(EVENTS_QUEUE)

        def listen(kind: str, exchange_id: int) -> None:
            try:
                queue.put_nowait((kind, exchange_id))
            except asyncio.QueueFull:
                conn.close()  # too far behind: it reconnects and reloads

        conn.write(_head(200, "text/event-stream", ()) + b"retry: 1000\n\n")
        self.store.subscribe(listen)
        try:
            await self._pump_events(conn, queue)
        finally:
            self.store.unsubscribe(listen)
            conn.close()

    async def _pump_events(self, conn: _Conn, queue: asyncio.Queue[tuple[str, int]]) -> None:
        gone = asyncio.ensure_future(conn.gone.wait())
        try:
            while not conn.gone.is_set():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, gone}, timeout=EVENTS_PING, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    conn.write(b": ping\n\n")
                    continue
                kind, exchange_id = getter.result()
                exchange = self.store.get(exchange_id)
                if exchange is not None:
                    row = views.summary(exchange, self.store.masker)
                    data = json.dumps(row, ensure_ascii=False)
                    conn.write(f"event: {kind}\ndata: {data}\n\n".encode())
        finally:
            gone.cancel()
