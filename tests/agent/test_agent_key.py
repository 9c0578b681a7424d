"""The agent key file: made once (0600 in a 0700 folder), then the same key every time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent.agent_key import key_file, machine_key


def test_made_once_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "edge-agent" / "agent-key"
    first = machine_key(path)
    assert len(first) >= 40
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert machine_key(path) == first


def test_follows_xdg_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert key_file() == tmp_path / "edge-agent" / "agent-key"


def test_unwritable_folder_gives_a_key_per_process(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder anyway")
    tmp_path.chmod(0o500)
    try:
        path = tmp_path / "edge-agent" / "agent-key"
        one, two = machine_key(path), machine_key(path)
        assert one and two and one != two
        assert not path.exists()
    finally:
        tmp_path.chmod(0o700)


def test_a_file_in_the_way_gives_a_key_per_process(tmp_path: Path) -> None:
    (tmp_path / "edge-agent").write_text("not a folder")
    path = tmp_path / "edge-agent" / "agent-key"
    one, two = machine_key(path), machine_key(path)
    assert one and two and one != two
