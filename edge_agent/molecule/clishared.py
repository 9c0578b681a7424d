"""What the Molecule commands share: the platform flags, settings and logging, one
client per command, and the one mapping of platform errors to messages and exit codes
(:func:`describe`, :func:`exit_code`). The exit codes below add to the common ones of
:mod:`edge_agent.runner` (0 ok, 1 error, 2 bad settings, 3 relay token refused, 4
tunnel name taken).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

import click

from edge_agent.config import load_file
from edge_agent.errors import ConfigError
from edge_agent.logs import setup_logging
from edge_agent.molecule.client import PlatformClient
from edge_agent.molecule.errors import (
    BadRequest,
    CallDenied,
    CallQueued,
    CallTimedOut,
    ChildCrashLoop,
    ChildStartError,
    MoleculeError,
    PeerError,
    PeerNotFound,
    PeerUnreachable,
    PlatformRejected,
    PluginError,
    TokenRejected,
    TokenStoreError,
    WorkspaceDeleted,
)
from edge_agent.molecule.settings import SECTION, PlatformSettings, resolve_platform
from edge_agent.molecule.tokens import TokenStore
from edge_agent.runner import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, run_main
from edge_agent.tls import TlsOptions, client_context

#: The platform refused the workspace: deleted, or its token revoked / wrong. (The
#: other exit codes are in :mod:`edge_agent.runner`; a command that exited for good
#: ends ``run`` with its own code.)
EXIT_PLATFORM: Final = 5
#: A plugin was not installed (refused archive, sha256 mismatch); nothing changed.
EXIT_PLUGIN: Final = 6
#: ``plugin install --run-setup``: installed, but its setup.sh failed.
EXIT_SETUP_FAILED: Final = 7

#: ``edge-agent call``: the platform's answers that are not the peer's reply.
EXIT_CALL_QUEUED: Final = 10  # queued (202, or "next"'s 200 queued): no answer now
EXIT_CALL_DENIED: Final = 11  # 403: the hierarchy rules forbid the call
EXIT_PEER_NOT_FOUND: Final = 12  # 404: no such workspace
EXIT_PEER_UNREACHABLE: Final = 13  # 502/503: no URL, unreachable, busy, paused
EXIT_CALL_TIMED_OUT: Final = 14  # 504, or no answer within --timeout
EXIT_PEER_ERROR: Final = 15  # the peer answered with an error

_CALL_EXITS: Final = (
    (CallQueued, EXIT_CALL_QUEUED),
    (CallDenied, EXIT_CALL_DENIED),
    (PeerNotFound, EXIT_PEER_NOT_FOUND),
    (PeerUnreachable, EXIT_PEER_UNREACHABLE),
    (CallTimedOut, EXIT_CALL_TIMED_OUT),
    (PeerError, EXIT_PEER_ERROR),
)

F = TypeVar("F", bound=Callable[..., Any])


def platform_options(func: F) -> F:
    """Where the platform is and which workspace we are (values None when not given)."""
    options = [
        click.option("--platform", metavar="URL", help="Platform URL [env: EDGE_PLATFORM_URL]."),
        click.option("--workspace-id", metavar="ID", help="[env: EDGE_WORKSPACE_ID]"),
        click.option(
            "--token",
            metavar="TOKEN",
            help="Workspace token, cached for later runs [env: EDGE_PLATFORM_TOKEN].",
        ),
        click.option(
            "--token-dir",
            type=click.Path(file_okay=False),
            help="Token cache folder (default ~/.molecule) [env: EDGE_TOKEN_DIR].",
        ),
        click.option("--org-id", help="X-Molecule-Org-Id (SaaS) [env: EDGE_ORG_ID]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def platform_tls_options(func: F) -> F:
    """``--ca-file`` and ``--insecure`` for commands that only talk to the platform."""
    options = [
        click.option("--ca-file", type=click.Path(dir_okay=False), help="PEM CA to trust."),
        click.option("--insecure", is_flag=True, default=None, help="Do NOT verify TLS (dev)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_cli(main: Coroutine[Any, Any, int | None]) -> int:
    """Run ``main``; platform errors print one clear line and map to exit codes."""
    result = EXIT_OK

    async def wrapped() -> None:
        nonlocal result
        try:
            result = await main or EXIT_OK
        except MoleculeError as exc:
            click.echo(f"edge-agent: error: {describe(exc)}", err=True)
            result = exit_code(exc)

    code = run_main(wrapped())
    return code if code != EXIT_OK else result


def describe(exc: MoleculeError) -> str:
    """The error's message, with what to do about it."""
    if isinstance(exc, WorkspaceDeleted):
        return f"{exc}; nothing left to serve (create a new workspace to continue)"
    if isinstance(exc, TokenRejected):
        return (
            f"{exc}. Pass a valid workspace token with --token or EDGE_PLATFORM_TOKEN "
            "(an admin can create one: POST /workspaces/<id>/tokens)"
        )
    if isinstance(exc, CallDenied):
        return (
            f"{exc} (the platform answers this also for a workspace that does not exist; "
            "`edge-agent peers` lists the ones this workspace may call)"
        )
    if isinstance(exc, BadRequest) and str(exc).startswith("register:"):
        return (
            f"{exc}. The platform refused the registration; it refuses URLs on loopback "
            "and private addresses, so the relay's public URL must resolve to a public "
            "address (edge-relay serve --public-url)"
        )
    return str(exc)


def exit_code(exc: MoleculeError) -> int:
    for kind, code in _CALL_EXITS:
        if isinstance(exc, kind):
            return code
    if isinstance(exc, ChildCrashLoop):
        return exc.exit_status
    if isinstance(exc, PluginError):
        return EXIT_PLUGIN  # the command's own code, as a shell reports it
    if isinstance(exc, BadRequest | TokenStoreError | ChildStartError):
        return EXIT_CONFIG
    if isinstance(exc, PlatformRejected):
        return EXIT_PLATFORM
    return EXIT_ERROR


async def with_client(
    settings: PlatformSettings,
    main: Callable[[PlatformClient], Coroutine[Any, Any, int | None]],
) -> int | None:
    """Run ``main`` with a client for the workspace; its exit code (None: 0)."""
    try:
        client = PlatformClient(
            settings.platform,
            settings.workspace_id,
            token_store=TokenStore(settings.workspace_id, settings.token_dir),
            token=settings.token,
            org_id=settings.org_id,
            verify=platform_verify(settings),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    async with client:
        return await main(client)


def platform_settings(config: str | None, flags: dict[str, Any]) -> PlatformSettings:
    try:
        settings = resolve_platform(flags, file=load_file(config, SECTION))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    setup(settings)
    return settings


def setup(settings: PlatformSettings) -> None:
    setup_logging(settings.verbose, "json" if settings.log_format == "json" else "text")
    if settings.verbose < 2:  # httpx logs every platform request at INFO: -vv shows them
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if settings.insecure:
        click.echo(
            "WARNING: --insecure: TLS certificates are NOT verified; anyone on the path can "
            "read and change this traffic, tokens included",
            err=True,
        )


def platform_verify(settings: PlatformSettings) -> ssl.SSLContext | bool:
    if not settings.ca_file and not settings.insecure:
        return True  # the system store (httpx also honours SSL_CERT_FILE)
    return client_context(TlsOptions(settings.ca_file, settings.insecure))
