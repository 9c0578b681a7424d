"""``edge-devplatform``: run the dev platform, or edit its database offline.

::

    edge-devplatform serve --host 127.0.0.1 --port 8080 --admin-token T \
        [--generation current|next] [--db FILE] [--plugins-dir DIR]
    edge-devplatform secret set --db FILE WORKSPACE_ID KEY VALUE     (VALUE "-": read stdin)

``serve`` prints one line, ``edge-devplatform listening on http://HOST:PORT``, once it
accepts connections (with ``--port 0`` that is how a caller learns the port), and
stops cleanly on SIGINT or SIGTERM. The admin token can come from
``EDGE_DEVPLATFORM_ADMIN_TOKEN`` so it does not show in the process list.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import click

from devplatform import __version__, logs
from devplatform.app import start_server
from devplatform.config import (
    A2A_AGENT_CEILING_SECONDS,
    A2A_IDLE_TIMEOUT_SECONDS,
    CANVAS_SYNC_WAIT_SECONDS,
    LIVENESS_TTL_SECONDS,
    PLUGIN_MAX_BYTES,
    Generation,
    PlatformConfig,
    ProxyLimits,
)
from devplatform.cors import parse_origins
from devplatform.db import Database, is_uuid
from devplatform.errors import ConfigError, DevPlatformError
from devplatform.secretstore import SecretRepo
from devplatform.workspaces import WorkspaceRepo

CONFIG_EXIT = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-devplatform")
@click.option("-v", "--verbose", count=True, help="More logging (-v: debug and access log).")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def main(ctx: click.Context, verbose: int, log_format: str) -> None:
    """A local stand-in for the Molecule platform's remote-workspace API."""
    ctx.obj = {"verbose": verbose, "log_format": log_format}
    logs.configure(verbose, log_format)


def _seconds(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter("must be greater than 0")
    return value


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="0: any free port.",
)
@click.option(
    "--admin-token",
    envvar="EDGE_DEVPLATFORM_ADMIN_TOKEN",
    required=True,
    help="ADMIN_TOKEN of the platform.",
)
@click.option(
    "--generation", type=click.Choice(["current", "next"]), default="current", show_default=True
)
@click.option(
    "--db",
    "db_path",
    default=":memory:",
    show_default=True,
    help="SQLite file; state survives restarts.",
)
@click.option("--saas", is_flag=True, help="SaaS mode: agent URLs in RFC 1918 / fd00::/8 allowed.")
@click.option(
    "--platform-url", default="", help="Public URL shown in create answers (EXTERNAL_PLATFORM_URL)."
)
@click.option(
    "--dispatch-localhost/--no-dispatch-localhost",
    default=True,
    show_default=True,
    help="Let the A2A proxy call http://localhost:... "
    "(the real platform needs MOLECULE_ENV=development for that).",
)
@click.option(
    "--liveness-ttl", type=float, default=LIVENESS_TTL_SECONDS, show_default=True, callback=_seconds
)
@click.option(
    "--a2a-idle-timeout",
    type=float,
    default=A2A_IDLE_TIMEOUT_SECONDS,
    show_default=True,
    callback=_seconds,
    help="Silence (no heartbeat) after which an A2A call is queued.",
)
@click.option(
    "--a2a-timeout",
    type=float,
    default=A2A_AGENT_CEILING_SECONDS,
    show_default=True,
    callback=_seconds,
    help="Ceiling of an A2A call from an agent caller.",
)
@click.option(
    "--a2a-connect-timeout", type=float, callback=_seconds, help="Default: 30 (current), 10 (next)."
)
@click.option(
    "--a2a-header-timeout", type=float, callback=_seconds, help="next only; default 1800."
)
@click.option(
    "--canvas-sync-wait",
    type=float,
    default=CANVAS_SYNC_WAIT_SECONDS,
    show_default=True,
    callback=_seconds,
    help="next only: canvas callers get push-async after this.",
)
@click.option(
    "--cors-origins",
    envvar="CORS_ORIGINS",
    default="",
    help="Comma-separated browser origins allowed besides the platform's own "
    "(default http://localhost:3000,http://localhost:3001); any other Origin gets 403.",
)
@click.option(
    "--plugins-dir",
    type=click.Path(file_okay=False, exists=True),
    help="Folder of local:// plugins, one folder per plugin (DIR/NAME/plugin.yaml).",
)
@click.option(
    "--plugin-max-bytes",
    type=click.IntRange(min=1),
    default=PLUGIN_MAX_BYTES,
    show_default=True,
    help="PLUGIN_INSTALL_MAX_DIR_BYTES: the largest plugin a download sends.",
)
@click.option("-v", "--verbose", count=True, help="Same as edge-devplatform -v.")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Same as on the group.")
@click.pass_context
def serve(
    ctx: click.Context,
    verbose: int,
    log_format: str | None,
    host: str,
    port: int,
    admin_token: str,
    generation: str,
    db_path: str,
    saas: bool,
    platform_url: str,
    dispatch_localhost: bool,
    liveness_ttl: float,
    a2a_idle_timeout: float,
    a2a_timeout: float,
    a2a_connect_timeout: float | None,
    a2a_header_timeout: float | None,
    canvas_sync_wait: float,
    cors_origins: str,
    plugins_dir: str | None,
    plugin_max_bytes: int,
) -> None:
    """Serve the platform API until SIGINT or SIGTERM."""
    if verbose or log_format:
        group = ctx.obj or {}
        logs.configure(
            verbose + group.get("verbose", 0), log_format or group.get("log_format", "text")
        )
    if not admin_token.strip():
        raise click.BadParameter("must not be empty", param_hint="--admin-token")
    cfg = PlatformConfig(
        admin_token=admin_token,
        generation=Generation(generation),
        db_path=db_path,
        saas_mode=saas,
        dispatch_localhost=dispatch_localhost,
        platform_url=platform_url,
        liveness_ttl=liveness_ttl,
        cors_origins=parse_origins(cors_origins),
        plugins_dir=plugins_dir,
        plugin_max_bytes=plugin_max_bytes,
        proxy=ProxyLimits(
            idle_timeout=a2a_idle_timeout,
            agent_ceiling=a2a_timeout,
            connect_timeout=a2a_connect_timeout,
            header_timeout=a2a_header_timeout,
            canvas_sync_wait=canvas_sync_wait,
        ),
    )
    try:
        asyncio.run(_serve(cfg, host, port))
    except ConfigError as exc:
        click.echo(f"edge-devplatform: {exc}", err=True)
        sys.exit(CONFIG_EXIT)


