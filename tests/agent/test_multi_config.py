"""The ``[tunnels.NAME]`` config of ``edge-agent start``: precedence and checks (no I/O
beyond reading the file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.multi import MAX_TUNNELS, read_tunnels, resolve_tunnels, select

CONFIG = """
relay = "https://top.example"
token = "top-token"
ca-file = "/top-ca.pem"
name = "not-inherited"
target = 9999

[tunnels.web]
target = 8001
caller-auth = ["bearer:a", "basic:u:p"]

[tunnels.api]
app = "pkg.mod:app"
token = "api-token"
relay = "https://api.example"
name = "backend"
ping-interval = 5
"""


def _file(tmp_path: Path, text: str = CONFIG) -> str:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return str(path)


def test_a_tunnel_table_wins_then_flags_then_env_then_the_top_level(tmp_path: Path) -> None:
    file = read_tunnels(_file(tmp_path))
    flags = {"relay": "https://flag.example", "ca_file": None}
    env = {"EDGE_RELAY_TOKEN": "env-token"}
    web, api = resolve_tunnels(file, select(file, [], True), flags, env)
    assert (web.label, api.label) == ("web", "api")
    assert web.settings.relay == "https://flag.example"  # flag > top level
    assert web.settings.token == "env-token"  # env > top level
    assert web.settings.ca_file == "/top-ca.pem"  # inherited
    assert (web.settings.name, web.settings.target) == (None, "8001")  # not inherited
    assert web.settings.caller_auth == ("bearer:a", "basic:u:p")
    assert api.settings.relay == "https://api.example"  # its table > flag
    assert api.settings.token == "api-token"  # its table > env
    assert (api.settings.name, api.settings.app, api.settings.target) == (
        "backend",
        "pkg.mod:app",
        None,
    )
    assert api.settings.ping_interval == 5.0


def test_select_keeps_the_order_given_once_each(tmp_path: Path) -> None:
    file = read_tunnels(_file(tmp_path))
    assert select(file, ["api", "web", "api"], False) == ["api", "web"]


def test_two_tunnels_cannot_ask_for_one_name(tmp_path: Path) -> None:
    text = 'relay = "http://r"\n'
    text += '[tunnels.a]\ntarget = 1\nname = "x"\n[tunnels.b]\ntarget = 2\nname = "x"\n'
    file = read_tunnels(_file(tmp_path, text))
    with pytest.raises(ConfigError, match="tunnels a and b both ask for name 'x'"):
        resolve_tunnels(file, ["a", "b"], {}, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("relay = 1\n[tunnels.a]\ntarget = 1\n", "relay must be a string, not a number"),
        ("[tunnels.a]\nverbose = 1\n", "unknown key in \\[tunnels.a\\]: verbose"),
        ("[tunnels.a]\nping-timeout = true\n", "ping_timeout must be a number of seconds, not a"),
        ("[tunnels.a]\ncaller-auth = [1]\n", "caller_auth must be a string or a list of strings"),
        ("[tunnels]\na = 1\n", "tunnels.a must be a table"),
        ('[tunnels."a b"]\ntarget = 1\n', "a label is letters, digits"),
        ("relay = 'x'\n", "no tunnels: add a \\[tunnels.NAME\\] table"),
        ("[tunnels.a]\ntarget = 1\n[extra]\n", "unknown table \\[extra\\]"),
        ("[tunnels\n", "cannot read config file"),
    ],
)
def test_bad_files_name_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        read_tunnels(path)
    assert str(caught.value).startswith(path) or "cannot read" in str(caught.value)


def test_too_many_tunnels(tmp_path: Path) -> None:
    text = "".join(f"[tunnels.t{i}]\ntarget = {i + 1}\n" for i in range(MAX_TUNNELS + 1))
    with pytest.raises(ConfigError, match=f"at most {MAX_TUNNELS}"):
        read_tunnels(_file(tmp_path, text))
