"""Checking the "next" platform's inbound secret on every tunnelled request.

A "next" platform sends ``Authorization: Bearer <platform_inbound_secret>`` with each A2A
call it forwards (contract §11). The relay is told to refuse requests without it
(caller auth in HELLO, hashed); :class:`InboundSecretTarget` checks it again on the
agent, so a relay that is misconfigured, restarted without the credential, or not
ours cannot hand us unauthenticated traffic.

Pausing is not done here: :meth:`edge_agent.tunnel.TunnelClient.set_paused` already
refuses new streams with RESET UNAVAILABLE (503 at the relay).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Final

from edge_agent.bridge import WebSocketClosed, delegate_websocket
from edge_agent.molecule.tokens import check_credential
from edge_agent.port import StreamHandler, StreamPort
from edge_agent.target import LocalRequest, LocalResponse, Target

logger = logging.getLogger(__name__)

#: JSON-RPC "invalid request": the closest standard code for a refused credential, so an
#: A2A client shows a readable error rather than failing to parse the answer.
_JSONRPC_INVALID_REQUEST: Final = -32600

_UNAUTHORIZED_BODY: Final = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": _JSONRPC_INVALID_REQUEST,
            "message": "unauthorized: missing or invalid platform inbound secret",
        },
    }
).encode()


class InboundSecretTarget:
    """Requires ``Authorization: Bearer <secret>`` while a secret is set.

    With no secret (the "current" platform) every request passes. The secret can be
    set or replaced at any time (:meth:`set_secret`, from the session's
    ``on_inbound_secret``); the comparison is constant-time. A refused request gets 401
    with a JSON-RPC error body and ``WWW-Authenticate: Bearer``; the secret never
    appears in the answer or the logs.
    """

    def __init__(self, inner: Target, secret: str | None = None) -> None:
        self._inner = inner
        self._secret: bytes | None = None
        self.set_secret(secret)

    @property
    def enforcing(self) -> bool:
        return self._secret is not None

    def set_secret(self, secret: str | None) -> None:
        self._secret = None if secret is None else check_credential(secret, "secret").encode()

    async def handle(self, request: LocalRequest) -> LocalResponse:
        secret = self._secret
        if secret is not None and not _presents(request.headers, secret):
            logger.warning("inbound_secret_rejected", extra={"stream_id": request.stream_id})
            return _unauthorized()
        return await self._inner.handle(request)

    def websocket(
        self, request: LocalRequest, stream: StreamPort, on_close: WebSocketClosed
    ) -> StreamHandler | None:
        """A WebSocket upgrade needs the secret too: without it, None, and :meth:`handle`
        answers the request with its 401."""
        secret = self._secret
        if secret is not None and not _presents(request.headers, secret):
            return None
        return delegate_websocket(self._inner, request, stream, on_close)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _presents(headers: list[tuple[str, str]], secret: bytes) -> bool:
    values = [value for name, value in headers if name.lower() == "authorization"]
    if len(values) != 1:  # none, or an ambiguous pair
        return False
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode("utf-8", "surrogateescape"), secret)


def _unauthorized() -> LocalResponse:
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(_UNAUTHORIZED_BODY))),
        ("www-authenticate", 'Bearer realm="molecule-platform"'),
        ("cache-control", "no-store"),
    ]
    return LocalResponse(401, headers, _once(_UNAUTHORIZED_BODY))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
