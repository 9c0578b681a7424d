"""``edge-agent run``, ``peers``, ``call`` and ``card``: the Molecule platform commands.

``edge-agent run`` is a remote workspace on a relay (:class:`edge_agent.agent.EdgeAgent`):
it prints the public URL and each registration, then one line per request, as
``edge-agent http`` does. ``peers`` lists (or looks up) the workspaces this one may
talk to; ``call`` sends one of them a message through the platform and prints the
answer; ``card`` replaces the registered agent card. All of them use the token cached
by ``run`` (or one given with ``--token``). Secret values are never printed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import ssl
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, TypeVar

import click

from edge_agent import caller_auth
from edge_agent.agent import AgentHooks, EdgeAgent
from edge_agent.cli import RequestLines, Stopper, make_target, output_options, tls_options
from edge_agent.config import load_file
from edge_agent.errors import ConfigError
from edge_agent.logs import setup_logging
from edge_agent.molecule.calls import CallResult
from edge_agent.molecule.card import build_agent_card, load_agent_card
from edge_agent.molecule.child import ChildPolicy
from edge_agent.molecule.client import CALL_TIMEOUT, PlatformClient
from edge_agent.molecule.errors import (
    BadRequest,
    CallDenied,
    CallQueued,
    CallTimedOut,
    ChildCrashLoop,
    ChildStartError,
    MoleculeError,
    PeerError,
    PeerNotFound,
    PeerUnreachable,
    PlatformRejected,
    PluginError,
    TokenRejected,
    TokenStoreError,
    WorkspaceDeleted,
)
from edge_agent.molecule.models import RegisterResult
from edge_agent.molecule.plugins import (
    SETUP_TIMEOUT,
    InstalledPlugin,
    PluginOptions,
    PluginRequest,
    install_plugin,
    list_plugins,
    plugins_dir,
)
from edge_agent.molecule.settings import (
    SECTION,
    PlatformSettings,
    RunSettings,
    resolve_platform,
    resolve_run,
)
from edge_agent.molecule.tokens import TokenStore
from edge_agent.runner import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, on_stop_signals, run_main
from edge_agent.tls import TlsOptions, client_context

#: The platform refused the workspace: deleted, or its token revoked / wrong. (The
#: other exit codes are in :mod:`edge_agent.runner`; a command that exited for good
#: ends ``run`` with its own code.)
EXIT_PLATFORM: Final = 5
#: A plugin was not installed (refused archive, sha256 mismatch); nothing changed.
EXIT_PLUGIN: Final = 6
#: ``plugin install --run-setup``: installed, but its setup.sh failed.
EXIT_SETUP_FAILED: Final = 7

#: ``edge-agent call``: the platform's answers that are not the peer's reply.
EXIT_CALL_QUEUED: Final = 10  # queued (202, or "next"'s 200 queued): no answer now
EXIT_CALL_DENIED: Final = 11  # 403: the hierarchy rules forbid the call
EXIT_PEER_NOT_FOUND: Final = 12  # 404: no such workspace
EXIT_PEER_UNREACHABLE: Final = 13  # 502/503: no URL, unreachable, busy, paused
EXIT_CALL_TIMED_OUT: Final = 14  # 504, or no answer within --timeout
EXIT_PEER_ERROR: Final = 15  # the peer answered with an error

_CALL_EXITS: Final = (
    (CallQueued, EXIT_CALL_QUEUED),
    (CallDenied, EXIT_CALL_DENIED),
    (PeerNotFound, EXIT_PEER_NOT_FOUND),
    (PeerUnreachable, EXIT_PEER_UNREACHABLE),
    (CallTimedOut, EXIT_CALL_TIMED_OUT),
    (PeerError, EXIT_PEER_ERROR),
)

F = TypeVar("F", bound=Callable[..., Any])


def register(main: click.Group) -> None:
    """Add the platform commands to the ``edge-agent`` group."""
    main.add_command(run)
    main.add_command(peers)
    main.add_command(call)
    main.add_command(card)
    main.add_command(plugin)


def platform_options(func: F) -> F:
    """Where the platform is and which workspace we are (values None when not given)."""
    options = [
        click.option("--platform", metavar="URL", help="Platform URL [env: EDGE_PLATFORM_URL]."),
        click.option("--workspace-id", metavar="ID", help="[env: EDGE_WORKSPACE_ID]"),
        click.option(
            "--token",
            metavar="TOKEN",
            help="Workspace token, cached for later runs [env: EDGE_PLATFORM_TOKEN].",
        ),
        click.option(
            "--token-dir",
            type=click.Path(file_okay=False),
            help="Token cache folder (default ~/.molecule) [env: EDGE_TOKEN_DIR].",
        ),
        click.option("--org-id", help="X-Molecule-Org-Id (SaaS) [env: EDGE_ORG_ID]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def platform_tls_options(func: F) -> F:
    """``--ca-file`` and ``--insecure`` for commands that only talk to the platform."""
    options = [
        click.option("--ca-file", type=click.Path(dir_okay=False), help="PEM CA to trust."),
        click.option("--insecure", is_flag=True, default=None, help="Do NOT verify TLS (dev)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command(context_settings={"allow_interspersed_args": False})
@platform_options
@click.option("--relay", metavar="URL", help="Relay base URL [env: EDGE_RELAY_URL].")
@click.option("--relay-token", metavar="TOKEN", help="Relay token [env: EDGE_RELAY_TOKEN].")
@click.option("--to", metavar="PORT|URL", help="Local server the calls go to.")
@click.option("--app", metavar="MODULE:ATTR", help="Serve this ASGI app in-process.")
@click.option(
    "--agent-card",
    type=click.Path(dir_okay=False),
    help="Agent card JSON; default: the local server's /.well-known/agent-card.json "
    "[env: EDGE_AGENT_CARD].",
)
@click.option(
    "--agent-name",
    help="Name of the built agent card (no --agent-card and no card from the local server).",
)
@click.option(
    "--heartbeat-interval",
    type=float,
    help="Seconds between heartbeats (30) [env: EDGE_HEARTBEAT_INTERVAL].",
)
@click.option(
    "--caller-auth",
    multiple=True,
    metavar="bearer:TOKEN|basic:USER:PASS",
    help="Extra credential public callers may present (repeatable).",
)
@click.option(
    "--ping-interval",
    type=float,
    metavar="SECONDS",
    help="Tunnel keepalive ping interval (default 20).",
)
@click.option(
    "--ping-timeout",
    type=float,
    metavar="SECONDS",
    help="Drop the tunnel when a ping is unanswered this long (default 20).",
)
@click.option(
    "--max-restarts",
    type=int,
    metavar="N",
    help="Give up when the command needs more than N restarts in 10 minutes "
    "(default 5) [env: EDGE_MAX_RESTARTS].",
)
@click.option(
    "--plugin",
    multiple=True,
    metavar="NAME[=SOURCE]",
    help="Install this plugin from the platform before the command starts (repeatable).",
)
@click.option(
    "--run-setup",
    is_flag=True,
    default=None,
    help="Run the plugins' setup.sh (off by default: it is code from the platform).",
)
@click.option(
    "--secrets-refresh",
    type=float,
    metavar="SECONDS",
    help="Pull the secrets again this often; restart the command when one changed "
    "[env: EDGE_SECRETS_REFRESH].",
)
@tls_options
@output_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(config: str | None, **flags: Any) -> None:
    """Serve this machine as a Molecule workspace through the relay.

    Registers the relay URL of the workspace with the platform, keeps it alive with
    heartbeats, follows pause/resume/delete, and forwards the platform's A2A calls to
    --to or --app. After `--`, a COMMAND to run with the workspace's secrets in its
    environment (restarted if it crashes; the run ends with its exit code).

    The TLS flags apply to the relay; --ca-file and --insecure also to the platform.
    Exit codes: 2 bad settings or the URL refused, 3 relay token refused, 5 workspace
    deleted or token revoked; the command's own code when it exited for good or kept
    crashing (more than --max-restarts restarts in 10 minutes).
    """
    try:
        settings = resolve_run(flags, file=load_file(config, SECTION))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    _setup(settings)
    sys.exit(run_cli(serve_run(settings)))


async def serve_run(settings: RunSettings) -> int:
    """The ``run`` command once settings are resolved; returns the exit code."""
    target, label = make_target(settings.to, settings.app)
    printer = RunPrinter(settings, label)
    agent = EdgeAgent(
        platform_url=settings.platform,
        workspace_id=settings.workspace_id,
        relay_url=settings.relay,
        relay_token=settings.relay_token,
        target=target,
        command=settings.command,
        agent_card=settings.agent_card,
        agent_name=settings.agent_name,
        platform_token=settings.token,
        token_dir=settings.token_dir,
        org_id=settings.org_id,
        heartbeat_interval=settings.heartbeat_interval,
        caller_auth=[caller_auth.parse(spec) for spec in settings.caller_auth],
        relay_tls=TlsOptions(settings.ca_file, settings.insecure, settings.pin_sha256),
        platform_verify=_platform_verify(settings),
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        child_policy=ChildPolicy(
            max_restarts=settings.max_restarts, secrets_refresh=settings.secrets_refresh
        ),
        plugins=_plugin_requests(settings.plugin),
        plugin_options=PluginOptions(run_setup=settings.run_setup),
        hooks=printer.hooks(),
    )
    async with agent:
        on_stop_signals(Stopper(agent).signal)
        return await agent.run()


class RunPrinter:
    """The readable lines of ``edge-agent run`` (stdout); never a secret value."""

    def __init__(self, settings: RunSettings, label: str) -> None:
        self.settings = settings
        self.label = label
        self.registrations = 0
        self._requests = RequestLines(label)

    def hooks(self) -> AgentHooks:
        return AgentHooks(
            on_public_url=self.public_url,
            on_registered=self.registered,
            on_paused=self.paused,
            on_resumed=self.resumed,
            on_request=self._requests.request,
            on_command=self.command,
            on_plugin=print_installed,
        )

    def public_url(self, url: str) -> None:
        click.echo(f"Forwarding {url} -> {self.label}")

    def registered(self, result: RegisterResult) -> None:
        self.registrations += 1
        verb = "Registered" if self.registrations == 1 else "Registered again"
        generation = "next" if result.is_next else "current"
        click.echo(
            f"{verb}: workspace {self.settings.workspace_id} on {self.settings.platform} "
            f"(platform generation {generation})"
        )
        if result.token_issued:
            store = TokenStore(self.settings.workspace_id, self.settings.token_dir)
            click.echo(f"Workspace token issued and cached in {store.token_path}")
        if result.inbound_secret is not None and self.registrations == 1:
            click.echo("Calls must carry the platform inbound secret (checked by relay and agent)")

    def paused(self) -> None:
        click.echo("Paused on the platform: new requests get 503 until it is resumed")

    def resumed(self) -> None:
        click.echo("Resumed on the platform: serving again")

    def command(self, argv: Sequence[str], secret_names: Sequence[str]) -> None:
        names = ", ".join(secret_names) if secret_names else "none"
        click.echo(f"Starting {argv[0]} with secrets: {names} (values not shown)")


@click.command()
@click.argument("target_id", required=False)
@platform_options
@platform_tls_options
@click.option("-q", "--query", help="Only peers whose name or role contains this.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@output_options
def peers(
    config: str | None, target_id: str | None, query: str | None, as_json: bool, **flags: Any
) -> None:
    """List the workspaces this one may talk to, or look up TARGET_ID's URL."""
    settings = _platform_settings(config, flags)

    async def main(client: PlatformClient) -> None:
        if target_id:
            found = await client.discover(target_id)
            rows: list[dict[str, Any]] = [dataclasses.asdict(found)]
        else:
            rows = [dataclasses.asdict(peer) for peer in await client.get_peers(query)]
        _print_rows(rows, as_json)

    sys.exit(run_cli(_with_client(settings, main)))


