"""TunnelClient: keeps one tunnel session up, reconnecting with tenacity.

Reconnect policy (not websockets' built-in loop, which resets its backoff on every
successful connect and so hammers a relay that accepts and then closes at once):

* Network errors, timeouts, 5xx and 429 (:class:`RelayUnavailable`), and sessions that
  end before ``healthy_after`` seconds (:class:`SessionEndedEarly`) are retried forever
  with capped exponential backoff plus jitter.
* The backoff resets only after a session stayed up ``healthy_after`` seconds. Even then
  the next connect waits a random 0..``restart_delay`` seconds, so a thousand agents do
  not reconnect in the same instant after a relay restart.
* Everything else is fatal and raised out of :meth:`TunnelClient.run`: AuthError (401/403
  or a revoked token), ConfigError/TlsError, NameTakenError.
* A session the relay lets resume is *parked* when its WebSocket dies without a close
  frame (:mod:`edge_agent.resume`): the next connect comes at once, then at short
  jittered intervals (0.1-2 s) for as long as the relay's grace, and carries it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Final

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
    wait_exponential_jitter,
)

import tunnel
from edge_agent import resume
from edge_agent.agent_key import new_key
from edge_agent.connect import ConnectOptions, check_name, open_tunnel
from edge_agent.errors import ConfigError, NotARelay, SessionEndedEarly, TunnelError
from edge_agent.relays import RelayRing
from edge_agent.session import DRAIN_TIMEOUT, WELCOME_TIMEOUT, Hooks, StreamTarget, TunnelSession
from wire import MAX_AGENT_INFO, MAX_CALLER_AUTH, CallerCredential, StreamKind, Welcome

#: A session must last this long before the reconnect backoff starts over.
HEALTHY_AFTER: Final = 30.0

#: With several relays (a cluster), the random delay before reconnecting after a
#: session ended is at most this: the session moves to another node, which is up, and
#: the dead node's agents still arrive spread over these seconds.
FAILOVER_SPREAD: Final = 3.0

#: Seconds a session must have lasted for the short FAILOVER_SPREAD delay (shorter ones
#: keep the growing backoff: a relay that accepts and drops at once is not hammered).
FAILOVER_MIN_SESSION: Final = 1.0

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Backoff parameters, in seconds (tests pass small ones).

    The n-th consecutive failed attempt waits ``min(initial * 2**(n-1) + U(0, jitter),
    max_delay)``.
    """

    initial: float = 1.0
    max_delay: float = 60.0
    jitter: float = 5.0
    healthy_after: float = HEALTHY_AFTER
    #: Random 0..this before reconnecting after a healthy session. 10 s spreads a fleet
    #: that a relay restart dropped to about a tenth per second; with 5 s, the agents
    #: whose pause ended while the relay was still down retried in a cluster on top of
    #: the others, and the busiest second held up to 31 % of them (bench relay-restart).
    restart_delay: float = 10.0
    welcome_timeout: float = WELCOME_TIMEOUT


