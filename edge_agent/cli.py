"""The ``edge-agent`` command line.

``edge-agent http TARGET`` puts a local port (or an in-process ASGI app) on the relay
and prints its public URL, then one line per request. The other commands are listed in
:data:`edge_agent.console.LAZY_COMMANDS` and imported when asked for; the option
decorators they share live in :mod:`edge_agent.console`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from edge_agent import __version__, caller_auth, screen
from edge_agent.agent_key import machine_key
from edge_agent.config import (
    HttpSettings,
    default_config,
    exposed_secrets,
    load_file,
    resolve_http,
)
from edge_agent.connect import ConnectOptions
from edge_agent.console import (
    LazyGroup,
    RequestLines,
    Stopper,
    keepalive_options,
    make_target,
    output_options,
    relay_options,
)
from edge_agent.errors import ConfigError
from edge_agent.inspect.launch import InspectSettings, inspect_options, running, take_settings
from edge_agent.inspect.streamtap import TappedTarget
from edge_agent.logs import setup_logging
from edge_agent.port import ExchangeRecord
from edge_agent.runner import on_stop_signals, run_main
from edge_agent.session import StreamTarget
from edge_agent.target import HttpTarget, Target
from edge_agent.tls import TlsOptions
from edge_agent.tunnel import TunnelClient


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-agent")
def main() -> None:
    """Give a service on this machine a public URL through an edge relay."""


@main.command()
@click.argument("target", required=False)
@relay_options
@click.option("--name", help="Tunnel name (a DNS label); default: the token's name.")
@click.option("--app", metavar="MODULE:ATTR", help="Serve this ASGI app in-process.")
@click.option(
    "--app-dir",
    type=click.Path(file_okay=False),
    help="Import --app's module from this folder (default: the current one), as uvicorn.",
)
@click.option(
    "--caller-auth",
    multiple=True,
    metavar="bearer:TOKEN|basic:USER:PASS",
    help="Credential public callers must present (repeatable) [env: EDGE_CALLER_AUTH, "
    "white-space separated; or caller-auth in the config file]. Flags show in ps.",
)
@keepalive_options
@click.option(
    "--host-header",
    metavar="preserve|rewrite|VALUE",
    help="Host the local server gets: the public one (default), the target's, or VALUE.",
)
@click.option("--target-ca", type=click.Path(dir_okay=False), help="PEM CA of an https target.")
@click.option(
    "--target-insecure",
    is_flag=True,
    default=None,
    help="Do NOT verify an https target's certificate (a local dev server's own).",
)
@click.option(
    "--proxy",
    metavar="URL",
    help="HTTP CONNECT or SOCKS5 proxy to the relay (default: HTTPS_PROXY, ALL_PROXY).",
)
@click.option(
    "--pool",
    is_flag=True,
    default=None,
    help="Join the name's pool: several agents serve it, the relay spreads requests over "
    "them (the token must allow it). Without it, this agent replaces the one holding the name.",
)
@click.option(
    "--no-screen",
    is_flag=True,
    help="Plain lines even on a terminal (no live status screen).",
)
@inspect_options
@output_options
@click.version_option(__version__, prog_name="edge-agent")
def http(config: str | None, **flags: Any) -> None:
    """Forward the public URL to TARGET: a port (http://127.0.0.1:PORT) or a URL.

    Settings come from flags, then EDGE_* variables, then --config FILE, by default
    (when it exists):

    \b
      ~/.config/edge-agent/config.toml   ($XDG_CONFIG_HOME/edge-agent/config.toml)

    Keep the token out of flags (ps shows them): EDGE_RELAY_TOKEN, or token = "..." in
    that file, made 0600 (the agent warns when others can read it).

    On a terminal, shows a live status screen (state, URLs, latency, rates, the last
    requests); piped, with --log-format json, -v or --no-screen, prints the public URL,
    then one line per request. Ctrl-C (or SIGTERM) stops taking
    requests, lets those in flight finish, and exits; a second Ctrl-C exits at once.
    """
    inspect = take_settings(flags)
    no_screen = bool(flags.pop("no_screen", False))
    path = config or default_config()
    try:
        file = load_file(path)
        settings = resolve_http(flags, file=file)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if path is not None and (exposed := exposed_secrets(path, file)) is not None:
        click.echo(f"WARNING: {exposed}", err=True)
    setup_logging(settings.verbose, "json" if settings.log_format == "json" else "text")
    use_screen = screen.wanted(sys.stdout, settings.log_format, settings.verbose, no_screen)
    sys.exit(run_main(serve_http(settings, inspect, use_screen=use_screen)))


async def serve_http(
    settings: HttpSettings, inspect: InspectSettings | None = None, *, use_screen: bool = False
) -> None:
    """The ``http`` command once settings are resolved: serve until drained or stopped."""
    lines: RequestLines | screen.TtyScreen
    lines = screen.TtyScreen() if use_screen else RequestLines("")
    # With the inspector off, nothing but the request lines sees a stream or its record:
    # no fan-out and no tap wrapper on the per-request path.
    inspecting = inspect is not None and inspect.enabled
    sinks: list[Callable[[ExchangeRecord], None]] = [lines.request]  # + the metrics

    def on_done(record: ExchangeRecord) -> None:
        for sink in sinks:
            sink(record)

    stream_target, label, app = make_target(
        settings.target,
        settings.app,
        on_done if inspecting else lines.request,
        host_header=settings.host_header,
        target_ca=settings.target_ca,
        target_insecure=settings.target_insecure,
        app_dir=settings.app_dir,
    )
    lines.label = label
    target = TappedTarget(stream_target) if inspecting else stream_target
    replay: Target = app if app is not None else HttpTarget(label)
    client = tunnel_client(settings, target, lines)
    tty = lines if isinstance(lines, screen.TtyScreen) else None
    on_stop_signals(Stopper(client, announce=tty.note if tty else None).signal)
    drawing = asyncio.create_task(tty.run(client)) if tty else None
    if tty:  # the screen shows the state: no connect/reconnect log lines across it
        logging.getLogger("edge_agent.tunnel").setLevel(logging.WARNING)
    try:
        if app is not None:
            await app.start()
        async with running(inspect, replay, lines.inspector_at) as inspector:
            if inspector is not None:
                from edge_agent.inspect.metrics import serve_on

                sink = serve_on(
                    inspector,
                    lambda: client.connected,
                    lambda: client.active_streams,
                    lambda: client.pool_size,
                )
                sinks.append(sink)
            await client.run()
    finally:
        if drawing is not None and tty is not None:
            drawing.cancel()
            tty.close(client)
        await target.aclose()


def tunnel_client(
    settings: HttpSettings,
    target: StreamTarget,
    lines: RequestLines | screen.TtyScreen,
    tag: str = "",
) -> TunnelClient:
    """The tunnel of ``http`` (and of each ``start`` tunnel, its lines prefixed by
    ``[tag]``), with the loud warning ``--insecure`` deserves."""
    if settings.insecure:
        click.echo(
            f"WARNING: {f'[{tag}] ' if tag else ''}--insecure: the relay's TLS certificate is "
            "NOT verified; anyone on the path can read and change this tunnel's traffic",
            err=True,
        )
    tls = TlsOptions(settings.ca_file, settings.insecure, settings.pin_sha256)
    return TunnelClient(
        settings.relay,
        settings.token,
        settings.name,
        target,
        options=_connect_options(settings, tls),
        caller_auth=[caller_auth.parse(spec) for spec in settings.caller_auth],
        agent=f"edge-agent/{__version__}",
        on_ready=lines.ready,
        on_resumed=lines.resumed if isinstance(lines, RequestLines) else None,
        on_retry=lines.retrying if isinstance(lines, RequestLines) else None,  # screen: its state
        pool=settings.pool,
    )


def _connect_options(settings: HttpSettings, tls: TlsOptions) -> ConnectOptions:
    """TLS, the proxy, and the keepalive settings that were given (the rest keep their
    defaults)."""
    keepalive = {
        key: value
        for key in ("ping_interval", "ping_timeout")
        if (value := getattr(settings, key)) is not None
    }
    # The machine's agent key matters only without a token (an open relay); a token
    # proves the name by itself, and the client then uses a key of its own.
    key = machine_key() if settings.token is None else None
    return ConnectOptions(tls=tls, proxy=settings.proxy, agent_key=key, **keepalive)
