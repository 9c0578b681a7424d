"""What a service runs, checked before anything is installed."""

from __future__ import annotations

import dataclasses
import re
import shutil
import stat
import sys
from pathlib import Path
from typing import Final

from edge_agent.config import default_path, load_file, resolve_http
from edge_agent.errors import ConfigError

#: Service names: they become file names and unit/task names on every platform.
NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

DEFAULT_NAME: Final = "edge-agent"


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One agent service: its name, the command to run and the file it reads."""

    name: str
    executable: Path
    config: Path
    home: Path

    def arguments(self) -> list[str]:
        """The agent's arguments (after the executable). No secret is ever among them."""
        return ["http", "--config", str(self.config)]


def default_config() -> Path:
    """The file ``edge-agent http`` reads by default:
    ``$XDG_CONFIG_HOME/edge-agent/config.toml`` (``~/.config/...``)."""
    return Path(default_path())


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"service name {name!r}: use lowercase letters, digits and '-'")
    return name


def check_config(path: Path, windows: bool = sys.platform == "win32") -> Path:
    """The absolute path of a config file a service can run from.

    Raises ConfigError when it is missing, readable by others (POSIX), or lacks what
    ``edge-agent http`` needs: a relay URL, a target and a token.
    """
    path = path.expanduser().absolute()
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"config file {path} is not a regular file")
    if not windows and info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise ConfigError(
            f"config file {path} is mode {mode:04o} and holds the token: run chmod 600 {path}"
        )
    settings = resolve_http({}, env={}, file=load_file(str(path)))
    if not settings.token:
        raise ConfigError(f'config file {path} has no token: add token = "mer_..."')
    return path


def find_executable(windows: bool = sys.platform == "win32") -> Path:
    """The ``edge-agent`` command of this installation (next to its Python)."""
    name = "edge-agent.exe" if windows else "edge-agent"
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside.absolute()
    found = shutil.which("edge-agent")
    if found is None:
        raise ConfigError("cannot find the edge-agent command; pass --executable PATH")
    return Path(found).absolute()
