"""macOS: a launchd agent in ~/Library/LaunchAgents, loaded at login."""

from __future__ import annotations

import os
import plistlib
from pathlib import Path

from edge_agent.service.spec import ServiceSpec
from edge_agent.service.steps import Remove, Run, Step, Write

KIND = "launchd agent"

#: Seconds launchd waits before starting the agent again after it exited.
THROTTLE_INTERVAL = 30


def label(spec: ServiceSpec) -> str:
    return f"com.molecule-edge.{spec.name}"


def definition(spec: ServiceSpec) -> Path:
    return spec.home / "Library" / "LaunchAgents" / f"{label(spec)}.plist"


def log_file(spec: ServiceSpec) -> Path:
    return spec.home / "Library" / "Logs" / f"{spec.name}.log"


def plist(spec: ServiceSpec) -> bytes:
    return plistlib.dumps(
        {
            "Label": label(spec),
            "ProgramArguments": [str(spec.executable), *spec.arguments()],
            "RunAtLoad": True,
            # Start again after a crash, not after a clean exit (Ctrl-C, a drained stop).
            "KeepAlive": {"SuccessfulExit": False},
            "ThrottleInterval": THROTTLE_INTERVAL,
            "ProcessType": "Background",
            "Umask": 0o077,
            "StandardOutPath": str(log_file(spec)),
            "StandardErrorPath": str(log_file(spec)),
        }
    )


def _domain(uid: int | None = None) -> str:
    return f"gui/{os.getuid() if uid is None else uid}"


def install_steps(spec: ServiceSpec, uid: int | None = None) -> list[Step]:
    return [
        Write(definition(spec), plist(spec)),
        Run(("launchctl", "bootout", f"{_domain(uid)}/{label(spec)}"), tolerate=True),
        Run(("launchctl", "bootstrap", _domain(uid), str(definition(spec)))),
    ]


def uninstall_steps(spec: ServiceSpec, uid: int | None = None) -> list[Step]:
    return [
        Run(("launchctl", "bootout", f"{_domain(uid)}/{label(spec)}"), tolerate=True),
        Remove(definition(spec)),
    ]


def status_argv(spec: ServiceSpec, uid: int | None = None) -> tuple[str, ...]:
    return ("launchctl", "print", f"{_domain(uid)}/{label(spec)}")
