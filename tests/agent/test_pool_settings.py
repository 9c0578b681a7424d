"""``--pool`` and ``pool = true``: where each command reads it (``http``, ``start``'s
tunnel tables, ``run``), and the one-line error for a value of the wrong type."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import load_file, resolve_http
from edge_agent.errors import ConfigError
from edge_agent.molecule.settings import resolve_run
from edge_agent.multi import read_tunnels, resolve_tunnels

BASE = {"relay": "https://relay.example", "target": "8000"}


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return str(path)


def test_http_reads_the_flag_then_the_file() -> None:
    assert resolve_http(BASE, env={}).pool is False
    assert resolve_http(BASE | {"pool": True}, env={}).pool is True
    assert resolve_http(BASE, env={}, file={"pool": True}).pool is True


def test_a_pool_that_is_not_a_boolean_is_one_clear_error(tmp_path: Path) -> None:
    path = _file(tmp_path, 'pool = "yes"\n')
    with pytest.raises(ConfigError, match=r"pool must be true or false, not a string"):
        load_file(path)


def test_start_reads_pool_per_tunnel_and_from_the_top(tmp_path: Path) -> None:
    text = """
relay = "https://relay.example"
[tunnels.web]
target = 8001
pool = true
[tunnels.api]
target = 8002
"""
    file = read_tunnels(_file(tmp_path, text))
    specs = resolve_tunnels(file, ["web", "api"], {}, env={})
    assert [(s.label, s.settings.pool) for s in specs] == [("web", True), ("api", False)]
    inherited = read_tunnels(_file(tmp_path, "pool = true\n" + text))
    assert all(s.settings.pool for s in resolve_tunnels(inherited, ["web", "api"], {}, env={}))


def test_run_reads_the_flag_and_its_table() -> None:
    flags = {"platform": "http://p.example", "workspace_id": "ws1", "relay": "https://r", "to": "1"}
    assert resolve_run(flags, env={}).pool is False
    assert resolve_run(flags | {"pool": True}, env={}).pool is True
    assert resolve_run(flags, env={}, file={"pool": True}).pool is True