@click.command()
@click.argument("peer_id")
@click.argument("text")
@platform_options
@platform_tls_options
@click.option(
    "--stream", is_flag=True, help="Send message/stream (the platform relays it all at the end)."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=CALL_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the peer's JSON-RPC answer.")
@output_options
def call(
    config: str | None,
    peer_id: str,
    text: str,
    stream: bool,
    timeout: float,
    as_json: bool,
    **flags: Any,
) -> None:
    """Send TEXT to the workspace PEER_ID through the platform and print its answer.

    The call goes through the platform's A2A proxy as this workspace (its token and
    X-Workspace-ID), so the platform checks the hierarchy. TEXT "-" reads stdin.
    Exit codes: 0 answered, 5 our token refused, 10 queued by the platform (no answer
    now), 11 denied by the hierarchy, 12 no such workspace, 13 peer unreachable, 14 no
    answer in time, 15 the peer answered with an error.
    """
    settings = _platform_settings(config, flags)
    if text == "-":
        text = sys.stdin.read()

    async def main(client: PlatformClient) -> None:
        result = await client.call_peer(peer_id, text, stream=stream, reply_timeout=timeout)
        _print_answer(result, as_json)

    sys.exit(run_cli(_with_client(settings, main)))


def _print_answer(result: CallResult, as_json: bool) -> None:
    if as_json:
        documents = result.documents
        click.echo(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2))
    elif result.texts:
        click.echo(result.text)
    else:
        click.echo("(the answer holds no text; --json shows all of it)", err=True)


