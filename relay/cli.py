"""``edge-relay``: serve the relay, manage agent tokens, make development certificates,
check a setup (``doctor``).

Settings come from flags, then ``EDGE_RELAY_*`` environment variables, then a TOML file
(``--config FILE``, keys named like the flags: ``port = 8443``, ``public-url = "..."``,
``state-dir = "..."``), then built-in defaults; the first that gives a value wins.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import sys
import tomllib
from pathlib import Path
from typing import Any, Final

import click

from relay import config as cfg
from relay.cluster.options import cluster_url_option, serve_options
from relay.doctor import MIN_DAYS
from relay.errors import RelayConfigError
from wire.resume import MAX_GRACE

log = logging.getLogger(__name__)

_SERVE_KEYS: Final = frozenset(
    {
        "host",
        "port",
        "public_url",
        "domain",
        "state_dir",
        "open",
        "tls_cert",
        "tls_key",
        "max_body",
        "max_streams",
        "response_timeout",
        "drain_timeout",
        "resume_grace",
        "ping_interval",
        "ping_timeout",
        "trusted_proxy",
        "min_body_rate",
        "max_client_streams",
        "metrics_token",
        "metrics_per_tunnel",
        "tcp_ports",
        "cluster",
        "node_url",
    }
)
_GLOBAL_KEYS: Final = frozenset({"verbose", "log_format"})
_DOCTOR_KEYS: Final = frozenset({"public_url", "domain", "state_dir"})
_PARAM: Final = {"open": "open_mode"}  # file key -> click parameter name
_UNITS: Final = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
}


class ByteSize(click.ParamType):  # type: ignore[type-arg]
    """A byte count: ``1048576``, ``64KiB``, ``10MB``, ``1GiB``."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]i?)?[bB]?\s*", str(value))
        if not match:
            self.fail(f"{value!r} is not a size (e.g. 1048576, 64KiB, 1GiB)", param, ctx)
        unit = (match.group(2) or "").lower()
        return int(match.group(1)) * _UNITS[unit]


class Domain(click.ParamType):  # type: ignore[type-arg]
    """A wildcard domain for host routing: ``tunnels.example.com``, ``localhost``."""

    name = "domain"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return cfg.check_domain(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class PortRange(click.ParamType):  # type: ignore[type-arg]
    """``--tcp-ports``: ``30000-30099``."""

    name = "range"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            return cfg.check_port_range(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Eager callback: turn the TOML file into click's default_map (below env and flags)."""
    if not value:
        return value
    try:
        raw = tomllib.loads(Path(value).read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"cannot read {value}: {exc}") from exc
    flat = {str(k).replace("-", "_"): v for k, v in raw.items()}
    unknown = set(flat) - _SERVE_KEYS - _GLOBAL_KEYS
    if unknown:
        raise click.BadParameter(f"unknown keys in {value}: {', '.join(sorted(unknown))}")
    serve = {_PARAM.get(k, k): v for k, v in flat.items() if k in _SERVE_KEYS | _GLOBAL_KEYS}
    state = {k: v for k, v in flat.items() if k in ("state_dir", "cluster")}
    tokens = {"issue": state, "list": state, "revoke": state}
    doctor = {k: v for k, v in flat.items() if k in _DOCTOR_KEYS}
    ctx.default_map = {
        **(ctx.default_map or {}),
        **{k: v for k, v in flat.items() if k in _GLOBAL_KEYS},
        "serve": serve,
        "token": tokens,
        "doctor": doctor,
    }
    # Given after a subcommand (``edge-relay token list --config F``): that command's part.
    for command, part in (("serve", serve), ("doctor", doctor), *tokens.items()):
        if ctx.info_name == command:
            ctx.default_map = part
    return value


def _common(func: Any) -> Any:
    """--config, -v and --log-format, accepted before or after the subcommand."""
    func = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        envvar="EDGE_RELAY_LOG_FORMAT",
        help="Log line format on stderr.  [default: text]",
    )(func)
    func = click.option(
        "-v", "--verbose", count=True, help="More logging (-vv: also WebSocket handshakes)."
    )(func)
    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=_load_config,
        envvar="EDGE_RELAY_CONFIG",
        help="TOML file with the same keys as the flags.",
    )(func)


