"""deploy/Dockerfile and deploy/compose.yaml.

The compose file is validated by docker-compose (Debian's, which needs no daemon). The
image is built and run only where a Docker daemon answers; elsewhere that test is
skipped with the reason (printed at the end of the run by conftest.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import tomllib
from collections.abc import Iterator
from typing import Final

import pytest

from tests.deploy.tools import require
from tests.e2e.procs import ROOT, clean_env

DEPLOY: Final = ROOT / "deploy"
IMAGE: Final = "molecule-edge-relay:test"


def compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = require("docker-compose", "docker-compose")
    return subprocess.run(
        [command, "-f", str(DEPLOY / "compose.yaml"), *args],
        capture_output=True,
        text=True,
        env=clean_env(**env),
        timeout=60,
        check=False,
    )


def test_compose_file_is_valid() -> None:
    done = compose(
        "config", EDGE_RELAY_PUBLIC_HOST="relay.example.com", EDGE_RELAY_DOMAIN="t.example.com"
    )
    assert done.returncode == 0, done.stderr
    for line in (
        "EDGE_RELAY_PUBLIC_URL: https://relay.example.com",
        "EDGE_RELAY_DOMAIN: t.example.com",
        "EDGE_RELAY_UPSTREAM: relay:8080",
        "condition: service_healthy",
        f"{DEPLOY}/Caddyfile:/etc/caddy/Caddyfile:ro",
        "relay-state:/var/lib/edge-relay:rw",
    ):
        assert line in done.stdout, line


def test_compose_refuses_to_start_without_names() -> None:
    done = compose("config")
    assert done.returncode != 0
    assert "set EDGE_RELAY_PUBLIC_HOST" in done.stderr


def instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines)
        if word and not word.startswith("#")
    ]


def test_dockerfile_copies_every_package() -> None:
    """A package added to pyproject.toml but not copied would break the image's install."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tops = {name.split(".")[0] for name in config["tool"]["setuptools"]["packages"]}
    copied = {rest.split()[0] for word, rest in instructions() if word == "COPY"}
    assert tops <= copied, tops - copied


def test_dockerfile_runs_slim_and_unprivileged() -> None:
    steps = instructions()
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    assert final[0] == ("FROM", "python:3.11-slim")
    assert ("USER", "edge-relay") in final
    (health,) = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert "http://127.0.0.1:8080/_edge/healthz" in health
    assert ("ENTRYPOINT", '["edge-relay"]') in final


# -- where a Docker daemon runs -------------------------------------------------------


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def image() -> str:
    try:
        info = docker("info", "--format", "{{json .ServerVersion}}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"docker build not tested: no docker client ({exc})")
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["docker info failed"])[-1]
        pytest.skip(f"docker build not tested: no Docker daemon here ({reason})")
    built = docker("build", "-f", str(DEPLOY / "Dockerfile"), "-t", IMAGE, str(ROOT), timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    return IMAGE


@pytest.fixture
def container(image: str) -> Iterator[str]:
    started = docker("run", "-d", "--health-interval=1s", image)
    assert started.returncode == 0, started.stderr
    name = started.stdout.strip()
    try:
        yield name
    finally:
        docker("rm", "-f", name)


def test_image_runs_healthy_and_unprivileged(container: str) -> None:
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline and status != "healthy":
        state = docker("inspect", "--format", "{{json .State.Health.Status}}", container)
        status = json.loads(state.stdout or '""')
        time.sleep(0.5)
    assert status == "healthy", docker("logs", container).stderr
    assert docker("exec", container, "id", "-u").stdout.strip() == "10001"
    mode = docker("exec", container, "stat", "-c", "%a", "/var/lib/edge-relay").stdout
    assert mode.strip() == "700"
    token = docker("exec", container, "edge-relay", "token", "issue", "laptop")
    assert re.fullmatch(r"mer_\S{43}", token.stdout.strip()), token.stderr
    stopped = docker("stop", "--time", "45", container)
    assert stopped.returncode == 0
    exit_code = docker("inspect", "--format", "{{.State.ExitCode}}", container).stdout
    assert exit_code.strip() == "0"  # SIGTERM drained and exited cleanly
