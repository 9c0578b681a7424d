"""Linux: a systemd user unit, started at login (``default.target`` of the user)."""

from __future__ import annotations

import os
from pathlib import Path

from edge_agent.service.spec import ServiceSpec
from edge_agent.service.steps import Remove, Run, Step, Write
from edge_agent.service.templates import render

KIND = "systemd user unit"


def quote(arg: str) -> str:
    """One ExecStart argument: systemd's own quoting, with ``%`` and ``$`` escaped (they
    are specifiers and variables in unit files)."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c in arg for c in " \t\"'\\;"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_name(spec: ServiceSpec) -> str:
    return f"{spec.name}.service"


def definition(spec: ServiceSpec) -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(spec.home / ".config")
    return Path(base) / "systemd" / "user" / unit_name(spec)


def unit_text(spec: ServiceSpec) -> str:
    argv = [str(spec.executable), *spec.arguments()]
    return render("edge-agent.service", name=spec.name, exec_start=" ".join(map(quote, argv)))


def install_steps(spec: ServiceSpec) -> list[Step]:
    return [
        Write(definition(spec), unit_text(spec).encode()),
        Run(("systemctl", "--user", "daemon-reload")),
        Run(("systemctl", "--user", "enable", "--now", unit_name(spec))),
    ]


def uninstall_steps(spec: ServiceSpec) -> list[Step]:
    return [
        Run(("systemctl", "--user", "disable", "--now", unit_name(spec)), tolerate=True),
        Remove(definition(spec)),
        Run(("systemctl", "--user", "daemon-reload"), tolerate=True),
    ]


def status_argv(spec: ServiceSpec) -> tuple[str, ...]:
    return ("systemctl", "--user", "status", "--no-pager", unit_name(spec))
