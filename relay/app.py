"""The relay's ASGI application: a raw dispatcher, no framework on the forwarding path.

Reserved paths live under ``/_edge/`` (on every host):

* ``/_edge/connect``: the agents' WebSocket endpoint (:mod:`relay.agents`);
* ``/_edge/healthz``: 200 while the process runs;
* ``/_edge/readyz``: 200 while it accepts agents and requests, 503 while draining;
* ``/_edge/metrics``: Prometheus text format;
* ``/_edge/tls-ask``: may a TLS proxy get a certificate for a name (:mod:`relay.tlsask`).

Everything else is a public request for a tunnel (:mod:`relay.public`). Relay-made
errors are answered here, in one place, from :func:`relay.errors.http_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Final

from relay.agents import serve_agent, token_still_valid
from relay.asgi import Receive, Scope, Send, deny_websocket, send_error, send_response
from relay.errors import BadRequest, NotFound, PublicError, RelayConfigError
from relay.public import handle_public
from relay.session import WS_GOING_AWAY, WS_POLICY, State
from relay.state import RelayState
from relay.tlsask import TLS_ASK_PATH, tls_ask
from wire import ErrorCode

log = logging.getLogger(__name__)

RESERVED_PREFIX: Final = "/_edge/"
CONNECT_PATH: Final = "/_edge/connect"

#: Statuses after which the connection is closed (the request may be broken or stalled).
#: A 413 closes it only when Content-Length announced the oversized body (none of it was
#: read); after a chunked body outgrew the limit, uvicorn discards the rest as it comes
#: and the caller still reads the 413 (closing then would reset the connection under the
#: caller's upload, and it might never see the answer).
_CLOSE_AFTER: Final = frozenset({400, 408, 431})

#: How often a draining relay checks whether its streams are done, in seconds.
_DRAIN_POLL: Final = 0.05

#: Seconds a shutdown waits for agents to acknowledge the WebSocket close.
_CLOSE_WAIT: Final = 1.0


def _json(obj: object) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return headers, body


def _must_close(scope: Scope, exc: PublicError) -> bool:
    if exc.status == 413:
        return any(name == b"content-length" for name, _ in scope["headers"])
    return exc.status in _CLOSE_AFTER


class RelayApp:
    """The ASGI callable. Start it with lifespan "on" so the token watcher runs."""

    def __init__(self, state: RelayState) -> None:
        self.state = state
        self._watcher: asyncio.Task[None] | None = None
        metrics = state.metrics
        metrics.gauge("edge_agents_connected", "Agent sessions connected.", self._agents)
        metrics.gauge("edge_streams_open", "Streams in flight over all sessions.", self._streams)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- HTTP -----------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"].startswith(RESERVED_PREFIX):
            try:
                await self._reserved(scope, send)
            except PublicError as exc:
                await send_error(send, exc)
            return
        try:
            status = await handle_public(self.state, scope, receive, send)
        except PublicError as exc:
            status = await send_error(send, exc, close=_must_close(scope, exc))
        self.state.metrics.request_done(status)

    async def _reserved(self, scope: Scope, send: Send) -> None:
        path = scope["path"]
        if path == "/_edge/healthz":
            await send_response(send, 200, *_json({"status": "ok"}))
        elif path == "/_edge/readyz":
            ready = not self.state.draining
            body = {"status": "ready" if ready else "draining", "agents": self._agents()}
            await send_response(send, 200 if ready else 503, *_json(body))
        elif path == "/_edge/metrics":
            text = self.state.metrics.render().encode()
            headers = [
                (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                (b"content-length", str(len(text)).encode()),
            ]
            await send_response(send, 200, headers, text)
        elif path == TLS_ASK_PATH:
            ask = tls_ask(self.state.store, self.state.settings.domain, scope["query_string"])
            await send_response(send, ask.status, ask.headers, ask.body)
        elif path == CONNECT_PATH:
            raise BadRequest("this endpoint takes a WebSocket upgrade")
        else:
            raise NotFound()

    # -- WebSocket ------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == CONNECT_PATH:
            await serve_agent(self.state, scope, receive, send)
            return
        await receive()  # websocket.connect
        await deny_websocket(send, BadRequest("WebSocket is not forwarded through tunnels"))

    # -- lifespan, revocation and shutdown -------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._watcher = asyncio.get_running_loop().create_task(self._watch_tokens())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._watcher is not None:
                    self._watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._watcher
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _watch_tokens(self) -> None:
        """Re-read the token store when it changes; close sessions it no longer admits."""
        while True:
            await asyncio.sleep(self.state.settings.token_poll_interval)
            try:
                changed = self.state.store.refresh()
            except RelayConfigError as exc:
                log.error("token_store_unreadable", extra={"detail": str(exc)})
                continue
            if changed:
                self.enforce_tokens()

    def enforce_tokens(self) -> None:
        for session in self.state.registry.local_sessions():
            if session.state is State.CLOSED or token_still_valid(self.state, session):
                continue
            log.warning("agent_revoked", extra={"agent": session.name})
            session.close(ErrorCode.UNAUTHORIZED, "the relay token was revoked", WS_POLICY)

    async def drain(self, grace: float, force: Callable[[], bool] = lambda: False) -> None:
        """Graceful shutdown: refuse new work, GOAWAY every agent, let streams finish.

        Returns when every stream ended, after ``grace`` seconds, or once ``force()``
        is true; then closes every agent WebSocket that is still open.
        """
        self.state.draining = True
        sessions = self.state.registry.local_sessions()
        log.info("relay_draining", extra={"agents": len(sessions), "streams": self._streams()})
        for session in sessions:
            session.retire(ErrorCode.NO_ERROR, "relay shutting down", grace)
        deadline = time.monotonic() + grace
        # Polling (not an event): it must also notice force(), set by a signal handler.
        while self._streams() and time.monotonic() < deadline and not force():  # noqa: ASYNC110
            await asyncio.sleep(_DRAIN_POLL)
        for session in self.state.registry.local_sessions():
            session.close(ErrorCode.NO_ERROR, "relay shutting down", WS_GOING_AWAY)
        loop = asyncio.get_running_loop()
        waits = [loop.create_task(s.closed.wait()) for s in self.state.registry.local_sessions()]
        if waits:
            await asyncio.wait(waits, timeout=_CLOSE_WAIT)
            for task in waits:
                task.cancel()
        log.info("relay_drained", extra={"streams_left": self._streams()})

    def _agents(self) -> int:
        return sum(s.state is not State.CLOSED for s in self.state.registry.local_sessions())

    def _streams(self) -> int:
        return sum(len(s.streams) for s in self.state.registry.local_sessions())