class TunnelClient:
    """Serves ``target`` through the relay until drained or stopped.

    Args:
        relay_url: the relay's base URL (``https://relay.example``).
        token: relay token sent as ``Authorization: Bearer``; None in open mode.
        name: tunnel name (a DNS label); None lets the relay choose (open mode only).
        target: makes each stream's handler (where each request goes).
        policy: reconnect backoff and timeouts.
        options: transport settings (TLS, proxy, WebSocket timeouts).
        caller_auth: credentials the relay demands from public callers (empty: none).
        on_ready: called with every WELCOME (after each (re)connect).
        on_resumed: called before ``on_ready`` when the connection carried the parked
            session on, with "resumed session after 3.2 s, 7 streams, 412 KiB re-sent".
        on_retry: called with the delay and the error (None: a session ended) each time
            a reconnect is scheduled.
        tunnel: what ``target`` serves: HTTP exchanges (the default), or raw TCP or
            TLS connections (``edge-agent tcp``/``tls``).
        pool: join the name's pool (``--pool``): the relay spreads requests over every
            agent of the pool, instead of this one replacing the agent that holds it.
    """

    def __init__(
        self,
        relay_url: str,
        token: str | None,
        name: str | None,
        target: StreamTarget,
        *,
        policy: ReconnectPolicy = ReconnectPolicy(),
        options: ConnectOptions | None = None,
        caller_auth: Sequence[CallerCredential] = (),
        agent: str = "edge-agent",
        on_ready: Callable[[Welcome], None] | None = None,
        on_resumed: Callable[[str], None] | None = None,
        on_retry: Callable[[float, BaseException | None], None] | None = None,
        tunnel: StreamKind = StreamKind.HTTP,
        pool: bool = False,
    ) -> None:
        check_name(name)
        self.tunnel = tunnel
        self.pool = pool
        #: Relays to try in turn (``--relay`` repeated, or one name with several
        #: addresses: the nodes of a relay cluster).
        self.relays = RelayRing(relay_url)
        self._moved = False
        self.name = name
        self.target = target
        self.policy = policy
        self.options = options or ConnectOptions()
        if self.options.agent_key is None:  # a name taken in open mode stays this client's
            self.options = dataclasses.replace(self.options, agent_key=new_key())
        self.agent = agent
        self.hooks = Hooks(self._ready)
        self._on_ready = on_ready
        self._on_resumed = on_resumed
        self._on_retry = on_retry
        self._token = token
        self._caller_auth = _checked_auth(caller_auth, tunnel)
        if len(agent) > MAX_AGENT_INFO:
            raise ConfigError(f"agent text over {MAX_AGENT_INFO} characters")
        self._paused = False
        self._stop = asyncio.Event()
        self._session: TunnelSession | None = None
        self._parked: TunnelSession | None = None  # a session waiting to be resumed
        self.welcome: Welcome | None = None
        self.attempts = 0  # consecutive failed attempts behind the current backoff
        self.retry_at: float | None = None  # time.monotonic() of the next connect, if waiting
        self.draining = False  # drain() was called

    # -- state for embedders -----------------------------------------------------------

    @property
    def active_streams(self) -> int:
        """Requests in flight right now."""
        return self._session.active_streams if self._session is not None else 0

    @property
    def connected(self) -> bool:
        """A session is up (WELCOME received and the WebSocket still open)."""
        return self._session is not None and self._session.welcome is not None

    @property
    def public_urls(self) -> tuple[str, ...]:
        """The URLs of the last WELCOME (kept across reconnects; empty before the first)."""
        return self.welcome.urls if self.welcome is not None else ()

    @property
    def pool_size(self) -> int:
        """Sessions in this agent's pool when it last joined, with it (the WELCOME's
        count; 0: not in a pool)."""
        return self.welcome.pool if self.welcome is not None else 0

    @property
    def latency(self) -> float | None:
        """Seconds of the live link's last ping -> pong round trip (None: none yet)."""
        return self._session.link.rtt if self._session is not None else None

    @property
    def state(self) -> str:
        """``draining``, ``online``, ``reconnecting`` (a backoff wait) or ``connecting``."""
        if self.draining:
            return "draining"
        if self.connected:
            return "online"
        if self.retry_at is not None and self.retry_at > time.monotonic():
            return "reconnecting"
        return "connecting"

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        """While paused, new streams are RESET UNAVAILABLE (relay: 503); in-flight finish."""
        self._paused = paused
        if self._session is not None:
            self._session.paused = paused

    def set_caller_auth(self, caller_auth: Sequence[CallerCredential]) -> None:
        """Replace the caller credentials; re-sends HELLO in the live session, if any.

        Raises ConfigError for more than :data:`wire.MAX_CALLER_AUTH` credentials, or
        any on a TCP or TLS tunnel (the relay cannot check them there).
        """
        self._caller_auth = _checked_auth(caller_auth, self.tunnel)
        if self._session is not None:
            self._session.update_hello(self._caller_auth)

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and serve until :meth:`drain` or :meth:`stop`; then return.

        Raises AuthError, ConfigError, TlsError or NameTakenError (never retried).
        """
        self._stop.clear()
        while not self._stop.is_set():
            await self._serve_with_retries()
            if self._stop.is_set():
                break
            spread = self.policy.restart_delay
            if self.relays.several:  # the next node is up: no restart to wait out
                spread = min(spread, FAILOVER_SPREAD)
            delay = random.uniform(0, spread)
            self._log_reconnect(1, delay, None)
            await self._sleep(delay)

    async def drain(self, deadline: float = DRAIN_TIMEOUT) -> None:
        """Stop taking streams (GOAWAY; late ones get REFUSED_STREAM), let in-flight ones
        finish for up to ``deadline`` seconds, then close; :meth:`run` returns."""
        self._stop.set()
        self.draining = True
        self._abandon("agent draining")
        session = self._session
        if session is not None:
            await session.drain(deadline)

    def stop(self) -> None:
        """Stop at once: in-flight streams are cancelled; :meth:`run` returns."""
        self._stop.set()
        self._abandon("agent stopped")
        if self._session is not None:
            self._session.abort()

    async def _serve_with_retries(self) -> None:
        backoff = wait_exponential_jitter(
            multiplier=self.policy.initial, max=self.policy.max_delay, jitter=self.policy.jitter
        )

        def wait(state: RetryCallState) -> float:
            if self._parked is not None and resume.expired(self._parked):
                self._abandon("the relay's grace is over")
            if self._parked is not None:  # a session to resume: come back quickly
                return resume.resume_wait(state.attempt_number)
            delay = backoff(state)
            if self._moved:  # a session of several seconds ended: its node likely died
                self._moved = False
                delay = min(delay, random.uniform(0, FAILOVER_SPREAD))
            return delay

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TunnelError),
            wait=wait,
            stop=stop_never,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._serve_once()

    async def _serve_once(self) -> None:
        try:
            link = await self._connect()
        except NotARelay as exc:
            if self.welcome is None and not self.relays.several:  # a retry cannot fix it
                raise ConfigError(f"{exc}; {exc.fix}") from exc
            self._next_relay()
            raise
        except (OSError, TimeoutError, TunnelError):
            if self.relays.several:  # a dead node of a cluster: the next one serves the name
                self._abandon("the relay that held the session is unreachable")
            if self._parked is None:  # (one relay: it holds the parked session, stay)
                self._next_relay()
            raise
        if link is None:
            return  # stopped while connecting
        if self._parked is not None and resume.expired(self._parked):
            self._abandon("the relay's grace is over")
        session = self._new_session(link)
        self._session = session
        logger.info("tunnel_connected", extra={"agent": self.name, "relay": self.relay_url})
        failure: TunnelError | None = None
        try:
            await session.run(self.policy.welcome_timeout)
        except TunnelError as exc:
            failure = exc
        finally:
            self._session = None
        self._parked = session if session.parked is not None else None
        up = time.monotonic() - session.ready_at if session.ready_at is not None else 0.0
        fields = {"agent": session.tunnel_name, "uptime": round(up, 3)}
        logger.info(
            "tunnel_disconnected", extra=fields | ({"error": str(failure)} if failure else {})
        )
        if self._stop.is_set():
            self._abandon("agent stopped")
            return
        if self._parked is not None and failure is not None:
            raise failure  # reconnect at once (see resume_wait), to the relay that holds it
        self._next_relay()  # the node may have died: reconnect through the next
        if up < self.policy.healthy_after:  # keep the backoff growing
            # Another node is up: the first retry there waits FAILOVER_SPREAD at most,
            # after a session that lasted (one that drops at once still backs off).
            self._moved = self.relays.several and up >= FAILOVER_MIN_SESSION
            raise failure or SessionEndedEarly(f"session ended after {up:.1f} s")
        self.attempts = 0  # healthy: run() starts a fresh backoff

    def _abandon(self, reason: str) -> None:
        parked, self._parked = self._parked, None
        if parked is not None:
            resume.abandon(parked, reason)

    def _new_session(self, link: tunnel.WsLink) -> TunnelSession:
        """The session for a new connection (:mod:`edge_agent.shared` adds its tunnels)."""
        return TunnelSession(
            link,
            self.target,
            name=self.name,
            caller_auth=self._caller_auth,
            agent=self.agent,
            paused=self._paused,
            hooks=self.hooks,
            kind=self.tunnel,
            pool=self.pool,
            resume_from=self._parked,
        )

    @property
    def relay_url(self) -> str:
        """The relay this client connects to now (the next one after a failure)."""
        return self.relays.url

    def _next_relay(self) -> None:
        if self.relays.advance():
            logger.info("relay_switched", extra={"agent": self.name, "relay": self.relay_url})

    async def _connect(self) -> tunnel.WsLink | None:
        """Open the WebSocket, or return None if :meth:`stop`/:meth:`drain` came first."""
        if self._stop.is_set():
            return None
        address = await self.relays.address()
        opening = asyncio.ensure_future(
            open_tunnel(self.relay_url, self._token, self.name, self.options, address)
        )
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not opening.done():
            opening.cancel()
            with contextlib.suppress(BaseException):
                link = await opening
                link.abort()
            return None
        return opening.result()

    async def _sleep(self, seconds: float) -> None:
        """Backoff sleep that :meth:`stop`/:meth:`drain` cut short."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _before_sleep(self, state: RetryCallState) -> None:
        self.attempts = state.attempt_number
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        error = state.outcome.exception() if state.outcome is not None else None
        self._log_reconnect(state.attempt_number, delay, error)

    def _log_reconnect(self, attempt: int, delay: float, error: BaseException | None) -> None:
        self.retry_at = time.monotonic() + delay
        logger.info(
            "reconnect_scheduled",
            extra={"agent": self.name, "attempt": attempt, "delay": round(delay, 3)}
            | ({"error": str(error)} if error is not None else {}),
        )
        if self._on_retry is not None:
            self._on_retry(delay, error)

    def _ready(self, welcome: Welcome) -> None:
        self.welcome = welcome
        session = self._session
        detail = session.resumed_detail if session is not None else None
        if detail is not None and self._on_resumed is not None:
            self._on_resumed(detail)
        if self._on_ready is not None:
            self._on_ready(welcome)


def _checked_auth(
    caller_auth: Sequence[CallerCredential], kind: StreamKind
) -> tuple[CallerCredential, ...]:
    if len(caller_auth) > MAX_CALLER_AUTH:
        raise ConfigError(f"at most {MAX_CALLER_AUTH} caller credentials are allowed")
    if caller_auth and kind is not StreamKind.HTTP:
        raise ConfigError("caller auth works on HTTP tunnels only (the relay cannot check it here)")
    return tuple(caller_auth)
