"""The relay's own paths, under ``/_edge/``, on the relay's own host (a host-routed
``<name>.DOMAIN`` sends them to its tunnel like any other path):

* ``/_edge/connect``: the agents' WebSocket endpoint (:mod:`relay.agents`);
* ``/_edge/healthz``: 200 while the process runs;
* ``/_edge/readyz``: 200 while it accepts agents and requests, 503 while draining;
* ``/_edge/metrics``: Prometheus text format (:mod:`relay.metrics`), behind
  ``--metrics-token`` when set;
* ``/_edge/tls-ask?domain=NAME.DOMAIN``: Caddy's on-demand TLS question (:mod:`relay.tlsask`).
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

import tunnel
import tunnel.server
from relay import h1
from relay.agents import AgentSession, authorize, check_penalty
from relay.answers import error_response, json_response, response, text_response
from relay.errors import AgentRefused, BadRequest, MetricsUnauthorized, NotFound
from relay.metrics import CONTENT_TYPE
from relay.tlsask import TLS_ASK_PATH, tls_ask
from wire.rules import AGENT_KEY_HEADER, CONNECT_PATH

if TYPE_CHECKING:
    from relay.public import PublicConnection

log = logging.getLogger(__name__)

_AGENT_KEY = AGENT_KEY_HEADER.lower().encode()


def _check_metrics_token(token: str | None, head: h1.Head) -> None:
    """``--metrics-token``: 401 unless the request carries it as a Bearer token."""
    if token is None:
        return
    want = b"bearer " + token.encode()
    for name, value in head.headers:
        if name == b"authorization":
            got = value.strip()
            # Constant time over the value; the scheme is case-insensitive.
            if hmac.compare_digest(got[:7].lower() + got[7:], want):
                return
    raise MetricsUnauthorized()


def handle(conn: PublicConnection, head: h1.Head) -> None:
    """Answer a request for a reserved path. Raises PublicError for refusals."""
    path, _, query = head.target.partition(b"?")
    app = conn.app
    if path == CONNECT_PATH.encode():
        if head.upgrade != b"websocket":
            raise BadRequest("this endpoint takes a WebSocket upgrade")
        _connect(conn, head, query.decode("latin-1"))
        return
    if path == b"/_edge/healthz":
        answer = json_response(200, {"status": "ok"})
    elif path == b"/_edge/readyz":
        ready = not app.state.draining
        body = {"status": "ready" if ready else "draining", "agents": app.agents()}
        answer = json_response(200 if ready else 503, body)
    elif path == b"/_edge/metrics":
        _check_metrics_token(app.state.settings.metrics_token, head)
        answer = text_response(200, app.state.metrics.render(), CONTENT_TYPE)
    elif path == TLS_ASK_PATH.encode():
        ask = tls_ask(app.state.store, app.state.settings.domain, query)
        answer = response(ask.status, ask.headers, ask.body)
    else:
        raise NotFound()
    conn.write(answer)
    if head.keep_alive and head.framing is h1.Framing.NONE:
        conn.next_request()
    else:
        conn.close()


def _connect(conn: PublicConnection, head: h1.Head, query: str) -> None:
    state = conn.state
    ws, request = tunnel.server.read_upgrade(head.raw)
    if request is None:
        raise BadRequest("invalid WebSocket upgrade")
    offered = tunnel.server.offered_subprotocols(request)
    authorization = [v for n, v in head.headers if n == b"authorization"]
    agent_key = [v for n, v in head.headers if n == _AGENT_KEY]
    client = f"{conn.client_ip}"
    try:
        claim = authorize(state, query, authorization, offered, agent_key)
        check_penalty(state, claim, client)
    except AgentRefused as exc:
        state.metrics.agent_refused(exc.status)
        log.info("agent_refused", extra={"status": exc.status, "code": exc.code, "client": client})
        conn.write(error_response(exc, close=True))
        conn.close()
        return
    transport = conn.transport
    if transport is None:
        return
    rest = conn.adopt_upgrade()
    agent = AgentSession(state, claim, client, conn.server_port)
    settings = state.settings
    link = tunnel.server.accept(
        ws,
        request,
        transport,
        ping_interval=settings.ws_ping_interval,
        ping_timeout=settings.ws_ping_timeout,
    )
    if link is None:
        return
    link.attach(agent.session)
    if rest:
        link.data_received(rest)
