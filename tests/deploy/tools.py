"""Debian programs the deployment tests run for real, installed when missing.

CI runs as root on a clean machine, so a missing program is installed once with apt-get
(under a lock file, so two runs started together do not both run apt). Where that is
impossible (not root, no package index), :func:`require` skips the test with the reason,
which pytest prints with ``-rs`` (scripts/test passes it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Final

import pytest

from tests.support.apt import apt

LOCK_PATH: Final = Path(tempfile.gettempdir()) / "molecule-edge-deploy-apt.lock"

_failed: dict[str, str] = {}


def require(command: str, package: str) -> str:
    """The path of ``command``; installs ``package`` if needed, else skips the test."""
    found = shutil.which(command) or _install(command, package)
    if found is None:
        pytest.skip(f"{command} unavailable: {_failed[package]}")
    return found


def _install(command: str, package: str) -> str | None:
    if package in _failed:
        return None
    if os.geteuid() != 0:
        _failed[package] = f"not root, cannot apt-get install {package}"
        return None
    with LOCK_PATH.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be installing right now
        if shutil.which(command) is None:
            print(f"deploy tests: installing {package} with apt-get")
            if err := _apt_install(package):
                _failed[package] = err
                return None
    found = shutil.which(command)
    if found is None:
        _failed[package] = f"{package} installed but {command} is not on PATH"
    return found


def _apt_install(package: str) -> str | None:
    """Install ``package``; refresh the package index first only when that fails."""
    install = ("install", "-y", "--no-upgrade", "--no-install-recommends", package)
    if apt(*install) is None:
        return None
    return apt("update") or apt(*install)