async def _serve(cfg: PlatformConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(signum, stop.set)
    server = await start_server(cfg, host, port, access_log=True)
    click.echo(f"edge-devplatform listening on {server.url} (generation {cfg.generation.value})")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await server.close()


@main.group()
def secret() -> None:
    """Set, list or delete workspace secrets directly in a database file."""


def _open_workspace(db_path: str, workspace_id: str) -> Database:
    if db_path == ":memory:":
        raise click.UsageError("--db must name the server's database file")
    try:
        db = Database(db_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if not is_uuid(workspace_id) or WorkspaceRepo(db).get(workspace_id) is None:
        db.close()
        raise click.ClickException(f"no workspace {workspace_id} in {db_path}")
    return db


@secret.command("set")
@click.option("--db", "db_path", required=True, help="The server's SQLite file.")
@click.argument("workspace_id")
@click.argument("key")
@click.argument("value")
def secret_set(db_path: str, workspace_id: str, key: str, value: str) -> None:
    """Set KEY for WORKSPACE_ID. VALUE "-" reads the value from stdin (keeps it out of ps)."""
    if value == "-":
        value = sys.stdin.read().rstrip("\n")
    if not key or not value:
        raise click.UsageError("KEY and VALUE must not be empty")
    db = _open_workspace(db_path, workspace_id)
    try:
        SecretRepo(db).set(workspace_id, key, value)
    except DevPlatformError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.close()
    click.echo(f"saved {key} for {workspace_id}")


@secret.command("list")
@click.option("--db", "db_path", required=True, help="The server's SQLite file.")
@click.argument("workspace_id")
def secret_list(db_path: str, workspace_id: str) -> None:
    """Print the secret keys WORKSPACE_ID gets (never the values)."""
    db = _open_workspace(db_path, workspace_id)
    try:
        for meta in SecretRepo(db).list_merged(workspace_id):
            click.echo(f"{meta.key}\t{meta.scope}")
    finally:
        db.close()


@secret.command("delete")
@click.option("--db", "db_path", required=True, help="The server's SQLite file.")
@click.argument("workspace_id")
@click.argument("key")
def secret_delete(db_path: str, workspace_id: str, key: str) -> None:
    """Delete KEY of WORKSPACE_ID."""
    db = _open_workspace(db_path, workspace_id)
    try:
        if not SecretRepo(db).delete(workspace_id, key):
            raise click.ClickException(f"no secret {key} for {workspace_id}")
    finally:
        db.close()
    click.echo(f"deleted {key} for {workspace_id}")
