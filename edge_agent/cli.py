"""The ``edge-agent`` command line.

``edge-agent http TARGET`` puts a local port (or an in-process ASGI app) on the relay
and prints its public URL, then one line per request. Other commands register on the
:func:`main` group (see the bottom of this module); the option decorators here are
shared so every command spells relay, TLS and logging flags the same way.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import click

from edge_agent import __version__, caller_auth
from edge_agent.asgi import AsgiTarget
from edge_agent.config import HttpSettings, load_file, resolve_http
from edge_agent.connect import ConnectOptions
from edge_agent.errors import ConfigError
from edge_agent.inspect.launch import InspectSettings, inspect_options, running, take_settings
from edge_agent.logs import setup_logging
from edge_agent.runner import on_stop_signals, run_main
from edge_agent.session import DRAIN_TIMEOUT
from edge_agent.streams import RequestRecord
from edge_agent.target import HttpTarget, Target
from edge_agent.tls import TlsOptions
from edge_agent.tunnel import TunnelClient
from wire import Welcome

F = TypeVar("F", bound=Callable[..., Any])


def relay_options(func: F) -> F:
    """``--relay``, ``--token`` and the TLS flags (values None when not given)."""
    options = [
        click.option("--relay", metavar="URL", help="Relay base URL [env: EDGE_RELAY_URL]."),
        click.option("--token", metavar="TOKEN", help="Relay token [env: EDGE_RELAY_TOKEN]."),
    ]
    for option in reversed(options):
        func = option(func)
    return tls_options(func)


def tls_options(func: F) -> F:
    """``--ca-file``, ``--insecure`` and ``--pin-sha256`` (values None when not given)."""
    options = [
        click.option("--ca-file", type=click.Path(dir_okay=False), help="PEM CA for the relay."),
        click.option("--insecure", is_flag=True, default=None, help="Do NOT verify TLS (dev)."),
        click.option("--pin-sha256", metavar="HEX", help="Relay certificate SHA-256 pin."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def output_options(func: F) -> F:
    """``--config``, ``-v`` and ``--log-format`` (values None when not given)."""
    options = [
        click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file."),
        click.option("-v", "--verbose", count=True, default=None, help="More logs (-vv: debug)."),
        click.option("--log-format", type=click.Choice(["text", "json"]), default=None),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class _Commands(click.Group):
    """The command group; the optional commands are imported when first asked for.

    ``edge-agent http`` never needs them, and importing them (httpx, the platform
    client) cost the agent process about 4 MiB of its idle RSS.
    """

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and _register_optional_commands():
            found = super().get_command(ctx, cmd_name)
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        _register_optional_commands()
        return super().list_commands(ctx)


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="edge-agent")
def main() -> None:
    """Give a service on this machine a public URL through an edge relay."""


@main.command()
@click.argument("target", required=False)
@relay_options
@click.option("--name", help="Tunnel name (a DNS label); default: the token's name.")
@click.option("--app", metavar="MODULE:ATTR", help="Serve this ASGI app in-process.")
@click.option(
    "--caller-auth",
    multiple=True,
    metavar="bearer:TOKEN|basic:USER:PASS",
    help="Credential public callers must present (repeatable).",
)
@click.option(
    "--ping-interval",
    type=float,
    metavar="SECONDS",
    help="WebSocket keepalive ping interval (default 20).",
)
@click.option(
    "--ping-timeout",
    type=float,
    metavar="SECONDS",
    help="Drop the tunnel when a ping is unanswered this long (default 20).",
)
@inspect_options
@output_options
@click.version_option(__version__, prog_name="edge-agent")
def http(config: str | None, **flags: Any) -> None:
    """Forward the public URL to TARGET: a port (http://127.0.0.1:PORT) or a URL.

    Prints the public URL, then one line per request. Ctrl-C (or SIGTERM) stops taking
    requests, lets those in flight finish, and exits; a second Ctrl-C exits at once.
    """
    inspect = take_settings(flags)
    try:
        settings = resolve_http(flags, file=load_file(config))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    setup_logging(settings.verbose, "json" if settings.log_format == "json" else "text")
    sys.exit(run_main(serve_http(settings, inspect)))


async def serve_http(settings: HttpSettings, inspect: InspectSettings | None = None) -> None:
    """The ``http`` command once settings are resolved: serve until drained or stopped."""
    target, label = _target(settings)
    if settings.insecure:
        click.echo(
            "WARNING: --insecure: the relay's TLS certificate is NOT verified; anyone on the "
            "path can read and change this tunnel's traffic",
            err=True,
        )
    lines = RequestLines(label)
    tls = TlsOptions(settings.ca_file, settings.insecure, settings.pin_sha256)
    client = TunnelClient(
        settings.relay,
        settings.token,
        settings.name,
        target,
        options=_connect_options(settings, tls),
        caller_auth=[caller_auth.parse(spec) for spec in settings.caller_auth],
        agent=f"edge-agent/{__version__}",
        on_ready=lines.ready,
        on_request=lines.request,
    )
    on_stop_signals(Stopper(client).signal)
    try:
        if isinstance(target, AsgiTarget):
            await target.start()
        async with running(inspect, target, lines.inspector_at):
            await client.run()
    finally:
        await target.aclose()


def _connect_options(settings: HttpSettings, tls: TlsOptions) -> ConnectOptions:
    """TLS plus the keepalive settings that were given (the rest keep their defaults)."""
    keepalive = {
        key: value
        for key in ("ping_interval", "ping_timeout")
        if (value := getattr(settings, key)) is not None
    }
    return ConnectOptions(tls=tls, **keepalive)


def _target(settings: HttpSettings) -> tuple[Target, str]:
    return make_target(settings.target, settings.app)


def make_target(target: str | None, app: str | None) -> tuple[Target, str]:
    """The Target for a port/URL or a ``module:attr`` app, and its label for output."""
    if app:
        if os.getcwd() not in sys.path:  # as uvicorn: import the app from the current dir
            sys.path.insert(0, os.getcwd())
        return AsgiTarget(app), app
    assert target is not None
    http_target = HttpTarget(target)
    return http_target, http_target.base_url


class Drainable(Protocol):
    """What :class:`Stopper` stops: a :class:`TunnelClient`, or anything shaped like it."""

    async def drain(self, deadline: float = DRAIN_TIMEOUT) -> None: ...

    def stop(self) -> None: ...


class Stopper:
    """First SIGINT/SIGTERM: drain (finish in-flight requests); second: stop now."""

    def __init__(self, client: Drainable, deadline: float = DRAIN_TIMEOUT) -> None:
        self.client = client
        self.deadline = deadline
        self._drain: asyncio.Task[None] | None = None

    def signal(self) -> None:
        if self._drain is None:
            click.echo("Draining: finishing requests in flight (again to quit now)", err=True)
            self._drain = asyncio.create_task(self.client.drain(self.deadline))
        else:
            self.client.stop()


class RequestLines:
    """Prints the public URL(s) on each new WELCOME and one line per finished request."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.inspector: str | None = None
        self._shown: tuple[str, ...] = ()

    def ready(self, welcome: Welcome) -> None:
        if welcome.urls != self._shown:
            self._shown = welcome.urls
            self.forwarding(*welcome.urls)

    def forwarding(self, *urls: str) -> None:
        """The public URL(s), and the inspector's beside them."""
        for url in urls:
            click.echo(f"Forwarding {url} -> {self.label}")
        if self.inspector is not None:
            click.echo(f"Inspector {self.inspector}")

    def inspector_at(self, url: str) -> None:
        """The inspector listens at ``url``: shown with the public URL (now, if it is out)."""
        self.inspector = url
        if self._shown:
            click.echo(f"Inspector {url}")

    def request(self, record: RequestRecord) -> None:
        outcome = " ".join(
            part
            for part in (
                str(record.status) if record.status is not None else "",
                record.reset.name if record.reset is not None else "",
            )
            if part
        )
        target = _printable(record.target)
        click.echo(
            f"{record.method} {target} {outcome} {record.duration_ms:.0f} ms {record.bytes_out} B"
        )


def _printable(text: str) -> str:
    """Escape bytes >= 0x7f so a request target cannot drive the terminal."""
    if text.isascii():
        return text
    return text.encode("latin-1", "replace").decode("ascii", "backslashreplace")


# More commands register here. The Molecule platform session adds `edge-agent run` and
# `edge-agent peers` with a `register(main)` function in edge_agent/molecule/cli.py;
# until that module exists, the group has `http` only. Imported on first use (_Commands).
_optional_registered = False


def _register_optional_commands() -> bool:
    """Add the optional commands once. Returns whether this call added any."""
    global _optional_registered
    if _optional_registered:
        return False
    _optional_registered = True
    try:
        molecule_cli = importlib.import_module("edge_agent.molecule.cli")
    except ModuleNotFoundError as exc:
        if exc.name != "edge_agent.molecule.cli":
            raise
        return False
    molecule_cli.register(main)
    return True
