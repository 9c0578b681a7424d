"""The agent's session with the Molecule platform.

Theory of operation
-------------------
:meth:`PlatformSession.run` repeats one *cycle* every ``heartbeat_interval`` (30 s, well
inside the platform's 180 s liveness TTL)::

    state    GET /workspaces/:id/state   (skipped until we hold a token)
               deleted            -> stop (WorkspaceDeleted)
               paused             -> on_paused once; never re-register while paused
                                     (registering flips a paused workspace online)
               un-paused          -> on_resumed once; re-register (pause cleared the URL)
               offline, provisioning, awaiting_agent, failed, unknown
                                  -> the platform forgot us: re-register
    card     (with a card source) the local server's card; a changed one is pushed
               with POST /registry/update-card, or used by the coming registration
    register POST /registry/register  (first cycle, and whenever flagged above or
               after any failed cycle: a heartbeat does not recreate an expired
               liveness key, only a registration does)
    heartbeat POST /registry/heartbeat  (also while paused: the platform accepts it)

A cycle that fails with :class:`PlatformUnavailable` (network, 5xx, 429) is retried as a
whole by tenacity with capped exponential backoff and jitter, never sooner than the
platform's ``Retry-After``; the retry re-registers. A fresh backoff starts with each
cycle, so one bad minute does not slow the next day's recovery.

Any :class:`PlatformRejected` (401 revoked token, deleted workspace, the public URL
refused, a 404 from a tenant guard) is final: ``on_stopped(reason)`` is called and
:meth:`run` raises the error, so the run ends non-zero with its message.

Generations: the "next" platform is recognised by ``delivery_mode`` /
``platform_inbound_secret`` in its answers. We do not probe (contract §13) because the
probe registers in poll mode, which would switch the workspace away from push; the
echo in the first registration answer tells us the same. ``delivery_mode: "push"`` is
sent (a "next" platform would default an external workspace to poll), or the mode
:meth:`PlatformSession.set_delivery_mode` asked for (:mod:`.delivery`, while the tunnel
is down), which also cuts the wait for the next cycle short; should a "current"
platform refuse the field, registration is retried once without it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, NoReturn, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never
from tenacity.wait import wait_base, wait_exponential_jitter

from edge_agent.molecule.client import DELIVERY_PUSH, PlatformClient
from edge_agent.molecule.errors import (
    BadRequest,
    PlatformRejected,
    PlatformUnavailable,
    TokenRejected,
    WorkspaceDeleted,
)
from edge_agent.molecule.models import RegisterResult, Secrets, WorkspaceState

logger = logging.getLogger(__name__)

#: The platform marks a workspace offline when no registration/heartbeat refreshed its
#: liveness key for this long; the heartbeat interval must stay well below it.
LIVENESS_TTL: Final = 180.0

#: Statuses in which the platform routes to our URL: nothing to repair.
_SERVING: Final = frozenset({"online", "degraded"})
#: Statuses someone chose on the platform side; re-registering would undo their choice.
_HANDS_OFF: Final = frozenset({"paused", "hibernated", "hibernating", "removed"})
_LEAVE_AS_IS: Final = _SERVING | _HANDS_OFF

T = TypeVar("T")
Callback = Callable[[], Awaitable[None] | None]
#: Returns the card to register now (its URLs already public), or None to keep ours.
CardSource = Callable[[], Awaitable[Mapping[str, Any] | None]]


class Generation(enum.Enum):
    UNKNOWN = "unknown"
    CURRENT = "current"
    NEXT = "next"


class StopKind(enum.Enum):
    DELETED = "deleted"
    TOKEN_REJECTED = "token_rejected"
    REGISTRATION_REFUSED = "registration_refused"
    REJECTED = "rejected"


@dataclasses.dataclass(frozen=True, slots=True)
class StopReason:
    kind: StopKind
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Load:
    """What the heartbeat reports. ``active_tasks``: requests in flight."""

    active_tasks: int = 0
    error_rate: float = 0.0
    current_task: str = ""
    sample_error: str = ""


@dataclasses.dataclass(slots=True)
class SessionEvents:
    """Callbacks for the composer; each may be a plain function or a coroutine function.

    They run inside the session loop: keep them short. An exception they raise ends
    :meth:`PlatformSession.run` (a broken pause gate must not be ignored).
    """

    on_registered: Callable[[RegisterResult], Awaitable[None] | None] | None = None
    on_paused: Callback | None = None
    on_resumed: Callback | None = None
    on_stopped: Callable[[StopReason], Awaitable[None] | None] | None = None
    on_inbound_secret: Callable[[str], Awaitable[None] | None] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SessionConfig:
    """Timing policy; tests shrink every number."""

    heartbeat_interval: float = 30.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    backoff_jitter: float = 5.0
    delivery_mode: str | None = DELIVERY_PUSH

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_interval < LIVENESS_TTL:
            raise ValueError(f"heartbeat_interval must be in (0, {LIVENESS_TTL}) seconds")
        if not 0 < self.backoff_initial <= self.backoff_max or self.backoff_jitter < 0:
            raise ValueError("backoff must satisfy 0 < initial <= max and jitter >= 0")


class PlatformSession:
    """Keeps one workspace registered, alive and in sync with the platform.

    Args:
        client: the workspace's :class:`PlatformClient` (the caller closes it).
        public_url: the relay URL of this workspace, ``<relay>/a/<workspace-id>/``.
        agent_card: the card to register (see :mod:`edge_agent.molecule.card`).
        events: callbacks (pause gate, inbound secret, stop).
        load: returns the current :class:`Load` for each heartbeat.
        card_source: asked for the card at the start of every cycle (the local A2A
            server's, :mod:`edge_agent.molecule.localcard`); None keeps ``agent_card``.
        config: intervals and backoff.
        clock, sleep: injectable for tests.
    """

    def __init__(
        self,
        client: PlatformClient,
        *,
        public_url: str,
        agent_card: Mapping[str, Any],
        events: SessionEvents | None = None,
        load: Callable[[], Load] = Load,
        card_source: CardSource | None = None,
        config: SessionConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._public_url = public_url
        self._card = dict(agent_card)
        self._events = events or SessionEvents()
        self._load = load
        self._card_source = card_source
        self._config = config or SessionConfig()
        self._clock = clock
        self._sleep = sleep
        self._started = clock()
        self._delivery_mode = self._config.delivery_mode
        self._needs_register = True
        self._paused = False
        self._generation = Generation.UNKNOWN
        self._announced_secret: str | None = None
        self._registered = asyncio.Event()
        self._wake = asyncio.Event()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def generation(self) -> Generation:
        return self._generation

    @property
    def inbound_secret(self) -> str | None:
        return self._client.inbound_secret

    async def wait_registered(self) -> None:
        """Return once the first registration succeeded."""
        await self._registered.wait()

    async def run(self) -> NoReturn:
        """Register, then heartbeat and follow the workspace state until stopped.

        Never returns. Raises a :class:`PlatformRejected` subclass after calling
        ``on_stopped`` when the run must end; cancelling the task stops it cleanly.
        """
        await self._announce_secret(self._client.inbound_secret)
        try:
            while True:
                await self._retrying(self._cycle)
                await self._rest()
        except PlatformRejected as exc:
            reason = _stop_reason(exc)
            logger.error(
                "platform_session_stopped",
                extra={"kind": reason.kind.value, "reason": reason.message},
            )
            await _call(self._events.on_stopped, reason)
            raise

    async def pull_secrets(self) -> Secrets:
        """The secrets bundle, retried like a cycle while the platform is unavailable."""
        return await self._retrying(self._client.pull_secrets)

    def set_public_url(self, public_url: str, agent_card: Mapping[str, Any]) -> None:
        """Use a new public URL (and its card) from the next cycle on: it re-registers.

        For a relay whose WELCOME hands out a different URL after a reconnect.
        """
        if public_url != self._public_url:
            self._public_url, self._card = public_url, dict(agent_card)
            self._needs_register = True

    @property
    def delivery_mode(self) -> str | None:
        """The mode the registrations ask for (None: the field is not sent)."""
        return self._delivery_mode

    def set_delivery_mode(self, mode: str) -> None:
        """Register again at once asking for ``mode`` ("push" or "poll", "next" only);
        ``on_registered`` tells when the platform took it."""
        if mode != self._delivery_mode:
            self._delivery_mode = mode
            self._needs_register = True
            self._wake.set()

    async def update_card(self, agent_card: Mapping[str, Any]) -> None:
        """Push a new card now (one attempt) and use it for later registrations."""
        self._card = dict(agent_card)
        await self._client.update_card(self._card)

    async def _cycle(self) -> None:
        await self._refresh_card()
        if self._client.has_token:
            await self._apply_state(await self._client.get_state())
        if self._needs_register and not self._paused:
            await self._register()
        load = self._load()
        result = await self._client.heartbeat(
            active_tasks=load.active_tasks,
            uptime_seconds=int(self._clock() - self._started),
            error_rate=load.error_rate,
            current_task=load.current_task,
            sample_error=load.sample_error,
        )
        await self._announce_secret(result.inbound_secret)

    async def _rest(self) -> None:
        """Sleep until the next cycle; :meth:`set_delivery_mode` cuts it short."""
        if self._wake.is_set():
            self._wake.clear()
            return
        sleeping = asyncio.ensure_future(self._sleep(self._config.heartbeat_interval))
        waking = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeping, waking}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            waking.cancel()
        self._wake.clear()

    async def _refresh_card(self) -> None:
        if self._card_source is None:
            return
        card = await self._card_source()
        if card is None or card == self._card:
            return
        self._card = dict(card)
        logger.info("agent_card_changed", extra={"card_name": self._card.get("name")})
        if not self._needs_register and not self._paused:
            await self._client.update_card(self._card)

    async def _apply_state(self, state: WorkspaceState) -> None:
        if state.deleted:
            raise WorkspaceDeleted(f"the workspace was deleted on the platform ({state.status})")
        paused = state.paused or state.status == "paused"
        if paused != self._paused:
            self._paused = paused
            self._needs_register = True  # a pause clears the URL: register again after it
            logger.info("platform_%s status=%s", "paused" if paused else "resumed", state.status)
            await _call(self._events.on_paused if paused else self._events.on_resumed)
        if state.status not in _LEAVE_AS_IS and not self._needs_register:
            logger.info("platform_forgot_us status=%s: re-registering", state.status)
            self._needs_register = True

    async def _register(self) -> None:
        result = await self._register_once()
        self._needs_register = False
        seen_next = self._client.next_generation_seen
        self._generation = Generation.NEXT if seen_next else Generation.CURRENT
        if result.delivery_mode not in (None, self._delivery_mode):
            logger.warning(
                "platform_delivery_mode mode=%s: the platform will not push calls to %s",
                result.delivery_mode,
                self._public_url,
            )
        logger.info(
            "platform_registered",
            extra={
                "url": self._public_url,
                "generation": self._generation.value,
                "token_issued": result.token_issued,
            },
        )
        await self._announce_secret(result.inbound_secret)
        self._registered.set()
        await _call(self._events.on_registered, result)

    async def _register_once(self) -> RegisterResult:
        mode = self._delivery_mode
        try:
            return await self._client.register(self._public_url, self._card, delivery_mode=mode)
        except BadRequest:
            if mode is None or self._client.next_generation_seen:
                raise
        # A strict "current" platform may refuse the unknown field: try once without it.
        result = await self._client.register(self._public_url, self._card, delivery_mode=None)
        logger.info("platform_delivery_mode_unsupported: registering without it")
        self._delivery_mode = None
        return result

    async def _announce_secret(self, secret: str | None) -> None:
        if secret is None or secret == self._announced_secret:
            return
        self._announced_secret = secret
        logger.info("platform_inbound_secret_received")
        await _call(self._events.on_inbound_secret, secret)

    async def _retrying(self, fn: Callable[[], Awaitable[T]]) -> T:
        backoff = wait_exponential_jitter(
            multiplier=self._config.backoff_initial,
            max=self._config.backoff_max,
            jitter=self._config.backoff_jitter,
        )
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(PlatformUnavailable),
            wait=_HonourRetryAfter(backoff),
            stop=stop_never,
            sleep=self._sleep,
            before_sleep=self._before_retry,
            reraise=True,
        )
        return await retrying(fn)

    def _before_retry(self, state: RetryCallState) -> None:
        self._needs_register = True
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "platform_retry_scheduled",
            extra={"attempt": state.attempt_number, "in_seconds": round(delay, 1), "error": error},
        )


class _HonourRetryAfter(wait_base):
    """The backoff delay, but never less than the ``Retry-After`` the platform asked for."""

    def __init__(self, backoff: wait_base) -> None:
        self._backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = float(self._backoff(retry_state))
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, PlatformUnavailable) and error.retry_after is not None:
            return max(delay, error.retry_after)
        return delay


def _stop_reason(exc: PlatformRejected) -> StopReason:
    if isinstance(exc, WorkspaceDeleted):
        kind = StopKind.DELETED
    elif isinstance(exc, TokenRejected):
        kind = StopKind.TOKEN_REJECTED
    elif isinstance(exc, BadRequest):
        kind = StopKind.REGISTRATION_REFUSED
    else:
        kind = StopKind.REJECTED
    message = str(exc)
    if kind is StopKind.TOKEN_REJECTED and not message.startswith("register:"):
        # A deleted workspace's tokens are revoked, so its state answers 401 first.
        message = (
            "the platform refused the workspace token: it is not this workspace's, it was "
            f"revoked, or the workspace was deleted ({message})"
        )
    return StopReason(kind, message)


async def _call(callback: Callable[..., Awaitable[None] | None] | None, *args: Any) -> None:
    if callback is None:
        return
    result = callback(*args)
    if inspect.isawaitable(result):
        await result