@click.command()
@click.argument("card_file", required=False, type=click.Path(dir_okay=False))
@platform_options
@platform_tls_options
@click.option("--public-url", metavar="URL", help="Default: the workspace's registered URL.")
@click.option("--agent-name", help="Name of the built card (without CARD_FILE).")
@output_options
def card(
    config: str | None,
    card_file: str | None,
    public_url: str | None,
    agent_name: str | None,
    **flags: Any,
) -> None:
    """Replace the workspace's agent card (CARD_FILE, or a minimal built one).

    Its interface URLs are moved onto the public URL. A running `edge-agent run`
    registers its own card again after an outage: give it the same --agent-card.
    """
    settings = _platform_settings(config, flags)
    name = agent_name or f"edge agent {settings.workspace_id[:8]}"

    async def main(client: PlatformClient) -> None:
        url = public_url or (await client.discover(settings.workspace_id)).url
        if not url:
            raise click.UsageError("the workspace has no registered URL: pass --public-url")
        try:
            if card_file:
                new_card = load_agent_card(card_file, url)
            else:
                new_card = build_agent_card(url, name=name)
        except (OSError, ValueError) as exc:
            raise click.UsageError(f"cannot load the agent card: {exc}") from None
        await client.update_card(new_card)
        click.echo(f"Agent card of {settings.workspace_id} updated (interfaces at {url})")

    sys.exit(run_cli(_with_client(settings, main)))