def _config_option(func: Any) -> Any:
    """``--config`` after a subcommand that takes no other global option."""
    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=_load_config,
        help="TOML file with the same keys as the flags (here: state-dir).",
    )(func)


def _version() -> str:
    try:
        return importlib.metadata.version("molecule-edge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(_version(), prog_name="edge-relay")
@_common
@click.pass_context
def main(ctx: click.Context, verbose: int, log_format: str | None) -> None:
    """The molecule-edge relay: public URLs for agents behind NAT."""
    ctx.obj = {"verbose": verbose, "log_format": log_format or "text"}


def _state_dir_option(func: Any) -> Any:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="EDGE_RELAY_STATE_DIR",
        default=cfg.default_state_dir,
        show_default="$XDG_STATE_HOME/edge-relay",
        help="Folder of the token store (0700).",
    )(func)


@main.command()
@click.option("--host", envvar="EDGE_RELAY_HOST", default="127.0.0.1", help="Address to bind.")
@click.option("--port", envvar="EDGE_RELAY_PORT", type=int, default=8080, help="Port to bind.")
@click.option(
    "--public-url",
    envvar="EDGE_RELAY_PUBLIC_URL",
    help="Base URL the relay advertises.  [default: http(s)://HOST:PORT]",
)
@click.option(
    "--domain",
    envvar="EDGE_RELAY_DOMAIN",
    type=Domain(),
    help="Wildcard domain: <name>.DOMAIN routes to tunnel <name>.  [default: localhost "
    "for a relay on loopback (no public URL elsewhere), else none]",
)
@_state_dir_option
@click.option(
    "--open",
    "open_mode",
    is_flag=True,
    envvar="EDGE_RELAY_OPEN",
    help="Development only: agents may claim free names without a token.",
)
@click.option(
    "--tls-cert",
    envvar="EDGE_RELAY_TLS_CERT",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM certificate chain: serve HTTPS/WSS.",
)
@click.option(
    "--tls-key",
    envvar="EDGE_RELAY_TLS_KEY",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM private key of --tls-cert.",
)
@click.option(
    "--max-body",
    envvar="EDGE_RELAY_MAX_BODY",
    type=ByteSize(),
    default=cfg.DEFAULT_MAX_REQUEST_BODY,
    help="Largest request body (413 beyond).",
)
@click.option(
    "--min-body-rate",
    envvar="EDGE_RELAY_MIN_BODY_RATE",
    type=click.IntRange(0),
    default=cfg.DEFAULT_MIN_BODY_RATE,
    help="Bytes/s a request body must average over 30 s (408 below; 0: no minimum).",
)
@click.option(
    "--max-client-streams",
    envvar="EDGE_RELAY_MAX_CLIENT_STREAMS",
    type=click.IntRange(1, 65536),
    default=cfg.DEFAULT_MAX_CLIENT_STREAMS,
    help="Requests one caller address may have in flight per tunnel (429 beyond).",
)
@click.option(
    "--trusted-proxy",
    envvar="EDGE_RELAY_TRUSTED_PROXY",
    multiple=True,
    metavar="CIDR",
    help="A front proxy (Caddy, a load balancer) whose X-Forwarded-*/Forwarded are kept "
    "and appended to; repeatable. Default: none, the caller's own are dropped.",
)
@click.option(
    "--max-streams",
    envvar="EDGE_RELAY_MAX_STREAMS",
    type=click.IntRange(1, 65536),
    default=cfg.DEFAULT_MAX_STREAMS,
    help="Concurrent requests per agent (429 beyond).",
)
@click.option(
    "--response-timeout",
    envvar="EDGE_RELAY_RESPONSE_TIMEOUT",
    type=click.FloatRange(min=0.1),
    default=cfg.DEFAULT_RESPONSE_TIMEOUT,
    help="Seconds to wait for a response head (504 beyond).",
)
@click.option(
    "--drain-timeout",
    envvar="EDGE_RELAY_DRAIN_TIMEOUT",
    type=click.FloatRange(min=0),
    default=cfg.DEFAULT_DRAIN_TIMEOUT,
    help="Seconds in-flight requests get on shutdown.",
)
@click.option(
    "--resume-grace",
    envvar="EDGE_RELAY_RESUME_GRACE",
    type=click.IntRange(min=0, max=MAX_GRACE),
    default=cfg.DEFAULT_RESUME_GRACE,
    help="Seconds a dropped agent session is kept for it to resume (0: never).",
)
@click.option(
    "--ping-interval",
    envvar="EDGE_RELAY_PING_INTERVAL",
    type=click.FloatRange(min=1),
    default=cfg.WS_PING_INTERVAL,
    help="Seconds between WebSocket pings to each agent.",
)
@click.option(
    "--ping-timeout",
    envvar="EDGE_RELAY_PING_TIMEOUT",
    type=click.FloatRange(min=1),
    default=cfg.WS_PING_TIMEOUT,
    help="Drop an agent whose pong is this late (503 for its name after).",
)
@click.option(
    "--metrics-token",
    envvar="EDGE_RELAY_METRICS_TOKEN",
    help="/_edge/metrics answers 401 without 'Authorization: Bearer TOKEN'.  [default: open]",
)
@click.option(
    "--metrics-per-tunnel",
    envvar="EDGE_RELAY_METRICS_PER_TUNNEL",
    type=click.IntRange(0),
    default=cfg.DEFAULT_METRICS_PER_TUNNEL,
    help="Per-tunnel metric series while at most this many tunnels (0: none).",
)
@click.option(
    "--tcp-ports",
    envvar="EDGE_RELAY_TCP_PORTS",
    type=PortRange(),
    metavar="FIRST-LAST",
    help="Ports for raw TCP tunnels (edge-agent tcp), e.g. 30000-30099.  [default: none]",
)
@serve_options
@_common
@click.pass_context
def serve(ctx: click.Context, /, **opts: Any) -> None:
    """Run the relay until SIGTERM/SIGINT, then drain and exit."""
    from relay import logs, server

    verbose = max(opts.pop("verbose"), ctx.obj["verbose"])
    logs.configure(verbose, opts.pop("log_format") or ctx.obj["log_format"])
    settings = cfg.Settings(
        host=opts["host"],
        port=opts["port"],
        public_url=opts["public_url"],
        domain=opts["domain"],
        state_dir=Path(opts["state_dir"]),
        open_mode=opts["open_mode"],
        tls_cert=opts["tls_cert"],
        tls_key=opts["tls_key"],
        max_request_body=opts["max_body"],
        max_streams=opts["max_streams"],
        response_timeout=opts["response_timeout"],
        drain_timeout=opts["drain_timeout"],
        resume_grace=opts["resume_grace"],
        ws_ping_interval=opts["ping_interval"],
        ws_ping_timeout=opts["ping_timeout"],
        trusted_proxies=tuple(opts["trusted_proxy"]),
        min_body_rate=opts["min_body_rate"],
        max_client_streams=opts["max_client_streams"],
        metrics_token=opts["metrics_token"] or None,
        metrics_per_tunnel=opts["metrics_per_tunnel"],
        tcp_ports=opts["tcp_ports"],
        cluster=opts["cluster"],
        node_url=opts["node_url"],
    )
    if settings.open_mode:
        click.echo(
            "WARNING: open mode: any agent may claim a free name without a token. "
            "Use it for local development only.",
            err=True,
        )
        log.warning("open_mode", extra={"detail": "agents may claim free names without a token"})
    if settings.public_url is None and settings.host in ("0.0.0.0", "::"):
        log.warning(
            "public_url_unset",
            extra={"detail": "agents get URLs on a wildcard address; set --public-url"},
        )
    try:
        server.serve(settings)
    except RelayConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def token() -> None:
    """Issue, list and revoke agent tokens (the store keeps only their SHA-256)."""


