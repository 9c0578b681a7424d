"""``edge-devplatform`` as a real process, plus the command-line surface."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from devplatform import __version__
from devplatform.cli import main

BIN = Path(sys.executable).parent / "edge-devplatform"
ADMIN_TOKEN = "cli-admin-token-abcdefghijklmnop"
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


class Served:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url


def start(db_path: Path, *extra: str, log: Path | None = None) -> Served:
    env = {**os.environ, "EDGE_DEVPLATFORM_ADMIN_TOKEN": ADMIN_TOKEN}
    command = [
        str(BIN),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--db",
        str(db_path),
        *extra,
    ]
    stderr = log.open("w") if log is not None else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
    finally:
        if log is not None:
            stderr.close()  # type: ignore[union-attr]
    line = first_line(process, timeout=30)  # printed once the socket accepts connections
    match = LISTENING.search(line)
    if match is None:
        process.kill()
        process.wait(5)
        pytest.fail(f"no listening line: {line!r}")
    return Served(process, match.group(1))


def first_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline()


def stop(served: Served) -> int:
    served.process.send_signal(signal.SIGTERM)
    try:
        return served.process.wait(timeout=10)
    finally:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait(5)


@pytest.fixture
def servers() -> Iterator[list[Served]]:
    started: list[Served] = []
    try:
        yield started
    finally:
        for served in started:
            if served.process.poll() is None:
                served.process.kill()
                served.process.wait(5)


def test_serve_secret_set_restart(servers: list[Served], tmp_path: Path) -> None:
    db_path = tmp_path / "dev.db"
    log = tmp_path / "serve.log"
    served = start(db_path, "--generation", "next", "-v", "--log-format", "json", log=log)
    servers.append(served)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=served.url, timeout=10) as client:
        created = client.post(
            "/workspaces", json={"name": "cli", "runtime": "external"}, headers=admin
        )
        assert created.status_code == 201
        workspace_id = created.json()["id"]
        token = created.json()["connection"]["auth_token"]

    secret = subprocess.run(
        [str(BIN), "secret", "set", "--db", str(db_path), workspace_id, "OPENAI_API_KEY", "-"],
        input="sk-test-value\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert secret.returncode == 0, secret.stderr
    assert secret.stdout.strip() == f"saved OPENAI_API_KEY for {workspace_id}"
    assert "sk-test-value" not in secret.stdout + secret.stderr

    with httpx.Client(base_url=served.url, timeout=10) as client:
        values = client.get(
            f"/workspaces/{workspace_id}/secrets/values",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert values.json() == {"OPENAI_API_KEY": "sk-test-value"}
    assert stop(served) == 0
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert {"platform_listening", "workspace_created"} <= {e["event"] for e in events}
    assert token not in log.read_text() and "sk-test-value" not in log.read_text()

    again = start(db_path)  # same file, other generation: state is still there
    servers.append(again)
    with httpx.Client(base_url=again.url, timeout=10) as client:
        state = client.get(
            f"/workspaces/{workspace_id}/state", headers={"Authorization": f"Bearer {token}"}
        )
        assert state.status_code == 200 and state.json()["status"] == "awaiting_agent"
    assert stop(again) == 0


def test_help_and_version() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "serve" in result.output and "secret" in result.output
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(main, ["serve", "--help"])
    for flag in ("--admin-token", "--generation", "--db", "--liveness-ttl", "--a2a-idle-timeout"):
        assert flag in result.output


def test_serve_refuses_bad_flags() -> None:
    runner = CliRunner()
    empty = runner.invoke(main, ["serve", "--admin-token", " "], env={})
    assert empty.exit_code == 2 and "must not be empty" in empty.output
    generation = runner.invoke(main, ["serve", "--admin-token", "t", "--generation", "later"])
    assert generation.exit_code == 2
    ttl = runner.invoke(main, ["serve", "--admin-token", "t", "--liveness-ttl", "0"])
    assert ttl.exit_code == 2


def test_secret_set_unknown_workspace(tmp_path: Path) -> None:
    runner = CliRunner()
    db_path = str(tmp_path / "empty.db")
    result = runner.invoke(main, ["secret", "set", "--db", db_path, "not-a-workspace", "K", "V"])
    assert result.exit_code == 1 and "no workspace not-a-workspace" in result.output
    memory = runner.invoke(main, ["secret", "set", "--db", ":memory:", "x", "K", "V"])
    assert memory.exit_code == 2
