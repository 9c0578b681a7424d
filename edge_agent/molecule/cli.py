"""``edge-agent run``, ``peers`` and ``card``, and the registration of every Molecule
command (``call`` is in :mod:`.cli_call`, ``plugin`` in :mod:`.cli_plugins`, what they
share in :mod:`.clishared`).

``edge-agent run`` is a remote workspace on a relay (:class:`edge_agent.agent.EdgeAgent`):
it prints the public URL and each registration, then one line per request, as
``edge-agent http`` does. ``peers`` lists (or looks up) the workspaces this one may
talk to; ``card`` replaces the registered agent card. All of them use the token cached
by ``run`` (or one given with ``--token``). Secret values are never printed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from edge_agent import caller_auth
from edge_agent.agent import AgentHooks, EdgeAgent
from edge_agent.config import load_file
from edge_agent.console import (
    RequestLines,
    Stopper,
    keepalive_options,
    object_target,
    output_options,
    tls_options,
)
from edge_agent.errors import ConfigError
from edge_agent.inspect.launch import InspectSettings, inspect_options, running, take_settings
from edge_agent.molecule.card import build_agent_card, load_agent_card
from edge_agent.molecule.child import ChildPolicy
from edge_agent.molecule.cli_plugins import print_installed
from edge_agent.molecule.client import PlatformClient
from edge_agent.molecule.clishared import (
    platform_options,
    platform_settings,
    platform_tls_options,
    platform_verify,
    run_cli,
    setup,
    with_client,
)
from edge_agent.molecule.models import RegisterResult
from edge_agent.molecule.plugins import PluginOptions, PluginRequest
from edge_agent.molecule.settings import SECTION, RunSettings, resolve_run
from edge_agent.molecule.tokens import TokenStore
from edge_agent.port import ExchangeRecord
from edge_agent.runner import on_stop_signals
from edge_agent.tls import TlsOptions


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
@keepalive_options
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
@click.option(
    "--pool",
    is_flag=True,
    default=None,
    help="Join the workspace's pool: several agents serve it, the relay spreads calls over "
    "them (the relay token must allow it).",
)
@click.option(
    "--poll-after",
    type=float,
    metavar="SECONDS",
    help="When the tunnel is down this long, a 'next' platform delivers the calls by "
    "poll until it is back (default 60) [env: EDGE_POLL_AFTER].",
)
@tls_options
@inspect_options
@output_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(config: str | None, **flags: Any) -> None:
    """Serve this machine as a Molecule workspace through the relay.

    Registers the relay URL of the workspace with the platform, keeps it alive with
    heartbeats, follows pause/resume/delete, and forwards the platform's A2A calls to
    --to or --app. After `--`, a COMMAND to run with the workspace's secrets in its
    environment (restarted if it crashes; the run ends with its exit code).

    While the tunnel is down for more than --poll-after seconds, a "next" platform is
    asked for poll delivery: the agent fetches the calls and posts the answers back
    through the platform, and returns to push when the tunnel is back.

    The TLS flags apply to the relay; --ca-file and --insecure also to the platform.
    Exit codes: 2 bad settings or the URL refused, 3 relay token refused, 5 workspace
    deleted or token revoked; the command's own code when it exited for good or kept
    crashing (more than --max-restarts restarts in 10 minutes).
    """
    inspect = take_settings(flags)
    try:
        settings = resolve_run(flags, file=load_file(config, SECTION))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    setup(settings)
    sys.exit(run_cli(serve_run(settings, inspect)))


async def serve_run(settings: RunSettings, inspect: InspectSettings | None = None) -> int:
    """The ``run`` command once settings are resolved; returns the exit code."""
    target, label = object_target(settings.to, settings.app)
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
        platform_verify=platform_verify(settings),
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        poll_after=settings.poll_after,
        child_policy=ChildPolicy(
            max_restarts=settings.max_restarts, secrets_refresh=settings.secrets_refresh
        ),
        plugins=_plugin_requests(settings.plugin),
        plugin_options=PluginOptions(run_setup=settings.run_setup),
        hooks=printer.hooks(),
        pool=settings.pool,
    )
    async with agent, running(inspect, target, printer.inspector_at) as inspector:
        if inspector is not None:
            from edge_agent.inspect.metrics import serve_on

            agent.mask_secrets = inspector.add_secrets  # the inspector shows them masked
            printer.sinks.append(
                serve_on(
                    inspector,
                    lambda: agent.connected,
                    lambda: agent.active_tasks,
                    lambda: agent.pool_size,
                )
            )
        on_stop_signals(Stopper(agent).signal)
        return await agent.run()


class RunPrinter:
    """The readable lines of ``edge-agent run`` (stdout); never a secret value."""

    def __init__(self, settings: RunSettings, label: str) -> None:
        self.settings = settings
        self.label = label
        self.registrations = 0
        self._requests = RequestLines(label)
        self.sinks: list[Callable[[ExchangeRecord], None]] = []  # + the inspector's metrics

    def request(self, record: ExchangeRecord) -> None:
        self._requests.request(record)
        for sink in self.sinks:
            sink(record)

    def hooks(self) -> AgentHooks:
        return AgentHooks(
            on_public_url=self.public_url,
            on_registered=self.registered,
            on_paused=self.paused,
            on_resumed=self.resumed,
            on_request=self.request,
            on_command=self.command,
            on_plugin=print_installed,
            on_delivery_mode=self.delivery_mode,
        )

    def public_url(self, url: str) -> None:
        self._requests.forwarding(url)

    def inspector_at(self, url: str) -> None:
        self._requests.inspector_at(url)

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

    def delivery_mode(self, mode: str) -> None:
        if mode == "poll":
            click.echo(
                f"Tunnel down for over {self.settings.poll_after:g} s: the platform now "
                "queues the calls and this agent polls for them"
            )
        else:
            click.echo("Tunnel back: the platform pushes the calls to the relay URL again")

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
    settings = platform_settings(config, flags)

    async def main(client: PlatformClient) -> None:
        if target_id:
            found = await client.discover(target_id)
            rows: list[dict[str, Any]] = [dataclasses.asdict(found)]
        else:
            rows = [dataclasses.asdict(peer) for peer in await client.get_peers(query)]
        _print_rows(rows, as_json)

    sys.exit(run_cli(with_client(settings, main)))


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
    settings = platform_settings(config, flags)
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

    sys.exit(run_cli(with_client(settings, main)))


def _plugin_requests(specs: Sequence[str]) -> list[PluginRequest]:
    try:
        return [PluginRequest.parse(spec) for spec in specs]
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


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
