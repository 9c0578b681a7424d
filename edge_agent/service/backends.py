"""The service manager of each OS, behind one shape."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

from edge_agent.errors import ConfigError
from edge_agent.service import launchd, schtasks, systemd
from edge_agent.service.spec import ServiceSpec
from edge_agent.service.steps import Step


class Backend(Protocol):
    """What :mod:`.systemd`, :mod:`.launchd` and :mod:`.schtasks` each provide."""

    KIND: str

    def definition(self, spec: ServiceSpec) -> Path: ...

    def install_steps(self, spec: ServiceSpec) -> list[Step]: ...

    def uninstall_steps(self, spec: ServiceSpec) -> list[Step]: ...

    def status_argv(self, spec: ServiceSpec) -> tuple[str, ...]: ...


def for_platform(platform: str = sys.platform) -> Backend:
    """The backend of ``platform`` (a ``sys.platform`` value)."""
    if platform.startswith("linux"):
        return systemd
    if platform == "darwin":
        return launchd
    if platform == "win32":
        return schtasks
    raise ConfigError(f"no service manager support for {platform}")
