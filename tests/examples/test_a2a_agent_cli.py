"""The example agent as its own process: the script's flags, and the importable app's env."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@pytest.fixture
def run() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


def start(procs: list[subprocess.Popen[bytes]], args: list[str], env: dict[str, str]) -> str:
    """Start ``python ARGS`` and return the base URL uvicorn reports."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    procs.append(proc)
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if match := RUNNING.search(line):
            return f"http://127.0.0.1:{int(match.group(1))}/"
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"example agent did not start: exit {proc.poll()}")


def card_url(base: str) -> str:
    card = httpx.get(base + ".well-known/agent-card.json", timeout=10).json()
    return str(card["supportedInterfaces"][0]["url"])


def test_script_takes_port_and_public_url(run: list[subprocess.Popen[bytes]]) -> None:
    args = ["examples/a2a_agent.py", "--port", "0", "--public-url", "http://relay.test/a/x"]
    base = start(run, args, {"A2A_PUBLIC_URL": "http://ignored.test/"})
    assert card_url(base) == "http://relay.test/a/x/"  # the flag wins over the environment


def test_importable_app_reads_the_environment(run: list[subprocess.Popen[bytes]]) -> None:
    args = ["-m", "uvicorn", "examples.a2a_agent:app", "--port", "0", "--lifespan", "off"]
    base = start(run, args, {"A2A_PUBLIC_URL": "http://relay.test/a/y/"})
    assert card_url(base) == "http://relay.test/a/y/"
