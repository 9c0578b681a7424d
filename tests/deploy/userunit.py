"""A systemd user unit as the tests read it, and whether a user manager runs here."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path


def user_manager_available() -> bool:
    """Whether ``systemctl --user`` reaches a user manager (not in CI containers)."""
    try:
        done = subprocess.run(
            ["systemctl", "--user", "show-environment"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def exec_start(unit: Path) -> list[str]:
    """The ExecStart command as systemd reads it (its quoting, ``%%`` -> ``%``)."""
    line = next(x for x in unit.read_text().splitlines() if x.startswith("ExecStart="))
    return [arg.replace("%%", "%") for arg in shlex.split(line.removeprefix("ExecStart="))]
