"""What the agent's default path imports: neither websockets nor importlib.metadata.

Together they cost about 2.5 MiB of the agent's idle RSS (importlib.metadata pulls in
``email``, ``importlib.resources``, ``tempfile``...), against a target of 32 MiB in
all (issue #10). The upgrade is :mod:`tunnel.client`'s own, the mask websockets' C
function loaded by its file (:mod:`tunnel.mask`), the version a constant; only
``--app`` (in-process ASGI, its WebSockets) and the Molecule commands import websockets.
An import anywhere on the path (at start, at connect, on a request) brings them back,
so the real ``edge-agent http`` runs against a real relay, watched by an audit hook.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from tests.e2e.procs import ROOT, Proc, RelayProc, clean_env, http_servers

#: Packages the default path must not import (prefixes of module names)...
WATCHED = ("websockets", "importlib.metadata", "email")
#: ...but for websockets' C extension, loaded by its file (tunnel.mask): no package code.
ALLOWED = ("websockets.speedups",)

#: Runs ``edge-agent`` (its arguments follow) in this interpreter, printing every import
#: of a watched module when it happens and, at exit, the watched modules loaded.
AGENT = f"""
import atexit, sys
WATCHED, ALLOWED = {WATCHED!r}, {ALLOWED!r}
def watched(name):
    return name not in ALLOWED and any(name == w or name.startswith(w + ".") for w in WATCHED)
def audit(event, args):
    if event == "import" and watched(args[0]):
        print("IMPORTED", args[0], flush=True)
sys.addaudithook(audit)
atexit.register(lambda: print("LOADED:", *sorted(filter(watched, sys.modules)), flush=True))
sys.argv[0] = "edge-agent"
from edge_agent.cli import main
main()
"""


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def origin_port() -> Iterator[int]:
    with http_servers(_Hello) as ports:
        yield ports[0]


def test_edge_agent_http_imports_neither_websockets_nor_importlib_metadata(
    tmp_path: Path, origin_port: int
) -> None:
    relay = RelayProc(tmp_path, "--open")
    argv = ["http", str(origin_port), "--relay", relay.url, "--name", "imports", "--no-inspect"]
    agent = Proc("agent", [sys.executable, "-c", AGENT, *argv], env=clean_env())
    try:
        url = agent.wait_line(r"^Forwarding (\S+/a/imports/) -> ").group(1)
        with urllib.request.urlopen(url, timeout=10) as response:  # a request crosses it
            assert response.read() == b"hello"
        agent.wait_count(r"GET /", 1)  # its request line: the forward path ran
    finally:
        agent.stop()
        relay.stop()
    loaded = agent.wait_line(r"^LOADED:(.*)$", timeout=5).group(1).split()
    imported = [line for line in agent.lines if line.startswith("IMPORTED")]
    assert (loaded, imported) == ([], []), agent.output()


@pytest.mark.parametrize("module", ["edge_agent.raw_cli", "edge_agent.start"])
def test_the_other_default_commands_import_neither(module: str) -> None:
    """``tcp``/``tls`` and ``start`` share the connect path tested above; their own
    modules must not bring the packages back either. And the mask is the C one."""
    code = (
        f"import sys, {module}, tunnel.mask; "
        f"print(sorted(m for m in sys.modules if m.startswith({WATCHED!r})), "
        "type(tunnel.mask.apply_mask).__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=clean_env()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['websockets.speedups']", "builtin_function_or_method"]


def test_the_version_printed_is_the_installed_distributions() -> None:
    """``__version__`` is a constant (pyproject.toml reads it when building), so the
    agent never asks importlib.metadata; what it prints must still be what is installed."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("edge-agent")), "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"edge-agent, version {metadata.version('molecule-edge')}"
