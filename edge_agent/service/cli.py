"""``edge-agent service install|uninstall|status``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from edge_agent.errors import ConfigError
from edge_agent.service import backends
from edge_agent.service.spec import (
    DEFAULT_NAME,
    ServiceSpec,
    check_config,
    check_name,
    default_config,
    find_executable,
)
from edge_agent.service.steps import Run, Step, apply, describe, run_command

#: ``status`` exit code when no service of that name is installed (as systemctl's).
EXIT_NOT_INSTALLED: Final = 4

F = TypeVar("F", bound=Callable[..., Any])


def name_option(func: F) -> F:
    return click.option(
        "--name",
        default=DEFAULT_NAME,
        show_default=True,
        help="Service name (several agents: one name each).",
    )(func)


@click.group()
def service() -> None:
    """Start the agent at login: a systemd user unit (Linux), a launchd agent (macOS)
    or a scheduled task (Windows), running ``edge-agent http --config FILE``."""


@service.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Settings with the token, mode 0600.  [default: ~/.config/edge-agent/config.toml]",
)
@name_option
@click.option(
    "--executable",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="edge-agent command.",
)
@click.option("--no-start", is_flag=True, help="Only write the service definition.")
@click.option("--dry-run", is_flag=True, help="Print what would be done, do nothing.")
def install(
    config: Path | None, name: str, executable: Path | None, no_start: bool, dry_run: bool
) -> None:
    """Install (or update) the service and start it. The token stays in the config file."""
    try:
        spec = ServiceSpec(
            check_name(name),
            (executable or find_executable()).absolute(),
            check_config(config or default_config()),
            Path.home(),
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    backend = _backend()
    steps = backend.install_steps(spec)
    if no_start:
        steps = [step for step in steps if not isinstance(step, Run)]
    _do(steps, dry_run, f"the service definition is {backend.definition(spec)}")
    if not dry_run:
        click.echo(f"installed {backend.KIND} {backend.definition(spec)}")


@service.command()
@name_option
@click.option("--dry-run", is_flag=True, help="Print what would be done, do nothing.")
def uninstall(name: str, dry_run: bool) -> None:
    """Stop and remove the service. The config file (and its token) is left alone."""
    spec = _spec_by_name(name)
    backend = _backend()
    _do(backend.uninstall_steps(spec), dry_run, "nothing else was removed")
    if not dry_run:
        click.echo(f"removed {backend.KIND} {backend.definition(spec)}")


@service.command()
@name_option
def status(name: str) -> None:
    """Whether the service is installed, and what the service manager says of it."""
    spec = _spec_by_name(name)
    backend = _backend()
    path = backend.definition(spec)
    if not path.exists():
        click.echo(f"{name}: not installed (no {path})")
        sys.exit(EXIT_NOT_INSTALLED)
    click.echo(f"{name}: {backend.KIND} {path}")
    code, output = run_command(backend.status_argv(spec))
    click.echo(output)
    sys.exit(code)


def _backend() -> backends.Backend:
    try:
        return backends.for_platform()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _spec_by_name(name: str) -> ServiceSpec:
    """Enough of a spec to find an installed service (uninstall, status)."""
    try:
        check_name(name)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return ServiceSpec(name, Path(), Path(), Path.home())


def _do(steps: list[Step], dry_run: bool, after_failure: str) -> None:
    if dry_run:
        for step in steps:
            click.echo("would " + describe(step))
        return
    try:
        apply(steps, report=lambda step: click.echo(describe(step), err=True))
    except ConfigError as exc:
        raise click.ClickException(f"{exc}\n{after_failure}") from None


def register(main: click.Group) -> None:
    main.add_command(service)
