"""ASGI types the relay uses (uvicorn's are private), and small response helpers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from relay.errors import AgentRefused, PublicError, http_error

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]


async def send_response(
    send: Send, status: int, headers: RawHeaders, body: bytes, close: bool = False
) -> None:
    """Send a complete HTTP response (``close`` adds ``connection: close``)."""
    if close:
        headers = [*headers, (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, exc: PublicError, close: bool = False) -> int:
    """Answer a public caller with the relay's JSON error. Returns the status."""
    status, headers, body = http_error(exc)
    await send_response(send, status, headers, body, close)
    return status


async def deny_websocket(send: Send, exc: AgentRefused | PublicError) -> None:
    """Refuse a WebSocket upgrade with plain HTTP, before accepting it.

    Uses the ASGI ``websocket.http.response`` extension, which uvicorn's
    websockets-sansio implementation supports: the agent sees the real status (401, 403,
    400, 503) and the relay's JSON body. (Without the extension, ``websocket.close``
    before accept would always give 403.)
    """
    status, headers, body = http_error(exc)
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