@click.group()
def plugin() -> None:
    """Install the workspace's plugins from the platform, or list the installed ones.

    Plugins go to the workspace's folder (~/.molecule/<id>/plugins/<name>/, as the
    Molecule SDK's). A download is checked (paths, file types, size, count) and
    verified against the sha256 in its plugin.yaml before it replaces the installed
    version; a failed install leaves the old one.
    """


@plugin.command("install")
@click.argument("name")
@click.option("--source", metavar="SOURCE", help="local://NAME (default), github://owner/repo#ref")
@click.option(
    "--run-setup",
    is_flag=True,
    help="Run the plugin's setup.sh (off by default: it is code from the platform).",
)
@click.option(
    "--setup-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=SETUP_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
)
@platform_options
@platform_tls_options
@output_options
def plugin_install(
    config: str | None,
    name: str,
    source: str | None,
    run_setup: bool,
    setup_timeout: float,
    **flags: Any,
) -> None:
    """Download plugin NAME with the workspace token and install it.

    Exit codes: 0 installed, 2 bad settings, 5 the platform refused (the token, an
    unknown plugin or source), 6 the archive was refused or does not match its sha256
    (nothing changed), 7 installed but setup.sh failed.
    """
    settings = _platform_settings(config, flags)
    try:
        request = PluginRequest(name, source)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    options = PluginOptions(run_setup=run_setup, setup_timeout=setup_timeout)

    async def main(client: PlatformClient) -> int:
        folder = TokenStore(settings.workspace_id, settings.token_dir).directory
        installed = await install_plugin(client, folder, request, options)
        print_installed(installed)
        return EXIT_SETUP_FAILED if installed.setup and not installed.setup.ok else EXIT_OK

    sys.exit(run_cli(_with_client(settings, main)))


@plugin.command("list")
@platform_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@output_options
def plugin_list(config: str | None, as_json: bool, **flags: Any) -> None:
    """List the plugins installed for the workspace (nothing is downloaded)."""
    settings = _platform_settings(config, {**flags, "ca_file": None, "insecure": None})
    try:
        folder = TokenStore(settings.workspace_id, settings.token_dir).directory
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    rows = list_plugins(folder)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"No plugins installed in {plugins_dir(folder)}.")
    for row in rows:
        verified = "sha256 verified" if row["sha256"] else "unverified"
        fields = [row["name"], row["version"] or "-", row["source"] or "-", verified]
        click.echo("  ".join(fields))