def _store(state_dir: Path, cluster: str | None) -> Any:
    if cluster is not None:
        from relay.cluster.tokens import CliTokens

        return CliTokens(cluster)
    from relay.tokens import TokenStore

    return TokenStore(Path(state_dir))


@token.command("issue")
@_config_option
@click.argument("name")
@_state_dir_option
@click.option("--replace", is_flag=True, help="Rotate: replace NAME's existing token.")
@click.option("--tcp", is_flag=True, help="It may also open raw TCP tunnels (edge-agent tcp).")
@click.option(
    "--tls", is_flag=True, help="It may also open TLS passthrough tunnels (edge-agent tls)."
)
@click.option(
    "--pool", is_flag=True, help="Several agents may serve NAME at once (edge-agent http --pool)."
)
@cluster_url_option
def token_issue(
    name: str,
    state_dir: Path,
    replace: bool,
    tcp: bool,
    tls: bool,
    pool: bool,
    cluster: str | None,
) -> None:
    """Print a new token for NAME on stdout (it is shown only this once).

    A token opens HTTP tunnels; --tcp and --tls add raw TCP and TLS passthrough, which
    the relay cannot guard with caller auth (see docs/security.md); --pool lets several
    agents serve NAME at once (the relay spreads requests over them).
    """
    from wire import StreamKind

    allowed = {StreamKind.HTTP} | ({StreamKind.TCP} if tcp else set())
    allowed |= {StreamKind.TLS} if tls else set()
    try:
        store = _store(state_dir, cluster)
        secret = store.issue(name, replace=replace, kinds=frozenset(allowed), pool=pool)
    except RelayConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"token for {name} (shown once; only its hash is stored):", err=True)
    click.echo(secret)


