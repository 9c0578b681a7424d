"""``edge-agent start web api`` (or ``--all``): the config file's tunnels in one process.

Tunnels that go to the same relay with the same connection settings share one
connection (:mod:`edge_agent.shared`, docs/protocol.md section 10.5), up to 17 on one; a
tunnel alone keeps a connection of its own, as ``edge-agent http`` does. Each has its
own target; they share the process, its event loop and its Ctrl-C. Every line a tunnel
prints starts with its label: ``[web] Forwarding https://relay.example/a/web/ ->
http://127.0.0.1:8001``, then ``[web] GET / 200 3 ms 120 B``.

A tunnel the relay refuses, or that fails for good later (its token revoked, its name
taken over), is reported with its label and the others go on. When a connection has no
tunnel left, its error stops the others and the process, prefixed by the label of the
tunnel that failed last and with its exit code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import click

from edge_agent import __version__, caller_auth
from edge_agent.agent_key import machine_key
from edge_agent.cli import tunnel_client
from edge_agent.config import default_config, default_path
from edge_agent.console import RequestLines, Stopper, make_target, output_options, tls_options
from edge_agent.errors import AgentError, ConfigError
from edge_agent.logs import setup_logging
from edge_agent.multi import TunnelSpec, read_tunnels, resolve_tunnels, select
from edge_agent.runner import on_stop_signals, run_main
from edge_agent.session import DRAIN_TIMEOUT
from edge_agent.shared import PER_CONNECTION, Member, SharedClient
from edge_agent.tunnel import TunnelClient


class TunnelLines(RequestLines):
    """:class:`RequestLines` whose every line starts with the tunnel's ``[label]``."""

    def __init__(self, tag: str) -> None:
        super().__init__("")
        self.tag = tag
        self.prefix = f"[{tag}] "

    def forwarding(self, *urls: str) -> None:
        for url in urls:
            click.echo(f"[{self.tag}] Forwarding {url} -> {self.label}")


class Fleet:
    """The tunnels of one process, drained or stopped together (a :class:`Drainable`)."""

    def __init__(self, clients: Sequence[TunnelClient]) -> None:
        self.clients = list(clients)

    async def drain(self, deadline: float = DRAIN_TIMEOUT) -> None:
        await asyncio.gather(*(client.drain(deadline) for client in self.clients))

    def stop(self) -> None:
        for client in self.clients:
            client.stop()


@click.command()
@click.argument("tunnels", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Start every tunnel of the file.")
@click.option("--relay", metavar="URL", help="Relay base URL for tunnels that set none.")
@click.option(
    "--proxy",
    metavar="URL",
    help="HTTP CONNECT or SOCKS5 proxy to the relay (default: HTTPS_PROXY, ALL_PROXY).",
)
@tls_options
@output_options
@click.version_option(__version__, prog_name="edge-agent")
def start(tunnels: tuple[str, ...], everything: bool, config: str | None, **flags: Any) -> None:
    """Start the config file's [tunnels.NAME] tables named (or --all) in one process.

    The file is --config, else ~/.config/edge-agent/config.toml. Every line a tunnel
    prints starts with its [NAME]. Ctrl-C drains all of them; a second Ctrl-C exits.
    """
    path = config or default_config()
    try:
        if path is None:
            raise ConfigError(f"no config file: pass --config FILE or write {default_path()}")
        file = read_tunnels(path)
        specs = resolve_tunnels(file, select(file, tunnels, everything), flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    verbose = int(flags.get("verbose") or file.top.get("verbose") or 0)
    log_format = str(flags.get("log_format") or file.top.get("log_format") or "text")
    setup_logging(verbose, "json" if log_format == "json" else "text")
    sys.exit(run_main(serve_tunnels(specs)))


async def serve_tunnels(specs: Sequence[TunnelSpec]) -> None:
    """Run every tunnel until all are drained or stopped, or one fails for good."""
    members: list[Member] = []
    apps = []
    try:
        for spec in specs:
            member, app = _member(spec)
            members.append(member)
            apps += [app] if app is not None else []
        clients = _clients(specs, members)
        fleet = Fleet([client for client, _ in clients])
        on_stop_signals(Stopper(fleet).signal)
        for app in apps:
            await app.start()
        await _run_all(fleet, [label for _, label in clients])
    finally:
        for member in members:
            await member.target.aclose()


def _member(spec: TunnelSpec) -> tuple[Member, Any]:
    settings = spec.settings
    lines = TunnelLines(spec.label)
    target, label, app = make_target(
        settings.target,
        settings.app,
        lines.request,
        host_header=settings.host_header,
        target_ca=settings.target_ca,
        target_insecure=settings.target_insecure,
        app_dir=settings.app_dir,
    )
    lines.label = label
    auth = tuple(caller_auth.parse(text) for text in settings.caller_auth)
    return Member(spec.label, settings.name, settings.token, auth, target, lines), app


def _connection(spec: TunnelSpec) -> tuple[object, ...]:
    """What tunnels must have in common to share a connection. A pooled tunnel keeps its
    own: a HELLO's ``pool`` is for its first name only."""
    s = spec.settings
    if s.pool:
        return ("pool", spec.label)
    return (s.relay, s.ca_file, s.insecure, s.pin_sha256, s.ping_interval, s.ping_timeout, s.proxy)


def _clients(
    specs: Sequence[TunnelSpec], members: Sequence[Member]
) -> list[tuple[TunnelClient, str]]:
    """One client per connection (and the label of its first tunnel): tunnels grouped by
    :func:`_connection`, in file order."""
    groups: dict[tuple[object, ...], list[tuple[TunnelSpec, Member]]] = {}
    for spec, member in zip(specs, members, strict=True):
        groups.setdefault(_connection(spec), []).append((spec, member))
    clients = []
    for group in groups.values():
        for start in range(0, len(group), PER_CONNECTION):
            chunk = group[start : start + PER_CONNECTION]
            clients.append((_client(chunk), chunk[0][0].label))
    return clients


def _client(group: Sequence[tuple[TunnelSpec, Member]]) -> TunnelClient:
    spec, first = group[0]
    client = tunnel_client(spec.settings, first.target, first.lines, spec.label)
    if len(group) == 1:
        return client
    options = client.options
    if any(other.settings.token is None for other, _ in group):  # open mode: prove the names
        options = dataclasses.replace(options, agent_key=machine_key())
    return SharedClient(
        client.relay_url, [member for _, member in group], options=options, agent=client.agent
    )


async def _run_all(fleet: Fleet, labels: Sequence[str]) -> None:
    """Wait for every client's run; the first fatal error stops the rest and is raised,
    its message prefixed with its tunnel's label (its class, so the exit code, kept)."""
    tasks = [asyncio.ensure_future(client.run()) for client in fleet.clients]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    failed = next((t for t in tasks if t.done() and t.exception() is not None), None)
    if failed is None:
        return
    fleet.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    error = failed.exception()
    assert error is not None
    if isinstance(error, AgentError):
        client = fleet.clients[tasks.index(failed)]
        label = client.failed if isinstance(client, SharedClient) else None
        error.args = (f"[{label or labels[tasks.index(failed)]}] {error}",)
    raise error
