"""The agent card of the local A2A server, read from its well-known path.

Without ``--agent-card``, ``edge-agent run`` registers the card the local server
publishes at ``/.well-known/agent-card.json`` (A2A 0.3 and 1.0; ``agent.json`` of 0.2 is
tried second), with its interface URLs moved onto the public URL
(:func:`edge_agent.molecule.card.rewrite_card_urls`). The platform session asks for it
again every cycle and pushes a changed card (:class:`~.session.PlatformSession`), so a
command that starts its server after the first registration, or restarts with new
skills, is reflected within a heartbeat interval.

A server that does not answer, answers an error, or answers something that is not a
JSON object of at most :data:`MAX_CARD_BYTES` simply has no card: the minimal built
card (or the last good one) stays. The request carries no credential.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

import httpx

logger = logging.getLogger(__name__)

CARD_PATHS: Final = ("/.well-known/agent-card.json", "/.well-known/agent.json")
#: Largest card we accept (they are a few KiB; the platform stores them as JSONB).
MAX_CARD_BYTES: Final = 1024 * 1024
#: A local server answers at once or not at all; a slow one must not delay a heartbeat.
CARD_TIMEOUT: Final = httpx.Timeout(2.0)


class LocalCard:
    """Fetches the local server's card over HTTP, or from an in-process ASGI app.

    Args:
        base_url: the local server (``--to``), e.g. ``http://127.0.0.1:8000``; a path
            prefix is kept (``http://127.0.0.1:8000/agent`` asks ``/agent/.well-known/...``).
        app: an ASGI app served in-process (``--app``), asked without a socket.
    """

    def __init__(self, *, base_url: str | None = None, app: Any = None) -> None:
        if (base_url is None) == (app is None):
            raise ValueError("give either base_url or app")
        transport = (
            httpx.ASGITransport(app=app, raise_app_exceptions=False) if app is not None else None
        )
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") if base_url else "http://local-agent",
            transport=transport,
            timeout=CARD_TIMEOUT,
            follow_redirects=False,  # a card is served where it is asked for
            trust_env=False,  # never through a proxy: this is a loopback call
        )
        self._missing_logged = False

    async def aclose(self) -> None:
        await self._http.aclose()

    async def fetch(self) -> dict[str, Any] | None:
        """The card, or None when the local server publishes none (now)."""
        for path in CARD_PATHS:
            card = await self._fetch_one(path)
            if card is not None:
                self._missing_logged = False
                return card
        if not self._missing_logged:
            self._missing_logged = True
            logger.info("local_agent_card_unavailable", extra={"paths": list(CARD_PATHS)})
        return None

    async def _fetch_one(self, path: str) -> dict[str, Any] | None:
        try:
            async with self._http.stream("GET", path) as response:
                if response.status_code != 200:
                    return None
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_CARD_BYTES:
                        logger.warning("local_agent_card_too_large", extra={"path": path})
                        return None
        except httpx.HTTPError:
            return None
        try:
            card = json.loads(body)
        except ValueError:
            return None
        return card if isinstance(card, dict) else None
