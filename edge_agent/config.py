"""Settings of ``edge-agent http``: flags win, then environment variables, then the
``--config`` TOML file (same keys as the long flags, ``-`` or ``_``; a ``[http]`` table
overrides the top level for this command). ``[tunnels.NAME]`` tables are read by
``edge-agent start`` (:mod:`edge_agent.multi`), ``[run]`` by ``edge-agent run``; any
other table, and a value of the wrong type, is a :class:`ConfigError` naming it.
Without ``--config``, ``edge-agent http`` and ``start`` read
``$XDG_CONFIG_HOME/edge-agent/config.toml`` (``~/.config/...``) if it exists.

Secrets (``token``, ``caller_auth``) belong in the environment or in that file, kept
0600: a flag's value is visible to every user of the machine in ``ps``."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from edge_agent.errors import ConfigError

#: Environment variables, by setting. EDGE_CALLER_AUTH holds one or more credentials
#: separated by white space (``bearer:TOKEN basic:USER:PASS``).
ENV: Final = {
    "relay": "EDGE_RELAY_URL",
    "token": "EDGE_RELAY_TOKEN",
    "caller_auth": "EDGE_CALLER_AUTH",
}

#: Keys whose values are secrets: a config file that holds one should be 0600.
SECRET_KEYS: Final = frozenset({"token", "caller_auth"})

#: Keys ``edge-agent http`` reads from a config file.
HTTP_KEYS: Final = frozenset(
    {
        "relay", "token", "name", "target", "app", "caller_auth", "ca_file",
        "insecure", "pin_sha256", "verbose", "log_format", "ping_interval", "ping_timeout",
        "host_header", "target_ca", "target_insecure", "proxy", "app_dir", "pool",
    }
)  # fmt: skip

#: Tables a config file may have: settings of one command each.
TABLES: Final = frozenset({"http", "run", "tunnels"})

#: What each typed key must hold in a file, as (TOML types allowed, how to say it).
KEY_TYPES: Final[dict[str, tuple[tuple[type, ...], str]]] = {
    **{
        key: ((str,), "a string")
        for key in (
            "relay", "token", "name", "app", "ca_file", "pin_sha256", "log_format",
            "host_header", "target_ca", "proxy",
        )
    },
    "insecure": ((bool,), "true or false"),
    "target_insecure": ((bool,), "true or false"),
    "pool": ((bool,), "true or false"),
    "verbose": ((int,), "a whole number"),
    "ping_interval": ((int, float), "a number of seconds"),
    "ping_timeout": ((int, float), "a number of seconds"),
    "target": ((str, int), "a port number or a URL string"),
    "caller_auth": ((str, list), "a string or a list of strings"),
}  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class HttpSettings:
    relay: str
    token: str | None
    name: str | None
    target: str | None
    app: str | None
    caller_auth: tuple[str, ...] = ()
    ca_file: str | None = None
    insecure: bool = False
    pin_sha256: str | None = None
    verbose: int = 0
    log_format: str = "text"
    ping_interval: float | None = None  # None: the protocol's default (20 s)
    ping_timeout: float | None = None
    host_header: str = "preserve"  # preserve | rewrite | a value (as ngrok's --host-header)
    target_ca: str | None = None  # PEM CA for an https target
    target_insecure: bool = False  # no verification of an https target's certificate
    proxy: str | None = None  # the tunnel's proxy URL; None: from the environment
    app_dir: str | None = None  # where --app's module is imported from (default: cwd)
    pool: bool = False  # join the name's pool instead of replacing its agent


def load_file(path: str | None, section: str = "http") -> dict[str, Any]:
    """Read a TOML config file: top-level keys, overridden by the ``[section]`` table.

    The other known tables (settings of other commands) are skipped; an unknown table or
    a known key with a value of the wrong type raises ConfigError naming it, and so does
    a key ``edge-agent http`` does not know when ``section`` is ``http``.
    """
    if path is None:
        return {}
    raw = read_toml(path)
    values = checked(path, "", {k: v for k, v in raw.items() if not isinstance(v, dict)})
    table = raw.get(section, {})
    table = checked(path, f"[{section}] ", table) if isinstance(table, dict) else {}
    if section == "http":
        reject_unknown(path, "at the top level", set(values) - HTTP_KEYS)
        reject_unknown(path, "in [http]", set(table) - HTTP_KEYS)
    return values | table


def reject_unknown(path: str, where: str, unknown: set[str]) -> None:
    """ConfigError naming the file, the place (``"in [tunnels.web]"``) and the keys."""
    if unknown:
        keys = ", ".join(sorted(unknown))
        raise ConfigError(f"{path}: unknown key{'s' * (len(unknown) > 1)} {where}: {keys}")


def read_toml(path: str) -> dict[str, Any]:
    """The file's TOML document; ConfigError if it cannot be read or has an unknown table."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    for key, value in raw.items():
        if isinstance(value, dict) and _key(key) not in TABLES:
            known = ", ".join(f"[{t}]" for t in sorted(TABLES))
            raise ConfigError(f"{path}: unknown table [{key}] (known: {known})")
    return raw


