"""Installable as users install tools: ``python -m build`` makes an sdist and a wheel
(the wheel built from the sdist, so the sdist is complete), which install into a fresh
venv and with pipx, giving working commands and no development dependency.

Everything runs from the built files in temporary folders, never from the checkout.
Downloads go through pip's cache, so a second run needs no network.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pytest

from tests.e2e.procs import ROOT, clean_env

COMMANDS: Final = ("edge-agent", "edge-relay", "edge-devplatform")
#: Development-only distributions that must not come with an install.
DEV_ONLY: Final = ("pytest", "hypothesis", "mypy", "ruff", "a2a-sdk", "psutil", "build", "pipx")


def run(argv: Sequence[str | Path], cwd: Path, **env: str) -> str:
    done = subprocess.run(
        [str(arg) for arg in argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1", **env),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, ROOT], cwd=out)
    return out


def wheel(dist: Path) -> Path:
    (found,) = dist.glob("molecule_edge-*.whl")
    return found


def test_wheel_and_sdist_contents(dist: Path) -> None:
    (sdist,) = dist.glob("molecule_edge-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    with zipfile.ZipFile(wheel(dist)) as whl:
        files = set(whl.namelist())
        (meta,) = [n for n in files if n.endswith(".dist-info/METADATA")]
        metadata = whl.read(meta).decode()
    for shipped in ("edge_agent/service/templates/edge-agent.service", "relay/tlsask.py"):
        assert shipped in names and shipped in files, shipped
    assert not any(name.startswith("tests/") for name in files)
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    redis = [line for line in requires if line.startswith("Requires-Dist: redis")]
    assert redis and all('extra == "cluster"' in line for line in redis)
    unconditional = [line for line in requires if "extra ==" not in line]
    assert not [line for line in unconditional if any(d in line for d in DEV_ONLY)]


@dataclasses.dataclass(frozen=True)
class Installs:
    venv: Path  # a fresh venv with the wheel installed by pip
    pipx_bin: Path  # pipx's folder of command links
    root: Path


@pytest.fixture(scope="module")
def installs(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Installs:
    """Both installs at once: each spends most of its time waiting for pip."""
    root = tmp_path_factory.mktemp("installs")
    made = Installs(root / "venv", root / "bin", root)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(_venv_install, dist, made), pool.submit(_pipx_install, dist, made)]
        for job in jobs:
            job.result()
    return made


def _venv_install(dist: Path, made: Installs) -> None:
    run([sys.executable, "-m", "venv", made.venv], cwd=made.root)
    run([made.venv / "bin" / "pip", "install", "--quiet", wheel(dist)], cwd=made.root)


def _pipx_install(dist: Path, made: Installs) -> None:
    homes = {
        "PIPX_HOME": str(made.root / "pipx"),
        "PIPX_BIN_DIR": str(made.pipx_bin),
        "PIPX_MAN_DIR": str(made.root / "man"),
    }
    run([Path(sys.executable).parent / "pipx", "install", wheel(dist)], made.root, **homes)


def test_fresh_venv(installs: Installs, tmp_path: Path) -> None:
    venv = installs.venv
    for command in COMMANDS:
        assert "Usage:" in run([venv / "bin" / command, "--help"], cwd=tmp_path)
    assert "version 0.1.0" in run([venv / "bin" / "edge-relay", "--version"], cwd=tmp_path)
    installed = run([venv / "bin" / "pip", "list", "--format=freeze"], cwd=tmp_path).lower()
    names = {line.split("==")[0] for line in installed.splitlines()}
    assert not names & {*DEV_ONLY, "redis"}, names
    assert "molecule-edge" in names
    _service_template_renders(venv / "bin" / "edge-agent", tmp_path)


def _service_template_renders(edge_agent: Path, tmp_path: Path) -> None:
    """The unit template is package data: it must come with the wheel."""
    config = tmp_path / "agent.toml"
    config.write_text('relay = "https://relay.example.com"\ntoken = "mer_x"\ntarget = "1"\n')
    config.chmod(0o600)
    home = tmp_path / "home"
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    run([edge_agent, "service", "install", "--no-start", "--config", config], tmp_path, **env)
    unit = (home / ".config" / "systemd" / "user" / "edge-agent.service").read_text()
    assert f"ExecStart={edge_agent} http --config {config}" in unit


def test_pipx(installs: Installs, tmp_path: Path) -> None:
    for command in COMMANDS:
        path = installs.pipx_bin / command
        assert os.access(path, os.X_OK), command
        assert "Usage:" in run([path, "--help"], cwd=tmp_path)
