"""``edge-agent plugin install|list``: the workspace's plugins (see
:mod:`edge_agent.molecule.plugins`)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from edge_agent.console import output_options
from edge_agent.molecule.client import PlatformClient
from edge_agent.molecule.clishared import (
    EXIT_SETUP_FAILED,
    platform_options,
    platform_settings,
    platform_tls_options,
    run_cli,
    with_client,
)
from edge_agent.molecule.plugins import (
    SETUP_TIMEOUT,
    InstalledPlugin,
    PluginOptions,
    PluginRequest,
    install_plugin,
    list_plugins,
    plugins_dir,
)
from edge_agent.molecule.tokens import TokenStore
from edge_agent.runner import EXIT_OK


@click.group()
def plugin() -> None:
    """Install the workspace's plugins from the platform, or list the installed ones.

    Plugins go to the workspace's folder (~/.molecule/<id>/plugins/<name>/, as the
    Molecule SDK's). A download is checked (paths, file types, size, count) and
    verified against the sha256 in its plugin.yaml before it replaces the installed
    version; a failed install leaves the old one.
    """


@plugin.command("install")
@click.argument("name")
@click.option("--source", metavar="SOURCE", help="local://NAME (default), github://owner/repo#ref")
@click.option(
    "--run-setup",
    is_flag=True,
    help="Run the plugin's setup.sh (off by default: it is code from the platform).",
)
@click.option(
    "--setup-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=SETUP_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
)
@platform_options
@platform_tls_options
@output_options
def plugin_install(
    config: str | None,
    name: str,
    source: str | None,
    run_setup: bool,
    setup_timeout: float,
    **flags: Any,
) -> None:
    """Download plugin NAME with the workspace token and install it.

    Exit codes: 0 installed, 2 bad settings, 5 the platform refused (the token, an
    unknown plugin or source), 6 the archive was refused or does not match its sha256
    (nothing changed), 7 installed but setup.sh failed.
    """
    settings = platform_settings(config, flags)
    try:
        request = PluginRequest(name, source)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    options = PluginOptions(run_setup=run_setup, setup_timeout=setup_timeout)

    async def main(client: PlatformClient) -> int:
        folder = TokenStore(settings.workspace_id, settings.token_dir).directory
        installed = await install_plugin(client, folder, request, options)
        print_installed(installed)
        return EXIT_SETUP_FAILED if installed.setup and not installed.setup.ok else EXIT_OK

    sys.exit(run_cli(with_client(settings, main)))


@plugin.command("list")
@platform_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@output_options
def plugin_list(config: str | None, as_json: bool, **flags: Any) -> None:
    """List the plugins installed for the workspace (nothing is downloaded)."""
    settings = platform_settings(config, {**flags, "ca_file": None, "insecure": None})
    try:
        folder = TokenStore(settings.workspace_id, settings.token_dir).directory
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    rows = list_plugins(folder)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"No plugins installed in {plugins_dir(folder)}.")
    for row in rows:
        verified = "sha256 verified" if row["sha256"] else "unverified"
        fields = [row["name"], row["version"] or "-", row["source"] or "-", verified]
        click.echo("  ".join(fields))


def print_installed(installed: InstalledPlugin) -> None:
    """One line per installed plugin (and its setup), for ``run`` and ``plugin``."""
    verb = "Upgraded" if installed.replaced else "Installed"
    check = "sha256 verified" if installed.sha256 else "unverified: plugin.yaml declares no sha256"
    version = f" {installed.version}" if installed.version else ""
    click.echo(
        f"{verb} plugin {installed.name}{version} from {installed.source} in {installed.path} "
        f"({check})"
    )
    if installed.skipped_links:
        click.echo(f"  links skipped (never installed): {', '.join(installed.skipped_links)}")
    if installed.setup is not None:
        click.echo(f"  setup.sh: {installed.setup.detail} (its output is in the log)")
