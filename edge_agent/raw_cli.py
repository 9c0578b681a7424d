"""``edge-agent tcp`` and ``edge-agent tls``: a local TCP service, or a local service that
terminates TLS itself, on the relay (:mod:`edge_agent.raw`).

Both print ``Forwarding tcp://RELAYHOST:PUBLICPORT -> HOST:PORT`` (``tls://NAME.DOMAIN``
for TLS) once the relay accepted the tunnel, then one line per connection that ended.
Settings: flags, then ``EDGE_RELAY_URL``/``EDGE_RELAY_TOKEN``, then the ``--config``
file (its ``[tcp]`` or ``[tls]`` table over the top level).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Final

import click

from edge_agent import __version__
from edge_agent.config import ENV, load_file, merge_sources
from edge_agent.connect import ConnectOptions
from edge_agent.console import RequestLines, Stopper, output_options, relay_options
from edge_agent.errors import ConfigError
from edge_agent.logs import setup_logging
from edge_agent.port import ExchangeRecord
from edge_agent.raw import RawForwarder, parse_target
from edge_agent.runner import on_stop_signals, run_main
from edge_agent.tls import TlsOptions
from edge_agent.tunnel import TunnelClient
from wire import StreamKind

#: Keys these commands read from a config file.
KEYS: Final = frozenset(
    {"relay", "token", "name", "ca_file", "insecure", "pin_sha256", "verbose", "log_format"}
)


def _options(func: Any) -> Any:
    func = output_options(func)
    func = click.option("--name", help="Tunnel name (a DNS label); default: the token's name.")(
        func
    )
    func = relay_options(func)
    return click.argument("target")(func)


@click.command()
@_options
def tcp(target: str, config: str | None, **flags: Any) -> None:
    """Forward a public TCP port of the relay to TARGET: PORT (127.0.0.1) or HOST:PORT.

    Replaces ``ngrok tcp 22``: prints ``Forwarding tcp://RELAYHOST:PORT -> HOST:PORT``;
    the name keeps that port across reconnects. The token needs the TCP permission
    (``edge-relay token issue NAME --tcp``).
    """
    sys.exit(_run(StreamKind.TCP, target, config, flags))


@click.command()
@_options
def tls(target: str, config: str | None, **flags: Any) -> None:
    """Forward TLS for NAME.DOMAIN, undecrypted, to TARGET, a server that terminates TLS.

    Replaces ``ngrok tls 8443``: the relay routes by the name callers ask for (SNI) and
    never holds the keys; the local server presents its own certificate. The token
    needs the TLS permission (``edge-relay token issue NAME --tls``).
    """
    sys.exit(_run(StreamKind.TLS, target, config, flags))


def _run(kind: StreamKind, target: str, config: str | None, flags: dict[str, Any]) -> int:
    section = "tcp" if kind is StreamKind.TCP else "tls"
    try:
        file = load_file(config, section)
        unknown = sorted(set(file) - KEYS)
        if unknown:
            raise ConfigError(f"unknown keys in the config file: {', '.join(unknown)}")
        values = merge_sources(KEYS, flags, os.environ, file, ENV)
        if not values["relay"]:
            raise ConfigError("no relay URL: pass --relay or set EDGE_RELAY_URL")
        host, port = parse_target(target)
        tls_options = TlsOptions(values["ca_file"], bool(values["insecure"]), values["pin_sha256"])
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    setup_logging(int(values["verbose"] or 0), values["log_format"] or "text")
    forwarder = RawForwarder(host, port, kind)
    return run_main(_serve(kind, forwarder, values, tls_options))


async def _serve(
    kind: StreamKind, forwarder: RawForwarder, values: dict[str, Any], tls: TlsOptions
) -> None:
    lines = RequestLines(forwarder.label)
    forwarder.on_done = lambda record: click.echo(connection_line(record))
    if tls.insecure:
        click.echo("WARNING: --insecure: the relay's TLS certificate is NOT verified", err=True)
    client = TunnelClient(
        values["relay"],
        values["token"],
        values["name"],
        forwarder,
        options=ConnectOptions(tls=tls),
        agent=f"edge-agent/{__version__}",
        on_ready=lines.ready,
        on_resumed=lines.resumed,
        tunnel=kind,
    )
    on_stop_signals(Stopper(client).signal)
    try:
        await client.run()
    finally:
        await forwarder.aclose()


def connection_line(record: ExchangeRecord) -> str:
    """One line per connection that ended: kind, stream, duration, bytes each way."""
    line = (
        f"{record.method} connection {record.sid} closed {record.duration_ms:.0f} ms "
        f"{record.bytes_in} B in {record.bytes_out} B out"
    )
    if record.error:
        line += f" ({record.error[:200]})"
    return line
