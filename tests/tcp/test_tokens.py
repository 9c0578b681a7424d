"""The token store's tunnel kinds and TCP ports, and the CLI that sets them."""

from __future__ import annotations

import json
from pathlib import Path

from relay.tokens import TokenStore
from tests.e2e.procs import run_cli
from wire import StreamKind


def test_a_token_from_before_kinds_opens_http_only(tmp_path: Path) -> None:
    (tmp_path / "tokens.json").write_text(
        json.dumps({"version": 1, "tokens": {"old": {"sha256": "0" * 64, "created": "x"}}})
    )
    store = TokenStore(tmp_path)
    store.refresh()
    record = store.record("old")
    assert record is not None
    assert record.kinds == frozenset({StreamKind.HTTP})
    assert record.tcp_port is None


def test_issue_with_tcp_and_rotation_keeps_the_port(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.issue("ssh", kinds=frozenset({StreamKind.TCP}))
    assert store.assign_port("ssh", lambda current, taken: 30001) == 30001
    store.issue("ssh", replace=True)  # rotated without --tcp: the permission goes
    store.refresh()
    record = store.record("ssh")
    assert record is not None
    assert record.kinds == frozenset({StreamKind.HTTP})
    assert record.tcp_port == 30001  # the port stays the name's


def test_a_port_another_name_holds_is_offered_as_taken(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.issue("a", kinds=frozenset({StreamKind.TCP}))
    store.issue("b", kinds=frozenset({StreamKind.TCP}))
    store.assign_port("a", lambda current, taken: 30000)
    seen: list[set[int]] = []

    def pick(current: int | None, taken: set[int]) -> int:
        seen.append(taken)
        return 30001

    assert store.assign_port("b", pick) == 30001
    assert seen == [{30000}]
    assert store.assign_port("nobody", pick) is None


def test_a_malformed_kind_is_a_clear_error(tmp_path: Path) -> None:
    entry = {"sha256": "0" * 64, "kinds": ["http", "udp"]}
    (tmp_path / "tokens.json").write_text(json.dumps({"version": 1, "tokens": {"x": entry}}))
    done = run_cli("edge-relay", "token", "list", "--state-dir", str(tmp_path))
    assert done.returncode == 1
    assert "bad kinds or tcp_port for 'x'" in done.stderr


def test_the_cli_grants_and_lists_kinds(tmp_path: Path) -> None:
    state = str(tmp_path)
    issued = run_cli("edge-relay", "token", "issue", "db", "--tcp", "--tls", "--state-dir", state)
    assert issued.returncode == 0, issued.stderr
    listed = run_cli("edge-relay", "token", "list", "--state-dir", state)
    assert listed.stdout.split("\t")[0] == "db"
    assert listed.stdout.rstrip("\n").split("\t")[2] == "http,tcp,tls"


def test_a_bad_port_range_is_one_clear_line(tmp_path: Path) -> None:
    done = run_cli(
        "edge-relay", "serve", "--tcp-ports", "30000-20000", "--state-dir", str(tmp_path)
    )
    assert done.returncode == 2
    assert "the first no larger than the last" in done.stderr
