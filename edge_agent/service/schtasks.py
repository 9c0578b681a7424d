"""Windows: a scheduled task that starts the agent when the user logs on."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from xml.sax.saxutils import escape

from edge_agent.service.spec import ServiceSpec
from edge_agent.service.steps import Remove, Run, Step, Write
from edge_agent.service.templates import render

KIND = "scheduled task"


def task_name(spec: ServiceSpec) -> str:
    return f"molecule-edge\\{spec.name}"


def definition(spec: ServiceSpec) -> Path:
    base = os.environ.get("LOCALAPPDATA") or str(spec.home / "AppData" / "Local")
    return Path(base) / "edge-agent" / f"{spec.name}.xml"


def current_user() -> str:
    user = os.environ.get("USERNAME", "")
    domain = os.environ.get("USERDOMAIN")
    return f"{domain}\\{user}" if domain else user


def task_xml(spec: ServiceSpec, user: str) -> bytes:
    """The task definition, UTF-16 as schtasks expects."""
    text = render(
        "task.xml",
        name=escape(spec.name),
        user=escape(user),
        command=escape(str(spec.executable)),
        arguments=escape(subprocess.list2cmdline(spec.arguments())),
    )
    return text.encode("utf-16")


def install_steps(spec: ServiceSpec, user: str | None = None) -> list[Step]:
    name = task_name(spec)
    return [
        Write(definition(spec), task_xml(spec, user or current_user())),
        Run(("schtasks", "/Create", "/TN", name, "/XML", str(definition(spec)), "/F")),
        Run(("schtasks", "/Run", "/TN", name)),
    ]


def uninstall_steps(spec: ServiceSpec, user: str | None = None) -> list[Step]:
    name = task_name(spec)
    return [
        Run(("schtasks", "/End", "/TN", name), tolerate=True),
        Run(("schtasks", "/Delete", "/TN", name, "/F"), tolerate=True),
        Remove(definition(spec)),
    ]


def status_argv(spec: ServiceSpec, user: str | None = None) -> tuple[str, ...]:
    return ("schtasks", "/Query", "/TN", task_name(spec), "/V", "/FO", "LIST")