def print_installed(installed: InstalledPlugin) -> None:
    """One line per installed plugin (and its setup), for ``run`` and ``plugin``."""
    verb = "Upgraded" if installed.replaced else "Installed"
    check = "sha256 verified" if installed.sha256 else "unverified: plugin.yaml declares no sha256"
    version = f" {installed.version}" if installed.version else ""
    click.echo(
        f"{verb} plugin {installed.name}{version} from {installed.source} in {installed.path} "
        f"({check})"
    )
    if installed.skipped_links:
        click.echo(f"  links skipped (never installed): {', '.join(installed.skipped_links)}")
    if installed.setup is not None:
        click.echo(f"  setup.sh: {installed.setup.detail} (its output is in the log)")


def _plugin_requests(specs: Sequence[str]) -> list[PluginRequest]:
    try:
        return [PluginRequest.parse(spec) for spec in specs]
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


# -- helpers ---------------------------------------------------------------------------


def run_cli(main: Coroutine[Any, Any, int | None]) -> int:
    """Run ``main``; platform errors print one clear line and map to exit codes."""
    result = EXIT_OK

    async def wrapped() -> None:
        nonlocal result
        try:
            result = await main or EXIT_OK
        except MoleculeError as exc:
            click.echo(f"edge-agent: error: {describe(exc)}", err=True)
            result = exit_code(exc)

    code = run_main(wrapped())
    return code if code != EXIT_OK else result


def describe(exc: MoleculeError) -> str:
    """The error's message, with what to do about it."""
    if isinstance(exc, WorkspaceDeleted):
        return f"{exc}; nothing left to serve (create a new workspace to continue)"
    if isinstance(exc, TokenRejected):
        return (
            f"{exc}. Pass a valid workspace token with --token or EDGE_PLATFORM_TOKEN "
            "(an admin can create one: POST /workspaces/<id>/tokens)"
        )
    if isinstance(exc, CallDenied):
        return (
            f"{exc} (the platform answers this also for a workspace that does not exist; "
            "`edge-agent peers` lists the ones this workspace may call)"
        )
    if isinstance(exc, BadRequest) and str(exc).startswith("register:"):
        return (
            f"{exc}. The platform refused the registration; it refuses URLs on loopback "
            "and private addresses, so the relay's public URL must resolve to a public "
            "address (edge-relay serve --public-url)"
        )
    return str(exc)


def exit_code(exc: MoleculeError) -> int:
    for kind, code in _CALL_EXITS:
        if isinstance(exc, kind):
            return code
    if isinstance(exc, ChildCrashLoop):
        return exc.exit_status
    if isinstance(exc, PluginError):
        return EXIT_PLUGIN  # the command's own code, as a shell reports it
    if isinstance(exc, BadRequest | TokenStoreError | ChildStartError):
        return EXIT_CONFIG
    if isinstance(exc, PlatformRejected):
        return EXIT_PLATFORM
    return EXIT_ERROR


async def _with_client(
    settings: PlatformSettings,
    main: Callable[[PlatformClient], Coroutine[Any, Any, int | None]],
) -> int | None:
    """Run ``main`` with a client for the workspace; its exit code (None: 0)."""
    try:
        client = PlatformClient(
            settings.platform,
            settings.workspace_id,
            token_store=TokenStore(settings.workspace_id, settings.token_dir),
            token=settings.token,
            org_id=settings.org_id,
            verify=_platform_verify(settings),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    async with client:
        return await main(client)


def _platform_settings(config: str | None, flags: dict[str, Any]) -> PlatformSettings:
    try:
        settings = resolve_platform(flags, file=load_file(config, SECTION))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    _setup(settings)
    return settings


def _setup(settings: PlatformSettings) -> None:
    setup_logging(settings.verbose, "json" if settings.log_format == "json" else "text")
    if settings.verbose < 2:  # httpx logs every platform request at INFO: -vv shows them
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if settings.insecure:
        click.echo(
            "WARNING: --insecure: TLS certificates are NOT verified; anyone on the path can "
            "read and change this traffic, tokens included",
            err=True,
        )


def _platform_verify(settings: PlatformSettings) -> ssl.SSLContext | bool:
    if not settings.ca_file and not settings.insecure:
        return True  # the system store (httpx also honours SSL_CERT_FILE)
    return client_context(TlsOptions(settings.ca_file, settings.insecure))


def _print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("No peers.")
    for row in rows:
        status = row.get("status", "")
        fields = [row["id"], status, row.get("name") or "-", row.get("url") or "-"]
        click.echo("  ".join(str(field) for field in fields if field != ""))
