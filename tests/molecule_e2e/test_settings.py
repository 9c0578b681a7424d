"""Settings of ``edge-agent run`` / ``peers`` / ``card``: flags > environment > file,
and the checks that turn bad settings into a usage error before anything connects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_agent.agent import EdgeAgent
from edge_agent.cli import main
from edge_agent.config import load_file
from edge_agent.errors import ConfigError
from edge_agent.molecule.settings import SECTION, resolve_platform, resolve_run

WS = "0b8f6a52-5a1c-4d55-9a53-0d1e8f4a6c11"
BASE: dict[str, Any] = {
    "platform": "https://platform.example",
    "workspace_id": WS,
    "relay": "https://relay.example",
    "to": "8000",
}


def test_flags_win_over_environment_over_file() -> None:
    file = {"platform": "https://file", "token": "file-token", "heartbeat_interval": 5}
    env = {"EDGE_PLATFORM_URL": "https://env", "EDGE_PLATFORM_TOKEN": "env-token"}
    flags = BASE | {"platform": "https://flag", "token": None, "heartbeat_interval": None}
    settings = resolve_run(flags, env, file)
    assert settings.platform == "https://flag"
    assert settings.token == "env-token"
    assert settings.heartbeat_interval == 5.0


def test_token_is_the_platform_token_and_relay_token_has_its_own_variable() -> None:
    env = {"EDGE_RELAY_TOKEN": "relay-secret", "EDGE_PLATFORM_TOKEN": "platform-secret"}
    settings = resolve_run(BASE, env, {})
    assert (settings.token, settings.relay_token) == ("platform-secret", "relay-secret")
    for value in ("relay-secret", "platform-secret"):  # tokens stay out of reprs (and logs)
        assert value not in repr(settings)


def test_config_file_run_table_and_http_keys(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        'relay = "https://relay.example"\nname = "laptop"\ntarget = "9000"\n'
        '[http]\ntoken = "relay-token-for-http"\n'
        f'[run]\nplatform = "https://platform.example"\nworkspace-id = "{WS}"\n'
        'app = "examples.a2a_agent:app"\ncommand = "python agent.py --port 8000"\n'
        'caller_auth = ["bearer:extra"]\n'
    )
    settings = resolve_run({}, {}, load_file(str(path), SECTION))
    assert settings.relay == "https://relay.example"  # top level, shared with http
    assert settings.token is None  # [http]'s token is not ours
    assert settings.app == "examples.a2a_agent:app" and settings.to is None
    assert settings.command == ("python", "agent.py", "--port", "8000")
    assert settings.caller_auth == ("bearer:extra",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"relay": None}, "no relay URL"),
        ({"platform": None}, "no platform URL"),
        ({"workspace_id": None}, "no workspace id"),
        ({"app": "m:a"}, "either --to"),
        ({"to": None}, "either --to"),
        ({"heartbeat_interval": 0}, "heartbeat_interval"),
        ({"heartbeat_interval": 180}, "heartbeat_interval"),
        ({"heartbeat_interval": "often"}, "heartbeat_interval"),
        ({"ping_interval": 0.5}, "ping_interval must be at least 1"),
        ({"ping_timeout": "soon"}, "ping_timeout must be a number"),
        ({"max_restarts": -1}, "max_restarts must be 0 or more"),
        ({"max_restarts": 2.5}, "max_restarts must be a whole number"),
        ({"secrets_refresh": 0}, "secrets_refresh must be at least 1"),
        ({"secrets_refresh": 30}, "secrets_refresh needs a command"),
        ({"poll_after": 0}, "poll_after must be at least 1"),
        ({"poll_after": "later"}, "poll_after must be a number"),
    ],
)
def test_bad_run_settings(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_run(BASE | change, {}, {})


def test_child_and_keepalive_settings() -> None:
    defaults = resolve_run(BASE, {}, {})
    assert (defaults.max_restarts, defaults.secrets_refresh) == (5, None)
    assert (defaults.ping_interval, defaults.ping_timeout) == (None, None)
    env = {"EDGE_MAX_RESTARTS": "0", "EDGE_SECRETS_REFRESH": "60"}
    file = {"ping_interval": 5, "ping_timeout": "7.5", "command": "python agent.py"}
    settings = resolve_run(BASE, env, file)
    assert (settings.max_restarts, settings.secrets_refresh) == (0, 60.0)
    assert (settings.ping_interval, settings.ping_timeout) == (5.0, 7.5)


def test_poll_after_defaults_to_a_minute() -> None:
    assert resolve_run(BASE, {}, {}).poll_after == 60.0
    assert resolve_run(BASE, {"EDGE_POLL_AFTER": "5"}, {}).poll_after == 5.0
    assert resolve_run(BASE | {"poll_after": 2.5}, {}, {"poll_after": 9}).poll_after == 2.5


def test_keepalive_reaches_the_tunnels_connect_options() -> None:
    from edge_agent.agent import _connect_options
    from edge_agent.connect import PING_INTERVAL, PING_TIMEOUT

    given = _connect_options(None, 3.0, None)
    assert (given.ping_interval, given.ping_timeout) == (3.0, PING_TIMEOUT)
    both = _connect_options(None, 4.0, 6.0)
    assert (both.ping_interval, both.ping_timeout) == (4.0, 6.0)
    assert _connect_options(None, None, None).ping_interval == PING_INTERVAL


def test_unknown_file_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown keys.*platfrom"):
        resolve_run(BASE, {}, {"platfrom": "typo"})


def test_platform_commands_need_only_the_platform() -> None:
    settings = resolve_platform({"workspace_id": WS}, {"EDGE_PLATFORM_URL": "https://p"}, {})
    assert (settings.platform, settings.workspace_id) == ("https://p", WS)


def test_edge_agent_checks_its_settings_before_any_io() -> None:
    kwargs: dict[str, Any] = {
        "platform_url": "https://platform.example",
        "relay_url": "https://relay.example",
        "relay_token": "t",
        "target": "8000",
    }
    with pytest.raises(ConfigError, match="name"):
        EdgeAgent(workspace_id="Not_A_DNS_Label", **kwargs)
    with pytest.raises(ConfigError, match="heartbeat_interval"):
        EdgeAgent(workspace_id=WS, heartbeat_interval=600, **kwargs)
    with pytest.raises(ConfigError, match="target"):
        EdgeAgent(workspace_id=WS, **kwargs | {"target": "ftp://nope"})
    with pytest.raises(ConfigError, match="poll_after must be more than 0"):
        EdgeAgent(workspace_id=WS, poll_after=0, **kwargs)


async def test_a_bad_card_file_or_platform_url_fails_at_open(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {
        "workspace_id": WS,
        "relay_url": "https://relay.example",
        "relay_token": "t",
        "target": "8000",
        "token_dir": tmp_path,
    }
    broken = tmp_path / "card.json"
    broken.write_text("[1, 2]")
    agent = EdgeAgent(platform_url="https://p.example", agent_card=broken, **kwargs)
    with pytest.raises(ConfigError, match="agent card"):
        await agent.open()
    agent = EdgeAgent(platform_url="ftp://p.example", **kwargs)
    with pytest.raises(ConfigError, match="platform URL"):
        await agent.open()


def test_run_usage_errors_exit_2_without_connecting() -> None:
    args = ["run", "--platform", "https://p", "--relay", "https://r", "--to", "8000"]
    result = CliRunner().invoke(main, args, env={"EDGE_WORKSPACE_ID": None})
    assert result.exit_code == 2
    assert "no workspace id" in result.output
