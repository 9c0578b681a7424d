"""Several tunnels in one config file, for ``edge-agent start``.

::

    relay = "https://relay.example.com"     # top level: inherited by every tunnel
    ca-file = "ca.pem"

    [tunnels.web]
    target = 8001
    token = "mer_..."

    [tunnels.api]
    target = "http://127.0.0.1:8000"
    token = "mer_..."

A tunnel's settings: its own table first, then the ``start`` command's flags, then the
environment, then the file's top level (all but ``name``, ``target`` and ``app``, which
belong to one tunnel). Every key is checked: an unknown one is named with its file and
table, and so is a value of the wrong type.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from edge_agent.config import (
    HTTP_KEYS,
    HttpSettings,
    checked,
    read_toml,
    reject_unknown,
    resolve_http,
)
from edge_agent.connect import check_name
from edge_agent.errors import ConfigError

#: Keys a ``[tunnels.NAME]`` table may hold (``verbose`` and ``log_format`` are the
#: process's, at the top level or as flags).
TUNNEL_KEYS: Final = HTTP_KEYS - {"verbose", "log_format"}

#: Top-level keys every tunnel inherits.
INHERITED: Final = TUNNEL_KEYS - {"name", "target", "app"}

#: Most tunnels one file (and one process) may hold: each is a connection and a pool.
MAX_TUNNELS: Final = 32

#: A tunnel's label in the file (``[tunnels.LABEL]``): printed on every line it owns.
LABEL: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclasses.dataclass(frozen=True, slots=True)
class TunnelSpec:
    """One tunnel to start: its label in the file and its resolved settings."""

    label: str
    settings: HttpSettings


@dataclasses.dataclass(frozen=True, slots=True)
class TunnelsFile:
    """A config file read for ``start``: its top-level keys and its tunnel tables."""

    path: str
    top: dict[str, Any]
    tunnels: dict[str, dict[str, Any]]


def read_tunnels(path: str) -> TunnelsFile:
    """Read and check a config file's top level and ``[tunnels.*]`` tables.

    Raises ConfigError naming the file, the table and the key for an unknown key or a
    value of the wrong type, and for a file without tunnels or with too many.
    """
    raw = read_toml(path)
    top = checked(path, "", {k: v for k, v in raw.items() if not isinstance(v, dict)})
    reject_unknown(path, "at the top level", set(top) - HTTP_KEYS)
    tables = raw.get("tunnels")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{path}: no tunnels: add a [tunnels.NAME] table for each")
    if len(tables) > MAX_TUNNELS:
        raise ConfigError(f"{path}: {len(tables)} tunnels, at most {MAX_TUNNELS}")
    return TunnelsFile(path, top, {k: _tunnel(path, k, v) for k, v in tables.items()})


def _tunnel(path: str, label: str, table: Any) -> dict[str, Any]:
    if not LABEL.fullmatch(label):
        raise ConfigError(f"{path}: [tunnels.{label!r}]: a label is letters, digits, - _ .")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: tunnels.{label} must be a table ([tunnels.{label}])")
    values = checked(path, f"[tunnels.{label}] ", table)
    reject_unknown(path, f"in [tunnels.{label}]", set(values) - TUNNEL_KEYS)
    return values


def select(file: TunnelsFile, labels: Sequence[str], everything: bool) -> list[str]:
    """The labels to start: those named (in order, once each), or all with ``--all``."""
    known = ", ".join(file.tunnels)
    if everything and labels:
        raise ConfigError("name tunnels or pass --all, not both")
    if everything:
        return list(file.tunnels)
    if not labels:
        raise ConfigError(f"name the tunnels to start ({known}) or pass --all")
    for label in labels:
        if label not in file.tunnels:
            raise ConfigError(f"no tunnel {label!r} in {file.path} (it has: {known})")
    return list(dict.fromkeys(labels))


def resolve_tunnels(
    file: TunnelsFile,
    labels: Sequence[str],
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
) -> list[TunnelSpec]:
    """The settings of each tunnel in ``labels`` (see the module's precedence rule).

    Raises ConfigError (prefixed with the file and table) for a tunnel whose settings
    are incomplete, and when two tunnels ask for the same name.
    """
    inherited = {k: v for k, v in file.top.items() if k in INHERITED}
    specs = []
    for label in labels:
        own = file.tunnels[label]
        try:
            settings = resolve_http({**flags, **own}, env, inherited)
            check_name(settings.name)
        except ConfigError as exc:
            raise ConfigError(f"{file.path}: [tunnels.{label}] {exc}") from None
        specs.append(TunnelSpec(label, settings))
    _distinct_names(specs)
    return specs


def _distinct_names(specs: Sequence[TunnelSpec]) -> None:
    seen: dict[str, str] = {}
    for spec in specs:
        name = spec.settings.name
        if name is None:
            continue  # the token names it: the relay refuses a clash
        if name in seen:
            raise ConfigError(f"tunnels {seen[name]} and {spec.label} both ask for name {name!r}")
        seen[name] = spec.label
