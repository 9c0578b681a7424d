"""Settings of ``edge-agent run``, ``peers`` and ``card``.

The precedence is the one of every ``edge-agent`` command
(:func:`edge_agent.config.merge_sources`): flags, then ``EDGE_*`` environment variables,
then the ``--config`` TOML file. These commands read the file's top-level keys and its
``[run]`` table (which wins). Keys of ``edge-agent http`` (``name``, ``target``) are
ignored, so one file can serve both commands; note that ``token`` means the *platform*
token here (the relay token is ``relay_token``), so keep ``http``'s ``token`` in its
``[http]`` table.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Final

from edge_agent.config import HTTP_KEYS, merge_sources
from edge_agent.errors import ConfigError
from edge_agent.molecule.session import LIVENESS_TTL

#: The config file table these commands read.
SECTION: Final = "run"

#: Environment variables, by setting.
ENV: Final = {
    "platform": "EDGE_PLATFORM_URL",
    "workspace_id": "EDGE_WORKSPACE_ID",
    "token": "EDGE_PLATFORM_TOKEN",
    "token_dir": "EDGE_TOKEN_DIR",
    "org_id": "EDGE_ORG_ID",
    "relay": "EDGE_RELAY_URL",
    "relay_token": "EDGE_RELAY_TOKEN",
    "heartbeat_interval": "EDGE_HEARTBEAT_INTERVAL",
    "agent_card": "EDGE_AGENT_CARD",
    "max_restarts": "EDGE_MAX_RESTARTS",
    "secrets_refresh": "EDGE_SECRETS_REFRESH",
    "poll_after": "EDGE_POLL_AFTER",
}

PLATFORM_KEYS: Final = frozenset(
    {
        "platform", "workspace_id", "token", "token_dir", "org_id", "ca_file", "insecure",
        "verbose", "log_format",
    }
)  # fmt: skip

RUN_KEYS: Final = PLATFORM_KEYS | frozenset(
    {
        "relay", "relay_token", "to", "app", "agent_card", "agent_name", "heartbeat_interval",
        "caller_auth", "pin_sha256", "command", "ping_interval", "ping_timeout",
        "max_restarts", "secrets_refresh", "plugin", "run_setup", "poll_after", "pool",
    }
)  # fmt: skip

DEFAULT_HEARTBEAT_INTERVAL: Final = 30.0
#: Restarts of the command allowed in ten minutes before ``run`` gives up.
DEFAULT_MAX_RESTARTS: Final = 5
#: Seconds the tunnel must be down before a "next" platform is asked for poll delivery.
DEFAULT_POLL_AFTER: Final = 60.0


@dataclasses.dataclass(frozen=True)
class PlatformSettings:
    """What every platform command needs: where the platform is and who we are."""

    platform: str
    workspace_id: str
    token: str | None = dataclasses.field(default=None, repr=False)
    token_dir: str | None = None
    org_id: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    verbose: int = 0
    log_format: str = "text"


@dataclasses.dataclass(frozen=True)
class RunSettings(PlatformSettings):
    relay: str = ""
    relay_token: str | None = dataclasses.field(default=None, repr=False)
    to: str | None = None
    app: str | None = None
    agent_card: str | None = None
    agent_name: str | None = None
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    caller_auth: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    pin_sha256: str | None = None
    command: tuple[str, ...] = ()
    ping_interval: float | None = None  # None: the tunnel's default (20 s)
    ping_timeout: float | None = None
    max_restarts: int = DEFAULT_MAX_RESTARTS
    secrets_refresh: float | None = None  # None: secrets are pulled once, at start
    plugin: tuple[str, ...] = ()  # NAME or NAME=SOURCE, installed before the command
    run_setup: bool = False
    poll_after: float = DEFAULT_POLL_AFTER
    pool: bool = False  # join the workspace name's pool instead of replacing its agent


def resolve_platform(
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    file: Mapping[str, Any] | None = None,
) -> PlatformSettings:
    """Settings of ``peers`` and ``card``. Raises ConfigError when one is missing/bad."""
    values = _merged(PLATFORM_KEYS, flags, env, file)
    return PlatformSettings(**_platform_values(values))


def resolve_run(
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    file: Mapping[str, Any] | None = None,
) -> RunSettings:
    """Settings of ``run``. ``flags`` holds None (or an empty tuple) for unset flags.

    Raises ConfigError when the relay URL is missing, when neither or both of ``--to``
    and ``--app`` are given, or when a value has the wrong type.
    """
    values = _merged(RUN_KEYS, flags, env, file)
    if not values["relay"]:
        raise ConfigError("no relay URL: pass --relay or set EDGE_RELAY_URL")
    if bool(values["to"]) == bool(values["app"]):
        raise ConfigError("give either --to (a port or URL) or --app module:attr")
    run = {key: values[key] for key in RUN_KEYS - PLATFORM_KEYS}
    run["to"] = str(run["to"]) if run["to"] is not None else None
    run["heartbeat_interval"] = _interval(run["heartbeat_interval"])
    run["caller_auth"] = _strings(run["caller_auth"], "caller_auth")
    command = run["command"]
    run["command"] = tuple(shlex.split(command)) if isinstance(command, str) else command
    run["command"] = _strings(run["command"], "command")
    for key in ("ping_interval", "ping_timeout", "secrets_refresh", "poll_after"):
        run[key] = _seconds(run[key], key, minimum=1.0)
    if run["poll_after"] is None:
        run["poll_after"] = DEFAULT_POLL_AFTER
    run["max_restarts"] = _count(run["max_restarts"], "max_restarts", DEFAULT_MAX_RESTARTS)
    run["plugin"] = _strings(run["plugin"], "plugin")
    run["run_setup"] = bool(run["run_setup"])
    run["pool"] = bool(run["pool"])
    if run["secrets_refresh"] is not None and not run["command"]:
        raise ConfigError("secrets_refresh needs a command to restart (after --)")
    return RunSettings(**_platform_values(values), **run)


def _merged(
    keys: frozenset[str],
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None,
    file: Mapping[str, Any] | None,
) -> dict[str, Any]:
    file = dict(file or {})
    unknown = sorted(set(file) - RUN_KEYS - HTTP_KEYS)
    if unknown:
        raise ConfigError(f"unknown keys in the config file: {', '.join(unknown)}")
    return merge_sources(keys, flags, os.environ if env is None else env, file, ENV)


def _platform_values(values: Mapping[str, Any]) -> dict[str, Any]:
    if not values["platform"]:
        raise ConfigError("no platform URL: pass --platform or set EDGE_PLATFORM_URL")
    if not values["workspace_id"]:
        raise ConfigError("no workspace id: pass --workspace-id or set EDGE_WORKSPACE_ID")
    result = {key: values[key] for key in PLATFORM_KEYS}
    result["workspace_id"] = str(result["workspace_id"]).strip()
    result["insecure"] = bool(values["insecure"])
    result["verbose"] = int(values["verbose"] or 0)
    result["log_format"] = values["log_format"] or "text"
    return result


def _interval(raw: Any) -> float:
    if raw is None:
        return DEFAULT_HEARTBEAT_INTERVAL
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"heartbeat_interval must be a number of seconds, got {raw!r}") from None
    if not 0 < value < LIVENESS_TTL:
        raise ConfigError(f"heartbeat_interval must be in (0, {LIVENESS_TTL:.0f}) seconds")
    return value


def _seconds(raw: Any, key: str, *, minimum: float) -> float | None:
    """A duration in seconds from any source (flag, environment, file), or None."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number of seconds, got {raw!r}") from None
    if not value >= minimum:
        raise ConfigError(f"{key} must be at least {minimum:g} second(s)")
    return value


def _count(raw: Any, key: str, default: int) -> int:
    """A non-negative whole number from any source, or ``default``."""
    if raw is None:
        return default
    if isinstance(raw, bool) or isinstance(raw, float):
        raise ConfigError(f"{key} must be a whole number, got {raw!r}")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{key} must be 0 or more")
    return value


def _strings(raw: Any, key: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, Sequence) and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    raise ConfigError(f"{key} must be a string or a list of strings")
