"""Push or poll: which way the platform's calls reach the agent, following the tunnel.

Theory of operation
-------------------
In push mode (always at start) the platform POSTs each call to the relay URL. When the
tunnel to the relay has been down for ``poll_after`` seconds, :class:`DeliverySwitch`
asks the session to register again with ``delivery_mode: "poll"``; once the platform
took it, :class:`~.poll.PollDelivery` fetches and answers the calls. When the tunnel is
up again, the switch registers push mode (with the relay URL) and, once the platform
took it, polls :data:`DRAIN_ROUNDS` more rounds at least :data:`DRAIN_GRACE` seconds
apart: a call the platform queued just before the switch is still answered. The cursor
is kept for the next outage.

No call is lost or answered twice across the switches: calls queued for poll stay in
the activity list until answered, the cursor only moves past answered rows, pushed calls
never look like queued ones (:func:`~.inbox.parse_call`), and both paths go through the
same messageId de-duplication before the local server.

Only a "next" platform has poll mode. Against "current" the switch says so once in the
log and keeps waiting for the tunnel (calls fail meanwhile, as they do without it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from edge_agent.molecule.models import RegisterResult
from edge_agent.molecule.poll import PollDelivery
from edge_agent.molecule.session import Generation, PlatformSession

logger = logging.getLogger(__name__)

PUSH: Final = "push"
POLL: Final = "poll"

#: Default ``--poll-after``: seconds the tunnel must be down before poll delivery.
POLL_AFTER: Final = 60.0
#: How often the tunnel's state is looked at.
TICK: Final = 0.5
#: After the return to push: rounds of polling, and the least time they span.
DRAIN_ROUNDS: Final = 3
DRAIN_GRACE: Final = 4.0


class DeliverySwitch:
    """Switches ``session`` between push and poll as ``connected()`` says (see above).

    Args:
        session: the platform session (registers the mode).
        poller: answers queued calls while in poll mode.
        connected: True while the tunnel is up.
        poll_after: seconds of tunnel outage before poll mode.
        on_mode: called with "poll" / "push" once the platform took the mode.
        tick, drain_grace: :data:`TICK` and :data:`DRAIN_GRACE` (tests shrink them).
    """

    def __init__(
        self,
        session: PlatformSession,
        poller: PollDelivery,
        connected: Callable[[], bool],
        *,
        poll_after: float = POLL_AFTER,
        on_mode: Callable[[str], None] | None = None,
        tick: float = TICK,
        drain_grace: float = DRAIN_GRACE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not poll_after > 0:
            raise ValueError("poll_after must be > 0 seconds")
        self._session = session
        self._poller = poller
        self._connected = connected
        self._poll_after = poll_after
        self._on_mode = on_mode
        self._tick = tick
        self._drain_grace = drain_grace
        self._clock = clock
        self._sleep = sleep
        self.mode = PUSH
        self._down_since: float | None = None
        self._told_current = False
        self._taken: dict[str, asyncio.Event] = {PUSH: asyncio.Event(), POLL: asyncio.Event()}

    def registered(self, result: RegisterResult) -> None:
        """Feed every registration result here (the session's ``on_registered``)."""
        if result.delivery_mode in self._taken:
            self._taken[result.delivery_mode].set()

    async def run(self) -> None:
        """Follow the tunnel until cancelled."""
        polling: asyncio.Task[None] | None = None
        try:
            while True:
                await self._sleep(self._tick)
                if self.mode == PUSH and self._down_long_enough():
                    polling = await self._to_poll()
                elif self.mode == POLL and self._connected():
                    await self._to_push(polling)
                    polling = None
        finally:
            if polling is not None:
                polling.cancel()
                await asyncio.gather(polling, return_exceptions=True)

    def _down_long_enough(self) -> bool:
        if self._connected():
            self._down_since = None
            return False
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
        if now - self._down_since < self._poll_after:
            return False
        if self._session.generation is Generation.NEXT:
            return True
        if not self._told_current:
            self._told_current = True
            logger.warning(
                "poll_delivery_unavailable generation=%s: the platform has no poll mode; "
                "waiting for the tunnel",
                self._session.generation.value,
            )
        return False

    async def _to_poll(self) -> asyncio.Task[None] | None:
        down_for = self._clock() - (self._down_since or 0.0)
        logger.info("delivery_switch mode=poll: the tunnel is down for %.0f s", down_for)
        await self._register(POLL)
        if self._connected():  # back while we registered: push again at the next tick
            logger.info("delivery_switch: the tunnel came back while switching")
        return asyncio.create_task(self._poller.run(), name="poll-delivery")

    async def _to_push(self, polling: asyncio.Task[None] | None) -> None:
        logger.info("delivery_switch mode=push: the tunnel is back")
        await self._register(PUSH)
        if polling is not None:
            polling.cancel()
            await asyncio.gather(polling, return_exceptions=True)
        started, rounds = self._clock(), 0
        while rounds < DRAIN_ROUNDS or self._clock() - started < self._drain_grace:
            await self._poller.round()
            rounds += 1
            await self._sleep(self._drain_grace / DRAIN_ROUNDS)
        self._down_since = None

    async def _register(self, mode: str) -> None:
        self._taken[mode].clear()
        self._session.set_delivery_mode(mode)
        await self._taken[mode].wait()
        self.mode = mode
        logger.info("delivery_mode_registered mode=%s", mode)
        if self._on_mode is not None:
            self._on_mode(mode)
