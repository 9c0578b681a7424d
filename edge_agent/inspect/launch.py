"""The inspector's command-line flags and its start and stop.

``edge-agent http`` and ``edge-agent run`` take :func:`inspect_options` and run the
agent inside :func:`running`: it starts the server (127.0.0.1:4040 by default, the next
free port when that one is taken), installs the Recorder on the data path
(:mod:`~edge_agent.inspect.tap`) and prints the inspector's URL; on the way out it
uninstalls and closes everything. With ``--no-inspect`` nothing is imported beyond
this module and nothing runs.

The inspector never stops the agent: if its address cannot be bound, a warning says
why and the tunnel runs without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
from collections.abc import AsyncIterator, Callable, Iterable, MutableMapping
from typing import Any, Final, TypeVar

import click

from edge_agent.target import HttpTarget, Target

#: The default address, as ngrok's (the next free port is taken when it is in use).
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 4040

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True, slots=True)
class InspectSettings:
    enabled: bool = True
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    search: bool = True  # try the next ports when ``port`` is taken (the default address)
    reveal: bool = False
    keep: int = 500
    body_limit: int = 1024 * 1024


def inspect_options(func: F) -> F:
    """``--inspect ADDR``, ``--no-inspect``, ``--inspect-reveal``, ``--inspect-keep``,
    ``--inspect-body-limit``; read them back with :func:`take_settings`."""
    options = [
        click.option(
            "--inspect",
            "inspect_addr",
            metavar="ADDR",
            help="Inspector address, loopback only (default 127.0.0.1:4040 or the next free).",
        ),
        click.option("--no-inspect", is_flag=True, default=None, help="No inspector."),
        click.option(
            "--inspect-reveal",
            is_flag=True,
            default=None,
            help="Show secrets (Authorization, cookies, secret values) in the inspector.",
        ),
        click.option(
            "--inspect-keep",
            type=click.IntRange(min=1),
            metavar="N",
            help="Exchanges the inspector keeps (500).",
        ),
        click.option(
            "--inspect-body-limit",
            type=click.IntRange(min=0),
            metavar="BYTES",
            help="Body bytes kept per request and response (1 MiB); beyond: size only.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def take_settings(flags: MutableMapping[str, Any]) -> InspectSettings:
    """Remove the inspector's flags from ``flags`` and return their settings.

    Raises click.BadParameter for an address that is not on loopback.
    """
    addr = flags.pop("inspect_addr", None)
    off = bool(flags.pop("no_inspect", None))
    reveal = bool(flags.pop("inspect_reveal", None))
    keep = flags.pop("inspect_keep", None)
    body_limit = flags.pop("inspect_body_limit", None)
    settings = InspectSettings(enabled=not off, reveal=reveal)
    if keep is not None:
        settings = dataclasses.replace(settings, keep=keep)
    if body_limit is not None:
        settings = dataclasses.replace(settings, body_limit=body_limit)
    if addr is not None:
        host, port = parse_addr(addr)
        settings = dataclasses.replace(settings, host=host, port=port, search=False)
    return settings


def parse_addr(addr: str) -> tuple[str, int]:
    """``4041``, ``:4041``, ``127.0.0.1:4041``, ``localhost:4041``, ``[::1]:4041``."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        host, port = "", addr
    host = host.strip("[]") or DEFAULT_HOST
    if host == "localhost":
        host = DEFAULT_HOST
    if not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{addr!r}: expected [HOST:]PORT", param_hint="--inspect")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise click.BadParameter(
            f"{host!r}: the inspector listens on a loopback address only",
            param_hint="--inspect",
        )
    return host, int(port)


class Inspector:
    """The running inspector: store, Recorder, replayer and server."""

    def __init__(self, settings: InspectSettings, target: Target) -> None:
        from edge_agent.inspect.observe import Recorder
        from edge_agent.inspect.replay import Replayer
        from edge_agent.inspect.server import InspectorServer
        from edge_agent.inspect.store import Masker, Store

        self.settings = settings
        self.store = Store(settings.keep, settings.body_limit, Masker(settings.reveal))
        self.recorder = Recorder(self.store)
        # Replays get their own connections to a URL target; an app is shared.
        self._own_target = isinstance(target, HttpTarget)
        replay_target = HttpTarget(target.base_url) if isinstance(target, HttpTarget) else target
        self.replay_target: Target = replay_target
        self.replayer = Replayer(self.store, self.recorder, replay_target)
        self.server = InspectorServer(self.store, self.replayer)

    @property
    def url(self) -> str:
        return self.server.url

    def add_secrets(self, values: Iterable[str]) -> None:
        """Mask these values everywhere the inspector shows something."""
        self.store.masker.add_secrets(values)

    async def start(self) -> str:
        """Listen and install the Recorder; returns the URL. Raises OSError."""
        from edge_agent.inspect import tap
        from edge_agent.inspect.server import PORT_SEARCH

        settings = self.settings
        search = PORT_SEARCH if settings.search else 0
        url = await self.server.start(settings.host, settings.port, search)
        tap.install(self.recorder)
        return url

    async def aclose(self) -> None:
        from edge_agent.inspect import tap

        if tap.installed() is self.recorder:
            tap.install(None)
        await self.server.aclose()
        await self.replayer.aclose()
        if self._own_target:
            await self.replay_target.aclose()


@contextlib.asynccontextmanager
async def running(
    settings: InspectSettings | None, target: Target, announce: Callable[[str], None]
) -> AsyncIterator[Inspector | None]:
    """The inspector for ``target`` while the block runs (None when disabled or when it
    could not listen); ``announce`` gets its URL once it listens."""
    if settings is None or not settings.enabled:
        yield None
        return
    inspector = Inspector(settings, target)
    try:
        url = await inspector.start()
    except OSError as exc:
        click.echo(f"WARNING: the inspector is off: cannot listen: {exc}", err=True)
        await inspector.aclose()
        yield None
        return
    announce(url)
    try:
        yield inspector
    finally:
        await inspector.aclose()
