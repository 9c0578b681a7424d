"""``edge-agent tcp|tls``: bad input is one clear line and exit 2, before any network."""

from __future__ import annotations

import pytest

from tests.e2e.procs import run_cli


@pytest.mark.parametrize("kind", ["tcp", "tls"])
@pytest.mark.parametrize("target", ["abc", "0", "70000", "host:", "localhost:x"])
def test_a_bad_target_is_one_line(kind: str, target: str) -> None:
    done = run_cli("edge-agent", kind, target, "--relay", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert f"target must be PORT or HOST:PORT (port 1-65535), got {target!r}" in done.stderr


def test_no_relay_is_one_line() -> None:
    done = run_cli("edge-agent", "tcp", "22")
    assert done.returncode == 2
    assert "no relay URL: pass --relay or set EDGE_RELAY_URL" in done.stderr
