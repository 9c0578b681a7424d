"""What every ``edge-agent`` command shares: option decorators, request lines, the
stop-on-signal policy, the stream targets, and the explicit table of commands that are
imported only when asked for.

Commands import this module; this module imports no command, so there is no cycle
(the ``http`` command lives in :mod:`edge_agent.cli`, the platform commands in
:mod:`edge_agent.molecule.cli`).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import click

from edge_agent.asgi import AsgiTarget
from edge_agent.bridge import ObjectBridge
from edge_agent.forward import HttpForwarder
from edge_agent.port import ExchangeRecord
from edge_agent.session import DRAIN_TIMEOUT, StreamTarget
from edge_agent.target import HttpTarget, Target, target_url
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


#: Commands imported when first asked for, as ``name: "module:attribute"``: ``edge-agent
#: http`` never needs them, and importing them (httpx, the platform client) cost the
#: agent process about 4 MiB of its idle RSS.
LAZY_COMMANDS: dict[str, str] = {
    "run": "edge_agent.molecule.cli:run",
    "peers": "edge_agent.molecule.cli:peers",
    "card": "edge_agent.molecule.cli:card",
    "call": "edge_agent.molecule.cli_call:call",
    "plugin": "edge_agent.molecule.cli_plugins:plugin",
    "service": "edge_agent.service.cli:service",
}


class LazyGroup(click.Group):
    """A command group whose :data:`LAZY_COMMANDS` are imported on first use."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in LAZY_COMMANDS:
            module, _, attr = LAZY_COMMANDS[cmd_name].partition(":")
            found = getattr(importlib.import_module(module), attr)
            assert isinstance(found, click.Command)
            self.add_command(found, cmd_name)
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})


def make_target(
    target: str | None,
    app: str | None,
    on_done: Callable[[ExchangeRecord], None] | None = None,
    *,
    host_header: str = "preserve",
    target_ca: str | None = None,
    target_insecure: bool = False,
) -> tuple[StreamTarget, str, AsgiTarget | None]:
    """Where streams go for a port/URL or a ``module:attr`` app, its label for output,
    and the app's target (to start its lifespan) if it is an app."""
    if app:
        if os.getcwd() not in sys.path:  # as uvicorn: import the app from the current dir
            sys.path.insert(0, os.getcwd())
        asgi = AsgiTarget(app)
        return ObjectBridge(asgi, on_done=on_done), app, asgi
    assert target is not None
    forwarder = HttpForwarder(
        target,
        ca_file=target_ca,
        insecure=target_insecure,
        host_header=host_header,
        on_done=on_done,
    )
    return forwarder, target_url(target), None


def object_target(target: str | None, app: str | None) -> tuple[Target, str]:
    """An object Target (for wrappers such as the Molecule ones) and its label."""
    if app:
        if os.getcwd() not in sys.path:
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

    def __init__(
        self,
        client: Drainable,
        deadline: float = DRAIN_TIMEOUT,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.deadline = deadline
        self.announce = announce or (lambda text: click.echo(text, err=True))
        self._drain: asyncio.Task[None] | None = None

    def signal(self) -> None:
        if self._drain is None:
            self.announce("Draining: finishing requests in flight (again to quit now)")
            self._drain = asyncio.create_task(self.client.drain(self.deadline))
        else:
            self.client.stop()


class RequestLines:
    """Prints the public URL(s) on each new WELCOME and one line per finished request.

    Request lines are written once per loop turn, not flushed one by one: under load a
    flush (a system call) per request was a tenth of the agent's CPU.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.inspector: str | None = None
        self._shown: tuple[str, ...] = ()
        self._pending: list[str] = []

    def _emit(self, line: str) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(line)

    def _flush(self) -> None:
        lines, self._pending = self._pending, []
        out = sys.stdout
        out.write("\n".join(lines) + "\n")
        out.flush()

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

    def request(self, record: ExchangeRecord) -> None:
        # Once per request in the agent: no generator, no join (a tenth of its calls).
        status, reset = record.status, record.reset
        if reset is None:
            outcome = "" if status is None else str(status)
        else:
            outcome = reset.name if status is None else f"{status} {reset.name}"
        target = record.target
        if not target.isascii():
            target = _printable(target)
        line = (
            f"{record.method} {target} {outcome} {record.duration_ms:.0f} ms {record.bytes_out} B"
        )
        if record.error:  # why, on the same line: "TARGET_ERROR 65 ms" alone says nothing
            line += f" ({_printable(record.error)[:200]})"
        self._emit(line)


def _printable(text: str) -> str:
    """Escape bytes >= 0x7f so a request target cannot drive the terminal."""
    if text.isascii():
        return text
    return text.encode("latin-1", "replace").decode("ascii", "backslashreplace")
