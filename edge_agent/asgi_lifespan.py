"""The ASGI lifespan protocol for an in-process app (startup before the first request,
shutdown when the target closes), with uvicorn's ``auto`` semantics: an app that raises
before answering ``lifespan.startup`` is taken not to support lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Literal

from edge_agent.asgi_scope import ASGI_VERSION
from edge_agent.errors import ConfigError

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]
LifespanMode = Literal["auto", "on", "off"]

#: How long shutdown may take before the lifespan task is cancelled.
SHUTDOWN_TIMEOUT: Final = 10.0

logger = logging.getLogger(__name__)


class Lifespan:
    """Runs one app's lifespan. ``state`` is the dict the app may fill at startup
    (copied into every request scope)."""

    def __init__(self, app: AsgiApp, mode: LifespanMode = "auto") -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._answer: asyncio.Future[Message] | None = None
        self._task: asyncio.Task[None] | None = None
        self.supported = False

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the app's answer.

        Raises ConfigError if the app reports startup failure (or, in mode ``on``, does
        not support lifespan).
        """
        if self.mode == "off":
            return
        self._answer = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._main(), name="asgi-lifespan")
        await self._inbox.put({"type": "lifespan.startup"})
        answer = await self._answer
        if answer["type"] == "lifespan.startup.failed":
            raise ConfigError(f"ASGI app startup failed: {answer.get('message', '')}")
        self.supported = answer["type"] == "lifespan.startup.complete"
        if not self.supported and self.mode == "on":
            raise ConfigError("ASGI app does not support the lifespan protocol")

    async def shutdown(self, deadline: float = SHUTDOWN_TIMEOUT) -> None:
        """Send ``lifespan.shutdown`` and wait (at most ``deadline`` seconds) for the answer."""
        task = self._task
        if task is None or not self.supported:
            return
        self._answer = asyncio.get_running_loop().create_future()
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            answer = await asyncio.wait_for(asyncio.shield(self._answer), deadline)
            if answer["type"] == "lifespan.shutdown.failed":
                logger.error("asgi_shutdown_failed", extra={"reason": answer.get("message")})
        except TimeoutError:
            logger.warning("asgi_shutdown_timeout", extra={"deadline": deadline})
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._task = None

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": dict(ASGI_VERSION), "state": self.state}
        try:
            await self.app(scope, self._inbox.get, self._send)
        except Exception as exc:
            if not self.supported:
                logger.info("asgi_lifespan_unsupported", extra={"error": repr(exc)})
            else:
                logger.exception("asgi_lifespan_error")
        self._resolve({"type": "lifespan.unsupported"})

    async def _send(self, message: Message) -> None:
        self._resolve(message)

    def _resolve(self, message: Message) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(message)
