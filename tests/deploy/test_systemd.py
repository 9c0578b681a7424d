"""The unit files in deploy/systemd, checked by systemd itself (``systemd-analyze``).

``verify`` loads each unit as the service manager would and fails on any error (unknown
key, bad value, missing executable: the ExecStart path is pointed at this venv's
command, the only change made to the shipped file). ``security --offline`` scores the
hardening; the score is pinned so a weakened unit fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from tests.deploy.tools import require

SYSTEMD: Final = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
BIN: Final = Path(sys.executable).parent

#: Highest acceptable "overall exposure level" (0 best, 10 worst; 1.5 when written).
MAX_EXPOSURE: Final = 2.0


def install_copy(unit: str, dest: Path, as_name: str | None = None) -> Path:
    """``unit`` copied into ``dest`` with its /opt/... command pointed at this venv."""
    text = (SYSTEMD / unit).read_text()
    text, count = re.subn(r"/opt/edge-(relay|agent)/bin/", f"{BIN}/", text)
    assert count == 1, f"{unit}: expected one /opt/... command, found {count}"
    path = dest / (as_name or unit)
    path.write_text(text)
    return path


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    command = require("systemd-analyze", "systemd")
    return subprocess.run([command, *args], capture_output=True, text=True, timeout=60, check=False)


def exposure(unit: Path) -> float:
    done = analyze("security", "--offline=yes", "--no-pager", str(unit))
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


@pytest.mark.parametrize(
    ("unit", "as_name"),
    [("edge-relay.service", None), ("edge-agent@.service", "edge-agent@laptop.service")],
)
def test_units_verify(tmp_path: Path, unit: str, as_name: str | None) -> None:
    path = install_copy(unit, tmp_path, as_name)
    done = analyze("verify", "--man=no", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: systemd only warns about a bad value (exit 0), which is
    why an empty stderr is required."""
    path = install_copy("edge-relay.service", tmp_path)
    path.write_text(path.read_text().replace("ProtectSystem=strict", "ProtectSystem=stirct"))
    done = analyze("verify", "--man=no", str(path))
    assert "Failed to parse protect system value, ignoring: stirct" in done.stderr


@pytest.mark.parametrize(
    ("unit", "as_name"),
    [("edge-relay.service", None), ("edge-agent@.service", "edge-agent@laptop.service")],
)
def test_units_are_hardened(tmp_path: Path, unit: str, as_name: str | None) -> None:
    assert exposure(install_copy(unit, tmp_path, as_name)) <= MAX_EXPOSURE


def test_bind_443_dropin_only_adds_the_bind_capability(tmp_path: Path) -> None:
    unit = install_copy("edge-relay.service", tmp_path)
    without = exposure(unit)
    dropins = tmp_path / "edge-relay.service.d"
    dropins.mkdir()
    conf = (SYSTEMD / "edge-relay.service.d" / "bind-443.conf").read_text()
    (dropins / "bind-443.conf").write_text(conf)
    done = analyze("verify", "--man=no", str(unit))
    assert done.returncode == 0, done.stderr
    with_dropin = exposure(unit)
    assert without < with_dropin <= MAX_EXPOSURE
    assert re.findall(r"^(\w+)=", conf, re.M) == ["AmbientCapabilities", "CapabilityBoundingSet"]


def test_relay_unit_essentials() -> None:
    """What docs/deploy.md promises about the relay unit, line by line."""
    lines = set((SYSTEMD / "edge-relay.service").read_text().splitlines())
    for line in (
        "User=edge-relay",
        "StateDirectory=edge-relay",
        "StateDirectoryMode=0700",
        "ReadWritePaths=/var/lib/edge-relay",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "CapabilityBoundingSet=",
    ):
        assert line in lines, line
    assert not any(line.startswith("AmbientCapabilities") for line in lines)


def test_sysusers_entry_matches_the_unit() -> None:
    entry = (SYSTEMD / "edge-relay.sysusers").read_text().splitlines()[-1].split()
    assert entry[:2] == ["u", "edge-relay"]
    assert "/var/lib/edge-relay" in entry


def test_caddy_dropin_verifies_with_debians_unit(tmp_path: Path) -> None:
    require("caddy", "caddy")  # brings Debian's caddy.service
    debian = Path("/lib/systemd/system/caddy.service")
    unit = tmp_path / "caddy.service"
    unit.write_text(debian.read_text())
    dropins = tmp_path / "caddy.service.d"
    dropins.mkdir()
    conf = (SYSTEMD / "caddy.service.d" / "edge-relay.conf").read_text()
    (dropins / "edge-relay.conf").write_text(conf)
    done = analyze("verify", "--man=no", str(unit))
    assert (done.returncode, done.stderr) == (0, "")
    assert "EnvironmentFile=/etc/default/caddy" in conf.splitlines()