@token.command("list")
@_config_option
@_state_dir_option
@cluster_url_option
def token_list(state_dir: Path, cluster: str | None) -> None:
    """List tunnel names that have a token: creation time, tunnel kinds, TCP port, pool."""
    from wire.payloads import TUNNEL_NAMES

    try:
        records = _store(state_dir, cluster).records()
    except RelayConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    for record in records:
        kinds = ",".join(sorted(TUNNEL_NAMES[k] for k in record.kinds))
        port = f"\ttcp_port={record.tcp_port}" if record.tcp_port is not None else ""
        pool = "\tpool" if record.pool else ""
        click.echo(f"{record.name}\t{record.created}\t{kinds}{port}{pool}")


@token.command("revoke")
@_config_option
@click.argument("name")
@_state_dir_option
@cluster_url_option
def token_revoke(name: str, state_dir: Path, cluster: str | None) -> None:
    """Delete NAME's token; a running relay closes that agent's session within seconds."""
    try:
        removed = _store(state_dir, cluster).revoke(name)
    except RelayConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if not removed:
        raise click.ClickException(f"{name} has no token")
    click.echo(f"revoked the token for {name}", err=True)


@main.command()
@click.option(
    "--public-url",
    envvar="EDGE_RELAY_PUBLIC_URL",
    required=True,
    help="The relay's public URL (as for serve).",
)
@click.option(
    "--domain", envvar="EDGE_RELAY_DOMAIN", type=Domain(), help="Wildcard domain (as for serve)."
)
@_state_dir_option
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM CA to verify the certificates with.  [default: the system's]",
)
@click.option("--test-name", help="Tunnel name for the on-demand certificate check.")
@click.option(
    "--min-days",
    type=click.FloatRange(min=0),
    default=MIN_DAYS,
    help="Certificates must stay valid this many more days.",
)
def doctor(
    public_url: str,
    domain: str | None,
    state_dir: Path,
    ca_file: Path | None,
    test_name: str | None,
    min_days: float,
) -> None:
    """Check this relay's setup: DNS, reachability, certificates, state folder, tokens."""
    from relay import doctor as checks

    setup = checks.Setup(public_url, domain, Path(state_dir), ca_file, test_name, min_days)
    if not checks.report(checks.run_checks(setup), click.echo):
        sys.exit(1)


@main.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for ca.pem, cert.pem, key.pem.",
)
@click.option(
    "--host", "hosts", multiple=True, required=True, help="DNS name or IP address (repeatable)."
)
def cert(out: Path, hosts: tuple[str, ...]) -> None:
    """Write a development CA and a server certificate for --host names."""
    from relay.certs import write_dev_certificate

    try:
        fingerprint = write_dev_certificate(out, list(hosts))
    except RelayConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"wrote {out}/cert.pem, {out}/key.pem (0600) and {out}/ca.pem (for agents)", err=True
    )
    click.echo(f"sha256 fingerprint: {fingerprint}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
