"""EdgeAgent: a Molecule remote workspace served from behind NAT, run from asyncio.

Theory of operation
-------------------
One :class:`EdgeAgent` joins four parts that already exist on their own::

    TunnelClient (relay)  --requests-->  InboundSecretTarget -> DedupTarget -> local target
    PlatformSession (platform): register, heartbeat, state, secrets
    ChildSupervisor (optional): the agent's own process, with the secrets in its env

:meth:`EdgeAgent.run` goes through these steps:

1. The tunnel connects to the relay under the name ``workspace_id``; its first WELCOME
   gives the public URL, which must be ``<relay public url>/a/<workspace-id>/``.
2. The platform session registers that URL with an agent card whose interfaces point
   at it, then heartbeats every ``heartbeat_interval`` seconds (active tasks = streams in
   flight, or messages the de-duplication still works on if that is more).
   A "next" platform gets the calls by poll delivery while the tunnel is down for more
   than ``poll_after`` seconds (:mod:`edge_agent.molecule.delivery`): they go through the
   same de-duplication to the local target, their answers back through the platform.
3. Once registered, the requested plugins are installed (:mod:`edge_agent.molecule.plugins`);
   then, with a command, the secrets are pulled and the command starts with them in
   its environment; it is restarted with backoff if it crashes.

Until the first registration the tunnel answers every request 503 (the relay's
``agent_unavailable``): in the "next" generation the inbound secret arrives with that
answer, and no request may slip through before the agent can check it. The workspace
paused on the platform does the same until it is resumed.

The inbound-secret check is the outermost wrapper, so an unauthenticated request can
never be answered from the de-duplication cache. The relay is told the secret's hash
(caller auth in HELLO, re-sent when the secret changes) and refuses such requests
before they reach this machine; the agent checks again. A WebSocket upgrade passes
the same check (without the secret: 401), skips the de-duplication and, for a URL
target, is piped to it as bytes (:mod:`edge_agent.upgrade`).

How a run ends
--------------
* :meth:`drain` (first Ctrl-C) or :meth:`stop` (second): the tunnel stops taking
  requests (drain lets those in flight finish), then the command is stopped;
  :meth:`run` returns 0.
* The command exits for good (its restart policy says so): the tunnel drains and
  :meth:`run` returns the command's exit code (128 + N for a signal N, as shells do).
* The platform refuses the workspace (deleted, token revoked, URL refused): the tunnel
  stops at once, the command is stopped, and :meth:`run` raises the
  :class:`~edge_agent.molecule.errors.PlatformRejected` subclass
  (:class:`~edge_agent.molecule.errors.WorkspaceDeleted` when the workspace was
  deleted, :class:`~edge_agent.molecule.errors.TokenRejected` when only the token was
  revoked, :class:`~edge_agent.molecule.errors.BadRequest` when the URL was refused).
* The relay refuses the relay token (:class:`~edge_agent.errors.AuthError`), the
  settings are wrong (:class:`~edge_agent.errors.ConfigError`), the command cannot be
  started (:class:`~edge_agent.molecule.errors.ChildStartError`) or keeps crashing
  (:class:`~edge_agent.molecule.errors.ChildCrashLoop`, with its exit code), or a
  requested plugin cannot be installed (a
  :class:`~edge_agent.molecule.errors.PluginError`, or the platform's refusal of the
  download): raised as they are.

Secrets, tokens and the inbound secret are never logged or passed to hooks (only the
names of secrets are).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, cast

from edge_agent import __version__, caller_auth
from edge_agent.asgi import AsgiTarget
from edge_agent.asgi_lifespan import AsgiApp
from edge_agent.bridge import ObjectBridge
from edge_agent.connect import ConnectOptions, check_name
from edge_agent.errors import ConfigError
from edge_agent.inspect.streamtap import TappedTarget
from edge_agent.molecule.calls import CallResult
from edge_agent.molecule.card import build_agent_card, load_agent_card, rewrite_card_urls
from edge_agent.molecule.child import ChildPolicy, ChildSupervisor
from edge_agent.molecule.client import CALL_TIMEOUT, PlatformClient
from edge_agent.molecule.dedup import DedupLimits, DedupTarget
from edge_agent.molecule.delivery import POLL_AFTER, DeliverySwitch
from edge_agent.molecule.errors import (
    MoleculeError,
    NotFound,
    PlatformRejected,
    TokenRejected,
    WorkspaceDeleted,
)
from edge_agent.molecule.inbound import InboundSecretTarget
from edge_agent.molecule.localcard import LocalCard
from edge_agent.molecule.models import DiscoveredPeer, Peer, RegisterResult
from edge_agent.molecule.plugins import (
    InstalledPlugin,
    PluginOptions,
    PluginRequest,
    install_plugin,
)
from edge_agent.molecule.poll import PollDelivery
from edge_agent.molecule.session import (
    Generation,
    Load,
    PlatformSession,
    SessionConfig,
    SessionEvents,
)
from edge_agent.molecule.tokens import TokenStore
from edge_agent.port import ExchangeRecord
from edge_agent.session import DRAIN_TIMEOUT
from edge_agent.target import HttpTarget, Target
from edge_agent.tls import TlsOptions
from edge_agent.tunnel import ReconnectPolicy, TunnelClient
from edge_agent.upgrade import UpgradingHttpTarget
from wire import CallerCredential, Welcome

logger = logging.getLogger(__name__)

#: The platform's default cadence (SDK, runtime and CLI all use 30 s).
HEARTBEAT_INTERVAL: Final = 30.0

#: A card file is loaded once as a template against this base; every public URL the
#: relay hands out is then put in its place (paths below the base are kept).
_CARD_TEMPLATE_BASE: Final = "http://card-template.invalid/"

#: Statuses of the workspace row that mean it is gone.
_GONE_STATUSES: Final = frozenset({"removed"})


@dataclasses.dataclass(slots=True)
class AgentHooks:
    """Optional callbacks for an embedder's output; plain functions, called on the loop.

    Keep them short and non-blocking. None of them ever receives a secret value.
    """

    #: Each new public URL (the first WELCOME, and a relay that moved us).
    on_public_url: Callable[[str], None] | None = None
    #: Every successful (re-)registration with the platform.
    on_registered: Callable[[RegisterResult], None] | None = None
    on_paused: Callable[[], None] | None = None
    on_resumed: Callable[[], None] | None = None
    #: One call per finished request (as ``edge-agent http`` prints them).
    on_request: Callable[[ExchangeRecord], None] | None = None
    #: The command is about to start: its argv and the names of the secrets it gets.
    on_command: Callable[[Sequence[str], Sequence[str]], None] | None = None
    #: A plugin was installed (before the command starts).
    on_plugin: Callable[[InstalledPlugin], None] | None = None
    #: The platform took a delivery mode: "poll" (the tunnel is down) or "push" again.
    on_delivery_mode: Callable[[str], None] | None = None


class EdgeAgent:
    """A Molecule remote workspace whose public URL is on an edge relay.

    Use it as an async context manager and call :meth:`run`::

        async with EdgeAgent(platform_url=..., workspace_id=..., relay_url=...,
                             relay_token=..., target=app) as agent:
            code = await agent.run()

    Args:
        platform_url: the Molecule platform's base URL.
        workspace_id: the workspace UUID; also the tunnel name on the relay.
        relay_url: the relay's base URL (where the tunnel connects).
        relay_token: the relay token issued for the name ``workspace_id``.
        target: where requests go: a :class:`~edge_agent.target.Target`, an ASGI app,
            or a port / ``http(s)://`` URL of a local server. The agent owns it and
            closes it on exit.
        command: an optional command (argv) to run with the workspace's secrets in its
            environment (typically the local server behind ``target``).
        agent_card: the card to register: a mapping or a JSON file path; its interface
            URLs are moved onto the public URL. None: the card the local server
            publishes at ``/.well-known/agent-card.json`` (asked every heartbeat, pushed
            when it changes), and a minimal built card while it publishes none.
        agent_name: the built card's name (default ``edge agent <id prefix>``).
        platform_token: the workspace token, if not cached yet (it is cached then).
        token_dir: where tokens are cached (default ``~/.molecule``, as the SDK).
        org_id: ``X-Molecule-Org-Id`` for a multi-tenant platform.
        heartbeat_interval: seconds between heartbeats and state polls (30).
        caller_auth: extra credentials the relay demands from public callers. In the
            "current" generation the platform presents none, so setting any keeps the
            platform out; in "next" the inbound secret is always accepted too.
        relay_tls: TLS options towards the relay (CA file, insecure, pin).
        ping_interval, ping_timeout: the tunnel's keepalive (None: its defaults).
        poll_after: seconds the tunnel must be down before a "next" platform is asked
            for poll delivery (60).
        plugins, plugin_options: plugins to install from the platform once registered,
            before the command starts; a plugin that fails to install ends the run.
        platform_verify: TLS verification towards the platform (an ``SSLContext`` for
            a private CA, ``False`` for none).
        reconnect, session_config, child_policy, dedup_limits: policies of the parts.
        hooks: callbacks for output (:class:`AgentHooks`).
        pool: join the workspace name's pool on the relay (several agents serve it)
            instead of replacing the agent that holds it.

    Raises:
        ConfigError: a setting is invalid (checked here, before any I/O).
    """

    def __init__(
        self,
        *,
        platform_url: str,
        workspace_id: str,
        relay_url: str,
        relay_token: str | None,
        target: Target | AsgiApp | str,
        command: Sequence[str] = (),
        agent_card: Mapping[str, Any] | Path | str | None = None,
        agent_name: str | None = None,
        platform_token: str | None = None,
        token_dir: Path | str | None = None,
        org_id: str | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        caller_auth: Sequence[CallerCredential] = (),
        relay_tls: TlsOptions | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        poll_after: float = POLL_AFTER,
        plugins: Sequence[PluginRequest] = (),
        plugin_options: PluginOptions | None = None,
        platform_verify: ssl.SSLContext | bool = True,
        reconnect: ReconnectPolicy | None = None,
        session_config: SessionConfig | None = None,
        child_policy: ChildPolicy | None = None,
        dedup_limits: DedupLimits | None = None,
        hooks: AgentHooks | None = None,
        pool: bool = False,
    ) -> None:
        check_name(workspace_id)  # the tunnel name: a lowercase DNS label
        self.workspace_id = workspace_id
        self.platform_url = platform_url
        self.relay_url = relay_url
        self.command = list(command)
        self.hooks = hooks or AgentHooks()
        self._relay_token = relay_token
        self._platform_token = platform_token
        self._token_dir = token_dir
        self._org_id = org_id
        self._platform_verify = platform_verify
        self._card_source = agent_card
        self._agent_name = agent_name or f"edge agent {workspace_id[:8]}"
        self._user_auth = tuple(caller_auth)
        self._session_config = session_config or _session_config(heartbeat_interval)
        self._child_policy = child_policy
        self._plugins = tuple(plugins)
        if not poll_after > 0:
            raise ConfigError(f"poll_after must be more than 0 seconds, got {poll_after!r}")
        self._poll_after = poll_after
        self._switch: DeliverySwitch | None = None
        self._plugin_options = plugin_options or PluginOptions()
        self._local = _as_target(target)
        self._local_card = _local_card(self._local) if agent_card is None else None
        self._dedup = DedupTarget(_with_upgrades(self._local), dedup_limits)
        self._inbound = InboundSecretTarget(self._dedup)
        self._tunnel = TunnelClient(
            relay_url,
            relay_token,
            workspace_id,
            TappedTarget(ObjectBridge(self._inbound, on_done=self.hooks.on_request)),
            policy=reconnect or ReconnectPolicy(),
            options=_connect_options(relay_tls, ping_interval, ping_timeout),
            caller_auth=self._user_auth,
            agent=f"edge-agent/{__version__}",
            on_ready=self._on_welcome,
            pool=pool,
        )
        self._client: PlatformClient | None = None
        self._session: PlatformSession | None = None
        self._child: ChildSupervisor | None = None
        self._card_template: Mapping[str, Any] | None = None
        self._public_url: str | None = None
        self._welcomed = asyncio.Event()
        self._registered_once = False
        self._platform_paused = False
        self._fatal: ConfigError | None = None  # found in a tunnel callback
        #: Given the secrets' values, and only so that they can be masked where the agent
        #: shows traffic (the inspector); never an output hook.
        self.mask_secrets: Callable[[Iterable[str]], None] | None = None

    # -- state for embedders -----------------------------------------------------------

    @property
    def public_url(self) -> str | None:
        """``<relay public url>/a/<workspace-id>/`` once the relay welcomed us."""
        return self._public_url

    @property
    def connected(self) -> bool:
        """The tunnel session to the relay is up."""
        return self._tunnel.connected

    @property
    def registered(self) -> bool:
        """The platform accepted a registration at least once in this run."""
        return self._registered_once

    @property
    def paused(self) -> bool:
        """Paused on the platform (requests are answered 503 by the relay)."""
        return self._platform_paused

    @property
    def generation(self) -> Generation:
        """The platform generation, known after the first registration."""
        return self._session.generation if self._session is not None else Generation.UNKNOWN

    @property
    def token_path(self) -> Path:
        """Where the workspace token is cached."""
        return TokenStore(self.workspace_id, self._token_dir).token_path

    @property
    def pool_size(self) -> int:
        """Agents in this one's pool when it joined, with it (0: not in a pool)."""
        return self._tunnel.pool_size

    @property
    def active_tasks(self) -> int:
        """What the heartbeat reports: requests in flight, or messages still being
        worked on for a caller that left (the platform re-sends those), if more."""
        return max(self._tunnel.active_streams, self._dedup.in_progress)

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> EdgeAgent:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Read the token cache and the card file, start an ASGI app's lifespan.

        Raises:
            ConfigError: bad platform URL, token, workspace id or card file.
            TokenStoreError: the token cache cannot be read or written safely.
        """
        if self._client is not None:
            return
        self._card_template = self._load_card_template()
        try:
            store = TokenStore(self.workspace_id, self._token_dir)
            self._client = PlatformClient(
                self.platform_url,
                self.workspace_id,
                token_store=store,
                token=self._platform_token,
                org_id=self._org_id,
                verify=self._platform_verify,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if isinstance(self._local, AsgiTarget):
            await self._local.start()

    async def aclose(self) -> None:
        """Close the target chain (an ASGI app's lifespan ends) and the platform client."""
        await self._inbound.aclose()
        if self._local_card is not None:
            await self._local_card.aclose()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run(self) -> int:
        """Serve until drained or stopped, or until the command exits for good.

        Returns 0 after :meth:`drain`/:meth:`stop`, else the command's exit code.
        Raises the fatal errors listed in the module docstring.
        """
        client = self._require_client()
        tasks: list[asyncio.Task[Any]] = []
        try:
            self._install_inbound_secret(client.inbound_secret)
            self._tunnel.set_paused(True)  # until registered (see the module docstring)
            tunnel = _spawn(tasks, self._tunnel.run(), "tunnel")
            if not await self._until_welcomed(tunnel):
                return 0
            session = self._start_session(client)
            session_task = _spawn(tasks, session.run(), "platform-session")
            switch = _spawn(tasks, self._start_switch(client, session).run(), "delivery")
            switch.add_done_callback(_log_failure)
            after = self.command or self._plugins
            child = _spawn(tasks, self._after_registration(session), "command") if after else None
            return await self._supervise(tunnel, session_task, child)
        finally:
            await self._shutdown(tasks)

    async def drain(self, deadline: float = DRAIN_TIMEOUT) -> None:
        """Stop taking requests, let those in flight finish (up to ``deadline`` s), then
        stop the command; :meth:`run` returns 0."""
        await self._tunnel.drain(deadline)

    def stop(self) -> None:
        """Stop now: requests in flight are cancelled; :meth:`run` returns 0."""
        self._tunnel.stop()

    # -- platform calls for embedders ------------------------------------------------------

    async def peers(self, query: str | None = None) -> list[Peer]:
        """The workspaces this one may talk to (siblings, children, parent)."""
        return await self._require_client().get_peers(query)

    async def discover(self, workspace_id: str) -> DiscoveredPeer:
        """The URL of another workspace (hierarchy rules apply)."""
        return await self._require_client().discover(workspace_id)

    async def call(
        self,
        peer_id: str,
        message: str | Mapping[str, Any],
        *,
        stream: bool = False,
        reply_timeout: float = CALL_TIMEOUT,
    ) -> CallResult:
        """Send ``message`` (a text or an A2A message object) to another workspace
        through the platform's proxy, as this workspace; its answer.

        Raises the :class:`~edge_agent.molecule.errors.PeerCallError` subclasses for
        the platform's refusals (queued, denied, not found, unreachable, timed out, an
        error answer); see :meth:`~edge_agent.molecule.client.PlatformClient.call_peer`.
        """
        client = self._require_client()
        return await client.call_peer(peer_id, message, stream=stream, reply_timeout=reply_timeout)

    async def update_card(self, agent_card: Mapping[str, Any]) -> None:
        """Push a new card now (its URLs moved onto the public URL); it is also used for
        later registrations of this run."""
        if self._session is None or self._public_url is None:
            raise RuntimeError("update_card() needs a running agent (call run() first)")
        self._card_template = dict(agent_card)
        await self._session.update_card(self._card_for(self._public_url))

    # -- running ---------------------------------------------------------------------------

    async def _until_welcomed(self, tunnel: asyncio.Task[None]) -> bool:
        """True once the relay welcomed us; False if the tunnel stopped first (drained);
        raises the tunnel's fatal error."""
        welcomed = asyncio.ensure_future(self._welcomed.wait())
        try:
            await asyncio.wait({tunnel, welcomed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            welcomed.cancel()
        if self._welcomed.is_set() and not tunnel.done():
            return True
        self._tunnel_ended(tunnel)
        return False

    def _start_session(self, client: PlatformClient) -> PlatformSession:
        assert self._public_url is not None
        events = SessionEvents(
            on_registered=self._on_registered,
            on_paused=lambda: self._on_platform_pause(True),
            on_resumed=lambda: self._on_platform_pause(False),
            on_inbound_secret=self._on_inbound_secret,
        )
        self._session = PlatformSession(
            client,
            public_url=self._public_url,
            agent_card=self._card_for(self._public_url),
            events=events,
            load=lambda: Load(active_tasks=self.active_tasks),
            card_source=self._local_card_now if self._local_card is not None else None,
            config=self._session_config,
        )
        return self._session

    def _start_switch(self, client: PlatformClient, session: PlatformSession) -> DeliverySwitch:
        poller = PollDelivery(client, self._dedup)
        self._switch = DeliverySwitch(
            session,
            poller,
            lambda: self._tunnel.connected,
            poll_after=self._poll_after,
            on_mode=self.hooks.on_delivery_mode,
        )
        return self._switch

    async def _supervise(
        self,
        tunnel: asyncio.Task[None],
        session: asyncio.Task[Any],
        child: asyncio.Task[int] | None,
    ) -> int:
        watched: set[asyncio.Task[Any]] = {tunnel, session} | ({child} if child else set())
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if session in done:
            self._tunnel.stop()  # the platform dropped us: serve nothing more
            raise await self._explain(session.exception())
        if child is not None and child in done:
            code = child.result()  # raises ChildStartError / a platform refusal
            logger.info("command_exited", extra={"code": code})
            await self._tunnel.drain()
            return _exit_status(code)
        self._tunnel_ended(tunnel)
        return 0

    def _tunnel_ended(self, tunnel: asyncio.Task[None]) -> None:
        """The tunnel stopped: raise its fatal error, or one of ours, if any."""
        tunnel.result()
        if self._fatal is not None:
            raise self._fatal

    async def _after_registration(self, session: PlatformSession) -> int:
        await session.wait_registered()  # a first start may get its token from register
        await self._install_plugins()
        if not self.command:
            await asyncio.Event().wait()  # nothing to supervise: the run ends elsewhere
        return await self._run_command(session)

    async def _install_plugins(self) -> None:
        client = self._require_client()
        folder = TokenStore(self.workspace_id, self._token_dir).directory
        for request in self._plugins:
            installed = await install_plugin(client, folder, request, self._plugin_options)
            if self.hooks.on_plugin is not None:
                self.hooks.on_plugin(installed)

    async def _run_command(self, session: PlatformSession) -> int:
        secrets = await session.pull_secrets()
        if self.mask_secrets is not None:
            self.mask_secrets(secrets.values())
        self._child = ChildSupervisor(
            self.command,
            secrets=secrets,
            policy=self._child_policy,
            refresh=session.pull_secrets,  # used when the policy sets secrets_refresh
        )
        if self.hooks.on_command is not None:
            self.hooks.on_command(list(self.command), sorted(secrets))
        return await self._child.run()

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        self._tunnel.stop()
        if self._child is not None:
            await self._child.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _explain(self, error: BaseException | None) -> BaseException:
        """The session's fatal error; a 401 after a deletion becomes WorkspaceDeleted.

        A deleted workspace's tokens are revoked, so the state poll cannot tell the two
        apart; the workspace row can.
        """
        if not isinstance(error, TokenRejected) or str(error).startswith("register:"):
            return error or RuntimeError("the platform session ended")
        client = self._require_client()
        try:
            status = await client.get_workspace_status()
        except (NotFound, WorkspaceDeleted):
            status = "removed"
        except PlatformRejected as exc:
            status = "removed" if exc.status == 410 else "unknown"
        except MoleculeError:
            status = "unknown"
        if status in _GONE_STATUSES:
            return WorkspaceDeleted(f"workspace {self.workspace_id} was deleted on the platform")
        return TokenRejected(
            f"the platform refused the workspace token of {self.workspace_id}: it was "
            f"revoked, or it belongs to another workspace ({error})"
        )

    # -- events --------------------------------------------------------------------------

    def _on_welcome(self, welcome: Welcome) -> None:
        url = welcome.urls[0] if welcome.urls else ""
        if not url.endswith(f"/a/{self.workspace_id}/"):
            # Not the path-routed URL of our name: registering it would send the
            # platform's calls somewhere else. Stop rather than guess.
            self._fatal = ConfigError(
                f"the relay's URL {url!r} is not <public url>/a/{self.workspace_id}/"
            )
            self._tunnel.stop()
            return
        if url == self._public_url:
            return
        self._public_url = url
        logger.info("public_url", extra={"agent": self.workspace_id, "url": url})
        if self._session is not None:
            self._session.set_public_url(url, self._card_for(url))
        if self.hooks.on_public_url is not None:
            self.hooks.on_public_url(url)
        self._welcomed.set()

    def _on_registered(self, result: RegisterResult) -> None:
        self._registered_once = True
        if self._switch is not None:
            self._switch.registered(result)
        self._apply_pause()
        if self.hooks.on_registered is not None:
            self.hooks.on_registered(result)

    def _on_platform_pause(self, paused: bool) -> None:
        self._platform_paused = paused
        self._apply_pause()
        hook = self.hooks.on_paused if paused else self.hooks.on_resumed
        if hook is not None:
            hook()

    def _apply_pause(self) -> None:
        self._tunnel.set_paused(self._platform_paused or not self._registered_once)

    def _on_inbound_secret(self, secret: str) -> None:
        self._install_inbound_secret(secret)

    def _install_inbound_secret(self, secret: str | None) -> None:
        if secret is None:
            return
        self._inbound.set_secret(secret)
        self._tunnel.set_caller_auth([caller_auth.bearer(secret), *self._user_auth])

    # -- helpers ---------------------------------------------------------------------------

    def _require_client(self) -> PlatformClient:
        if self._client is None:
            raise RuntimeError("open the agent first: 'async with EdgeAgent(...) as agent'")
        return self._client

    def _load_card_template(self) -> Mapping[str, Any] | None:
        source = self._card_source
        if source is None or isinstance(source, Mapping):
            return source
        try:
            return load_agent_card(source, _CARD_TEMPLATE_BASE)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the agent card {source}: {exc}") from exc

    async def _local_card_now(self) -> dict[str, Any] | None:
        """The local server's card on the public URL; None once a card was pushed
        with :meth:`update_card` (that one wins) or while the server publishes none."""
        if self._local_card is None or self._card_template is not None:
            return None
        card = await self._local_card.fetch()
        if card is None or self._public_url is None:
            return None
        return rewrite_card_urls(card, self._public_url)

    def _card_for(self, public_url: str) -> dict[str, Any]:
        if self._card_template is None:
            return build_agent_card(public_url, name=self._agent_name)
        return rewrite_card_urls(self._card_template, public_url)


def _as_target(target: Target | AsgiApp | str) -> Target:
    if isinstance(target, str):
        return HttpTarget(target)
    if hasattr(target, "handle") and hasattr(target, "aclose"):
        return cast(Target, target)
    if callable(target):
        return AsgiTarget(target)
    raise ConfigError(f"target must be a Target, an ASGI app or a URL, not {type(target)!r}")


def _with_upgrades(target: Target) -> Target:
    """A URL target's WebSocket upgrades piped as bytes (:mod:`edge_agent.upgrade`)."""
    return UpgradingHttpTarget(target) if isinstance(target, HttpTarget) else target


def _connect_options(
    tls: TlsOptions | None, ping_interval: float | None, ping_timeout: float | None
) -> ConnectOptions:
    """TLS and the keepalive values that were given (the others keep their defaults)."""
    options = ConnectOptions(tls=tls or TlsOptions())
    if ping_interval is not None:
        options = dataclasses.replace(options, ping_interval=ping_interval)
    if ping_timeout is not None:
        options = dataclasses.replace(options, ping_timeout=ping_timeout)
    return options


def _local_card(target: Target) -> LocalCard | None:
    """Where the local server's card can be read: over HTTP, or from the ASGI app."""
    if isinstance(target, HttpTarget):
        return LocalCard(base_url=target.base_url)
    if isinstance(target, AsgiTarget):
        return LocalCard(app=target.app)
    return None  # a custom Target: no way to ask it


def _session_config(heartbeat_interval: float) -> SessionConfig:
    # Retries of a failed cycle start no slower than one heartbeat, so a short interval
    # (development, tests) also means a quick return after a platform restart.
    try:
        return SessionConfig(
            heartbeat_interval=heartbeat_interval,
            backoff_initial=min(1.0, heartbeat_interval),
            backoff_jitter=min(5.0, heartbeat_interval),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _spawn(tasks: list[asyncio.Task[Any]], coro: Any, name: str) -> asyncio.Task[Any]:
    task = asyncio.create_task(coro, name=name)
    tasks.append(task)
    return task


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("task_failed", extra={"task": task.get_name()}, exc_info=task.exception())


def _exit_status(code: int) -> int:
    """asyncio reports death by signal N as -N; shells say 128 + N."""
    return 128 - code if code < 0 else code