def checked(path: str, where: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """``table`` with ``_`` keys, each typed key checked (``where``: ``"[tunnels.web] "``)."""
    values = {_key(k): v for k, v in table.items()}
    for key, value in values.items():
        if key not in KEY_TYPES:
            continue  # unknown keys: each command says which it takes
        types, what = KEY_TYPES[key]
        bad = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if not bad and isinstance(value, list):
            bad = not all(isinstance(item, str) for item in value)
        if bad:
            raise ConfigError(f"{path}: {where}{key} must be {what}, not {_toml_type(value)}")
    return values


def _toml_type(value: Any) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    kinds |= {list: "an array", dict: "a table"}
    return next((name for kind, name in kinds.items() if isinstance(value, kind)), "a date")


def default_path() -> str:
    """``$XDG_CONFIG_HOME/edge-agent/config.toml`` (``~/.config`` when unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "edge-agent", "config.toml")


def default_config() -> str | None:
    """:func:`default_path` if that file exists."""
    path = default_path()
    return path if os.path.isfile(path) else None


def exposed_secrets(path: str, values: Mapping[str, Any]) -> str | None:
    """A warning when the file at ``path`` holds a secret and others may read it."""
    held = sorted(SECRET_KEYS & {k for k, v in values.items() if v})
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if not held or not mode & 0o077:
        return None
    return f"{path} holds {' and '.join(held)} and other users can read it: chmod 600 {path}"


def _key(name: str) -> str:
    return name.replace("-", "_")


def resolve_http(
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    file: Mapping[str, Any] | None = None,
) -> HttpSettings:
    """Merge the three sources. ``flags`` holds None (or an empty tuple) for unset flags.

    Raises ConfigError when no relay URL is set, or neither/both of target and app.
    """
    env = os.environ if env is None else env
    file = file or {}
    unknown = sorted(set(file) - HTTP_KEYS)
    if unknown:
        raise ConfigError(f"unknown keys in the config file: {', '.join(unknown)}")
    values = {key: _pick(key, flags, env, file) for key in HTTP_KEYS}
    if not values["relay"]:
        raise ConfigError("no relay URL: pass --relay or set EDGE_RELAY_URL")
    if bool(values["target"]) == bool(values["app"]):
        raise ConfigError("give either a TARGET (port or URL) or --app module:attr")
    auth = values["caller_auth"] or ()
    if isinstance(auth, str):  # the environment's list, or the file's one credential
        auth = auth.split() if auth == env.get(ENV["caller_auth"]) else (auth,)
    values["caller_auth"] = tuple(auth)
    values["insecure"] = bool(values["insecure"])
    values["target_insecure"] = bool(values["target_insecure"])
    values["pool"] = bool(values["pool"])
    values["host_header"] = str(values["host_header"] or "preserve")
    values["verbose"] = int(values["verbose"] or 0)
    values["log_format"] = values["log_format"] or "text"
    if values["target"] is not None:
        values["target"] = str(values["target"])
    for key in ("ping_interval", "ping_timeout"):
        values[key] = _seconds(key, values[key])
    return HttpSettings(**values)


def _seconds(key: str, value: Any) -> float | None:
    """A keepalive duration from any source: a number of seconds, at least 1."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number of seconds, not {value!r}") from None
    if not seconds >= 1.0:
        raise ConfigError(f"{key} must be at least 1 second")
    return seconds


def merge_sources(
    keys: Iterable[str],
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    file: Mapping[str, Any],
    env_names: Mapping[str, str],
) -> dict[str, Any]:
    """For each key: the flag if set, else its environment variable (``env_names``), else
    the file's value (None when none has it). The precedence rule of every command."""
    return {key: _pick(key, flags, env, file, env_names) for key in keys}


def _pick(
    key: str,
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    file: Mapping[str, Any],
    names: Mapping[str, str] = ENV,
) -> Any:
    flag = flags.get(key)
    if flag is not None and flag != ():
        return relay_list(flag) if key == "relay" else flag
    if key in names and env.get(names[key]):
        return env[names[key]]
    value = file.get(key)
    return relay_list(value) if key == "relay" and isinstance(value, list) else value


def relay_list(value: Any) -> str:
    """Several relay URLs (``--relay`` repeated, a TOML list) as one comma-separated
    string, the form EDGE_RELAY_URL takes too; the tunnel client splits it again."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v).strip() for v in value)
    return str(value)
