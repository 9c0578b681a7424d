"""One connected tunnel session on the agent: HELLO/WELCOME, then streams to the target.

The session is a :class:`tunnel.Session` (the runtime every driver shares); this module
is its agent-side hooks: each stream the relay opens gets a handler from the
:class:`StreamTarget` (bytes to a local server, or an in-process app), unless the agent
is draining or paused, when the stream is refused at once. The session ends when the
WebSocket closes; streams still open then are aborted, which aborts their local
requests, unless the session is resumable and the WebSocket died without a close frame:
then it is parked and may be carried on by the next connection (:mod:`edge_agent.resume`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol, TypeVar

import tunnel
from edge_agent import resume
from edge_agent.errors import (
    AgentError,
    AuthError,
    ConfigError,
    NameTakenError,
    SharingUnsupported,
    TunnelError,
)
from tunnel.resume import Parked, enable
from wire import (
    CallerCredential,
    Connection,
    ErrorCode,
    GoAwayReceived,
    Hello,
    Role,
    StreamKind,
    TunnelRequest,
    Welcome,
)
from wire.payloads import TUNNEL_NAMES
from wire.resume import ResumeOffer

#: Seconds the relay has to answer HELLO with WELCOME before the session is dropped.
WELCOME_TIMEOUT: Final = 10.0

#: Seconds :meth:`TunnelSession.drain` waits for in-flight streams by default.
DRAIN_TIMEOUT: Final = 30.0

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class StreamTarget(Protocol):
    """Where the agent sends each stream: makes the stream's handler."""

    def handler(self, stream: tunnel.Stream) -> tunnel.StreamHandler: ...

    async def aclose(self) -> None: ...


@dataclasses.dataclass(slots=True)
class Hooks:
    """Callbacks; they run on the reader's path, so they must be quick (an exception is
    logged and ignored)."""

    on_ready: Callable[[Welcome], None] | None = None


