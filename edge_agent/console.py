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
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

from edge_agent.bridge import ObjectBridge
from edge_agent.errors import ConfigError
from edge_agent.forward import HttpForwarder
from edge_agent.port import ExchangeRecord
from edge_agent.screen import replaced_note, web_first
from edge_agent.session import DRAIN_TIMEOUT, StreamTarget
from edge_agent.target import HttpTarget, Target, target_url
from wire import Welcome

if TYPE_CHECKING:  # imported when an app is served (it imports websockets: RSS)
    from edge_agent.asgi import AsgiTarget

F = TypeVar("F", bound=Callable[..., Any])


def relay_options(func: F) -> F:
    """``--relay``, ``--token`` and the TLS flags (values None when not given)."""
    options = [
        click.option(
            "--relay",
            metavar="URL",
            multiple=True,
            help="Relay base URL [env: EDGE_RELAY_URL]; repeat it (or separate with commas) "
            "for a relay cluster: the agent moves to the next when one fails.",
        ),
        click.option(
            "--token",
            metavar="TOKEN",
            help="Relay token [env: EDGE_RELAY_TOKEN; or token in the 0600 config file]. "
            "A flag shows in ps: prefer those.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return tls_options(func)


def keepalive_options(func: F) -> F:
    """``--ping-interval`` and ``--ping-timeout`` of the tunnel (None when not given)."""
    options = [
        click.option(
            "--ping-interval",
            type=float,
            metavar="SECONDS",
            help="Tunnel keepalive ping interval (default 20).",
        ),
        click.option(
            "--ping-timeout",
            type=float,
            metavar="SECONDS",
            help="Drop the tunnel when a ping is unanswered this long (default 20).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


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
    "start": "edge_agent.start:start",
    "tcp": "edge_agent.raw_cli:tcp",
    "tls": "edge_agent.raw_cli:tls",
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
    app_dir: str | None = None,
) -> tuple[StreamTarget, str, AsgiTarget | None]:
    """Where streams go for a port/URL or a ``module:attr`` app, its label for output,
    and the app's target (to start its lifespan) if it is an app.

    The app's module is imported from ``app_dir`` (default: the current folder), as
    uvicorn's ``--app-dir``; ConfigError if that is not a folder.
    """
    if app:
        from edge_agent.asgi import AsgiTarget

        _importable_from(app_dir)
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


def _importable_from(app_dir: str | None) -> None:
    folder = os.path.abspath(app_dir) if app_dir else os.getcwd()
    if not os.path.isdir(folder):
        raise ConfigError(f"--app-dir {app_dir}: no such folder")
    if folder not in sys.path:
        sys.path.insert(0, folder)


def object_target(target: str | None, app: str | None) -> tuple[Target, str]:
    """An object Target (for wrappers such as the Molecule ones) and its label."""
    if app:
        from edge_agent.asgi import AsgiTarget

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
    """Prints the public URL(s) on each new WELCOME (host-routed first, for the web; the
    path-routed one second, for A2A) and one line per finished request, which starts
    with the local time of day (``14:02:11 GET / 200 7 ms 682 B``).

    Request lines are written once per loop turn, not flushed one by one: under load a
    flush (a system call) per request was a tenth of the agent's CPU. The time of day
    is put before the lines of one write then, not read for each request.
    """

    #: Written before each line's time of day (``edge-agent start``: ``[tunnel] ``).
    prefix = ""

    def __init__(self, label: str) -> None:
        self.label = label
        self.inspector: str | None = None
        self._shown: tuple[str, ...] = ()
        self._pending: list[str] = []
        self._retried = False  # a reconnect was announced: say when it is back
        self._clock_second = 0
        self._clock_text = ""

    def _clock(self) -> str:
        """The local time of day, ``HH:MM:SS``, formatted once per second."""
        now = int(time.time())
        if now != self._clock_second:
            self._clock_second = now
            self._clock_text = time.strftime("%H:%M:%S", time.localtime(now))
        return self._clock_text

    def _emit(self, line: str) -> None:
        """Print ``line`` (without the time of day) at the end of this loop turn."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(line)

    def _flush(self) -> None:
        lines, self._pending = self._pending, []
        head = f"{self.prefix}{self._clock()} "
        out = sys.stdout
        out.write("".join([f"{head}{line}\n" for line in lines]))
        out.flush()

    def ready(self, welcome: Welcome) -> None:
        # A takeover is news on the first WELCOME only: after a reconnect, the session
        # replaced is most likely this agent's own, which the relay had not seen die.
        if welcome.replaced is not None and not self._shown:
            self._emit(replaced_note(welcome))
        if welcome.pool and not self._shown:
            self._emit(f"Joined the pool of {welcome.name} ({welcome.pool} agents)")
        if welcome.urls != self._shown:
            self._shown = welcome.urls
            self.forwarding(*web_first(welcome.urls))
        elif self._retried:
            self._emit("Reconnected: the tunnel is up again")
        self._retried = False

    def resumed(self, detail: str) -> None:
        """The new connection carried the session on: nothing in flight was lost."""
        self._retried = False
        self._emit(f"{detail[:1].upper()}{detail[1:]}")

    def retrying(self, delay: float, error: BaseException | None) -> None:
        """A reconnect was scheduled: say so, and why (the URL usually comes back)."""
        self._retried = True
        why = _printable(str(error))[:200] if error is not None else "the session ended"
        self._emit(f"Tunnel down ({why}); reconnecting in {delay:.0f} s")

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
            f"{record.method} {target} {outcome or 'NO_STATUS'} "
            f"{record.duration_ms:.0f} ms {record.bytes_out} B"
        )
        if record.error:  # why, on the same line: "TARGET_ERROR 65 ms" alone says nothing
            line += f" ({_printable(record.error)[:200]})"
        self._emit(line)


def _printable(text: str) -> str:
    """Escape bytes >= 0x7f so a request target cannot drive the terminal."""
    if text.isascii():
        return text
    return text.encode("latin-1", "replace").decode("ascii", "backslashreplace")