class TunnelSession(tunnel.SessionHooks):
    """Serves one WebSocket until it closes.

    Args:
        link: an open WebSocket to the relay's connect endpoint.
        target: makes each stream's handler.
        name: the tunnel name asked for in HELLO (None: the relay picks, open mode).
        caller_auth: the credentials public callers must present (see :meth:`update_hello`).
        paused: while True, each new stream is answered with RESET UNAVAILABLE (the
            owner sets :attr:`paused` on the live session; read once per stream).
        kind: what the agent serves (HELLO's ``tunnel``): HTTP, or raw TCP or TLS.
        pool: join the name's pool (HELLO's ``pool``) instead of replacing its session.
        tunnels: extra HTTP tunnels this connection carries (HELLO's ``tunnels``,
            :mod:`edge_agent.shared`); each stream says which by ``stream.tunnel``.
        resume_from: a parked session this connection tries to carry on.
    """

    def __init__(
        self,
        link: tunnel.WsLink,
        target: StreamTarget,
        *,
        name: str | None,
        caller_auth: Sequence[CallerCredential] = (),
        agent: str = "",
        paused: bool = False,
        hooks: Hooks | None = None,
        kind: StreamKind = StreamKind.HTTP,
        pool: bool = False,
        tunnels: Sequence[TunnelRequest] = (),
        resume_from: TunnelSession | None = None,
    ) -> None:
        self.link = link
        self.tunnels = tuple(tunnels)
        self.tunnel = kind
        self.pool = pool
        self.target = target
        self.name = name
        self.agent = agent
        self.paused = paused
        self.hooks = hooks or Hooks()
        self.session = tunnel.Session(Connection(Role.AGENT), self)
        self.welcome: Welcome | None = None
        self.ready_at: float | None = None  # monotonic time of WELCOME
        self.draining = False
        self.closing = False  # abort() was called: never park
        self.resume_from = resume_from
        #: "resumed session after 3.2 s, 7 streams, 412 KiB re-sent" once this
        #: connection carried a parked session on (the console prints it).
        self.resumed_detail: str | None = None
        self.resumable: ResumeOffer | None = None  # the relay's offer (first WELCOME)
        self.secret = ""  # its secret (kept in memory only, never logged)
        self.parked: Parked | None = None  # set while the link is gone
        self._caller_auth = tuple(caller_auth)
        self._sent_auth = self._caller_auth
        #: Made by drain() while it waits; set once no stream is left (or the session ended).
        self._idle: asyncio.Event | None = None
        self._ready = asyncio.Event()
        self._fatal: AgentError | None = None
        self._failure: TunnelError | None = None
        self._drain_task: asyncio.Task[None] | None = None

    @property
    def active_streams(self) -> int:
        return len(self.session.streams)

    @property
    def tunnel_name(self) -> str | None:
        """The name the relay granted (WELCOME); before it, the one HELLO asked for,
        which is None when the token names the tunnel."""
        return self.welcome.name if self.welcome is not None else self.name

    async def run(self, welcome_timeout: float = WELCOME_TIMEOUT) -> None:
        """Serve until the WebSocket closes (normally: returns).

        Raises:
            TunnelError: no WELCOME in time, a protocol error, or the connection failed.
            AuthError / NameTakenError: the relay revoked our token or gave our name away.
        """
        self.link.attach(self.session)
        enable(self.session)  # the HELLO is the first message kept
        self._send_first_hello()
        try:
            await self._wait_welcome(welcome_timeout)
            await self.link.closed
        finally:
            self.link.abort()
            if self._drain_task is not None:
                self._drain_task.cancel()
        if self._fatal is not None:
            raise self._fatal
        if self._failure is not None:
            raise self._failure
        if self.parked is not None:
            raise TunnelError("tunnel connection lost; resuming the session")
        if self.welcome is None:
            raise TunnelError("tunnel closed before WELCOME")

    async def _wait_welcome(self, limit: float) -> None:
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait(
                {ready, self.link.closed}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
        if not self._ready.is_set() and not self.link.closed.done():
            raise TunnelError(f"no WELCOME from the relay within {limit:g} s")

    def abort(self) -> None:
        """Stop now: the WebSocket is cut, so :meth:`run` returns; streams are aborted."""
        self.closing = True
        if self.parked is not None:
            resume.abandon(self, "agent stopped")
        self.link.abort()

    async def drain(self, deadline: float = DRAIN_TIMEOUT) -> None:
        """Send GOAWAY, refuse new streams, wait for in-flight ones,
        then close the WebSocket (which ends :meth:`run`).

        Args:
            deadline: seconds to wait for in-flight streams; later ones are aborted.
        """
        self.draining = True
        self.session.goaway(ErrorCode.NO_ERROR, "agent draining")
        logger.info(
            "tunnel_draining", extra={"agent": self.tunnel_name, "streams": self.active_streams}
        )
        if self.session.streams and not self.session.is_closed:
            if self._idle is None:  # (a second drain, from GOAWAY or a signal, shares it)
                self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), deadline)
        self.session.close(ErrorCode.NO_ERROR, "agent drained", tunnel.WS_NORMAL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.link.closed), 2.0)

    def update_hello(self, caller_auth: Sequence[CallerCredential]) -> None:
        """Replace the caller credentials the relay enforces (re-sends HELLO once up)."""
        self._caller_auth = tuple(caller_auth)
        if self.session.conn.established:
            self._send_hello()

    def _send_hello(self) -> None:
        self._sent_auth = self._caller_auth
        hello = Hello(
            self.name, self._caller_auth, self.agent, self.tunnel, self.pool, self.tunnels
        )
        self.session.send_hello(hello)

    def _send_first_hello(self) -> None:
        """HELLO with ``resume``: asks for resumption, or resumes the parked session."""
        self._sent_auth = self._caller_auth
        old = self.resume_from
        name = old.tunnel_name if old is not None and old.parked is not None else self.name
        ticket = resume.ticket(old)
        hello = Hello(
            name,
            self._caller_auth,
            self.agent,
            self.tunnel,
            self.pool,
            self.tunnels,
            resume=ticket,
        )
        self.session.send_hello(hello)

    # -- tunnel.SessionHooks ------------------------------------------------------------------

    def on_opened(self, session: tunnel.Session, stream: tunnel.Stream) -> None:
        if self.draining or self.paused:
            code = ErrorCode.REFUSED_STREAM if self.draining else ErrorCode.UNAVAILABLE
            stream.reset(code, "agent draining" if self.draining else "agent paused")
            return
        try:
            stream.handler = self.target.handler(stream)
        except Exception as exc:  # a bug in a target must not take the session down
            logger.exception("target_error", extra={"stream_id": stream.sid})
            stream.reset(ErrorCode.TARGET_ERROR, str(exc)[:200])

    def on_stream_closed(self, session: tunnel.Session, stream: tunnel.Stream) -> None:
        if not session.streams and self._idle is not None:
            self._idle.set()

    def on_welcome(self, session: tunnel.Session, welcome: Welcome) -> None:
        if welcome.tunnel is not self.tunnel:  # a relay that ignored HELLO's tunnel
            kind = TUNNEL_NAMES[self.tunnel].upper()
            self._fatal = ConfigError(f"the relay does not serve {kind} tunnels (upgrade it)")
            session.close(ErrorCode.NO_ERROR, "wrong tunnel kind", tunnel.WS_NORMAL)
            return
        if self.tunnels and welcome.tunnels is None:  # a relay that ignored HELLO's tunnels
            self._fatal = SharingUnsupported(
                "the relay cannot carry several tunnels on one connection (upgrade it)"
            )
            session.close(ErrorCode.NO_ERROR, "no shared tunnels", tunnel.WS_NORMAL)
            return
        if not self._resumed(welcome):
            self.welcome = welcome
            self.ready_at = time.monotonic()
        self._ready.set()
        if self._caller_auth != self._sent_auth:  # changed while HELLO was in flight
            self._send_hello()
        logger.info("tunnel_ready", extra={"agent": welcome.name, "urls": list(welcome.urls)})
        if self.hooks.on_ready is not None:
            _call_hook(self.hooks.on_ready, welcome)

    def on_goaway(self, session: tunnel.Session, event: GoAwayReceived) -> None:
        logger.info("goaway_received", extra={"agent": self.tunnel_name, "code": event.code.name})
        if event.code is ErrorCode.UNAUTHORIZED and self.welcome is None:
            self._fatal = AuthError(f"the relay refused this tunnel: {event.reason}")
        elif event.code is ErrorCode.UNAUTHORIZED:
            self._fatal = AuthError(f"the relay revoked this agent's token: {event.reason}")
        elif event.code is ErrorCode.REPLACED:
            # Reconnecting would take the name back, and the other agent would do the same.
            self._fatal = NameTakenError(
                f"another agent took the name {self.tunnel_name!r} ({event.reason}); "
                "this one stops rather than fight it for the name"
            )
        elif event.code not in (ErrorCode.NO_ERROR,):
            reason = f" ({event.reason})" if event.reason else ""
            self._failure = TunnelError(f"relay closed the session: {event.code.name}{reason}")
        # No new streams will come: finish the in-flight ones, then close.
        if not self.draining:
            self._drain_task = asyncio.get_running_loop().create_task(self.drain())

    def _resumed(self, welcome: Welcome) -> bool:
        """Settle resumption on WELCOME: carry the parked session on, or drop it and
        keep this one's offer. True when this connection now carries the old session."""
        old, self.resume_from = self.resume_from, None
        offer = welcome.resume
        if old is not None and offer is not None and offer.resumed:
            if resume.adopt(self, old, welcome):
                return True
        if old is not None:
            resume.abandon(old, "the relay started a fresh session")
        if offer is None or offer.resumed:
            self.session.resend = None  # the relay does not offer it: keep nothing
        else:
            self.resumable, self.secret = offer, offer.secret
        return False

    def on_link_lost(self, session: tunnel.Session) -> bool:
        if not resume.should_park(self):
            return False
        self.parked = Parked.now(session)
        logger.info(
            "tunnel_link_lost",
            extra={"agent": self.tunnel_name, "streams": len(session.streams)},
        )
        return True

    def on_session_closed(self, session: tunnel.Session) -> None:
        if self._idle is not None:
            self._idle.set()
        if self._failure is None and self._fatal is None and not self.draining:
            self._failure = TunnelError("tunnel connection lost")


def _call_hook(hook: Callable[[_T], None], value: _T) -> None:
    """Run an embedder's callback; its bugs are logged, they do not end the session."""
    try:
        hook(value)
    except Exception:
        logger.exception("hook_failed", extra={"hook": getattr(hook, "__name__", repr(hook))})
