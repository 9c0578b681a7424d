"""Plugins on the agent: the SDK's sha256 manifest, plugin.yaml's fields, an install,
an upgrade, setup.sh only when asked (with its timeout), the report, the listing."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
from pathlib import Path

import httpx
import pytest

from edge_agent.molecule.client import PlatformClient
from edge_agent.molecule.errors import IntegrityError, NotFound
from edge_agent.molecule.plugin_archive import (
    content_sha256,
    declared_sha256,
    manifest_fields,
    verify,
)
from edge_agent.molecule.plugins import (
    PluginOptions,
    PluginRequest,
    install_plugin,
    list_plugins,
)
from tunnel.logs import TextFormatter

WS = "6a0b3c2d-0000-4000-8000-00000000cafe"


def sdk_manifest_hash(root: Path) -> str:
    """The formula of molecule_agent.client.verify_plugin_sha256, written out."""
    pairs = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != "plugin.yaml":
            pairs.append((rel, hashlib.sha256(path.read_bytes()).hexdigest()))
    return hashlib.sha256(json.dumps(sorted(pairs), sort_keys=True).encode()).hexdigest()


def test_the_manifest_hash_is_the_sdks(tmp_path: Path) -> None:
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "deep.md").write_text("deep")
    (tmp_path / "a.md").write_text("a")
    (tmp_path / "plugin.yaml").write_text("name: x\n")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "plugin.yaml").write_text("nested: counted\n")
    (tmp_path / "ünïcode.md").write_text("u")
    assert content_sha256(tmp_path) == sdk_manifest_hash(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert content_sha256(empty) == hashlib.sha256(b"[]").hexdigest()  # the SDK's test value


def test_verify_matches_mismatches_and_skips(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("hello world")
    assert verify(tmp_path) is None  # no plugin.yaml: nothing to verify against
    (tmp_path / "plugin.yaml").write_text("name: x\n")
    assert verify(tmp_path) is None  # no sha256 declared
    good = sdk_manifest_hash(tmp_path)
    (tmp_path / "plugin.yaml").write_text(f"name: x\nsha256: '{good}'  # pinned by CI\n")
    assert verify(tmp_path) == good  # plugin.yaml itself is not part of the hash
    (tmp_path / "plugin.yaml").write_text(f"name: x\nsha256: {good.upper()}\n")
    with pytest.raises(IntegrityError):  # the SDK compares exactly: uppercase mismatches
        verify(tmp_path)


def test_declared_sha256_and_fields() -> None:
    text = 'name: careful\nversion: "1.0.1"\ntags: [a, b]\nruntimes:\n  - claude_code\n'
    assert declared_sha256(text) is None
    assert manifest_fields(text) == {"name": "careful", "version": "1.0.1", "tags": "[a, b]"}
    assert declared_sha256(text + "sha256: " + "ab" * 32 + "\n") == "ab" * 32
    assert declared_sha256("description: mentions sha256 in prose\n") is None


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Platform:
    """The two plugin endpoints, as the platform answers them (MockTransport)."""

    def __init__(self) -> None:
        self.body = b""
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST":
            return httpx.Response(503, json={"error": "workspace container not running"})
        if not self.body:
            return httpx.Response(404, json={"error": "failed to fetch plugin from local"})
        headers = {"Content-Type": "application/gzip", "X-Plugin-Source": "local://careful"}
        return httpx.Response(200, content=self.body, headers=headers)

    def client(self) -> PlatformClient:
        return PlatformClient(
            "https://platform.example", WS, token="t" * 43, transport=httpx.MockTransport(self)
        )


async def test_install_then_upgrade_and_list(tmp_path: Path) -> None:
    platform = Platform()
    platform.body = tarball({"plugin.yaml": b"name: careful\nversion: 1\n", "old.md": b"1"})
    async with platform.client() as client:
        first = await install_plugin(client, tmp_path, PluginRequest("careful"))
        platform.body = tarball({"plugin.yaml": b"name: careful\nversion: 2\n", "new.md": b"2"})
        second = await install_plugin(client, tmp_path, PluginRequest("careful"))
    assert first.path == second.path == tmp_path / "plugins" / "careful"
    assert (first.replaced, second.replaced) == (False, True)
    assert sorted(p.name for p in second.path.iterdir()) == ["new.md", "plugin.yaml"]
    assert (second.version, second.source, second.sha256) == ("2", "local://careful", None)
    assert sorted(p.name for p in (tmp_path / "plugins").iterdir()) == [
        ".careful.installed.json",
        "careful",
    ]
    [row] = list_plugins(tmp_path)
    assert (row["name"], row["version"], row["source"], row["sha256"]) == (
        "careful", "2", "local://careful", None,
    )  # fmt: skip
    download, report = platform.requests[-2:]
    assert download.url.path == f"/workspaces/{WS}/plugins/careful/download"
    assert download.headers["authorization"] == "Bearer " + "t" * 43
    assert json.loads(report.content) == {"source": "local://careful"}  # best effort: 503


async def test_setup_runs_only_when_asked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    platform = Platform()
    marker = tmp_path / "setup-ran"
    script = f"echo preparing\ntouch {marker}\necho done >&2\nexit 3\n".encode()
    platform.body = tarball({"plugin.yaml": b"name: careful\n", "setup.sh": script})
    async with platform.client() as client:
        quiet = await install_plugin(client, tmp_path, PluginRequest("careful"))
        assert quiet.setup is None and not marker.exists()
        with caplog.at_level(logging.INFO):
            ran = await install_plugin(
                client, tmp_path, PluginRequest("careful"), PluginOptions(run_setup=True)
            )
    assert marker.exists() and ran.setup is not None
    assert (ran.setup.code, ran.setup.ok, ran.setup.detail) == (3, False, "exit code 3")
    lines = [TextFormatter().format(r) for r in caplog.records if r.levelno == logging.WARNING]
    assert any("line=preparing" in line for line in lines)
    assert any("line=done" in line for line in lines)  # stderr too


async def test_a_setup_that_hangs_is_killed(tmp_path: Path) -> None:
    platform = Platform()
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}\nsleep 60\n".encode()
    platform.body = tarball({"setup.sh": script})
    options = PluginOptions(run_setup=True, setup_timeout=0.5)
    async with platform.client() as client:
        installed = await install_plugin(client, tmp_path, PluginRequest("careful"), options)
    assert installed.setup is not None and installed.setup.code is None
    assert installed.setup.detail == "timed out after 0.5 s"
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_refused_download_changes_nothing(tmp_path: Path) -> None:
    platform = Platform()
    async with platform.client() as client:
        with pytest.raises(NotFound, match="failed to fetch plugin from local"):
            await install_plugin(client, tmp_path, PluginRequest("careful"))
    assert not (tmp_path / "plugins").exists()


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 200, "a b"])
def test_plugin_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="invalid plugin name"):
        PluginRequest(name)


def test_a_run_plugin_spec() -> None:
    assert PluginRequest.parse("careful") == PluginRequest("careful", None)
    spec = "careful=github://owner/repo#v1"
    assert PluginRequest.parse(spec) == PluginRequest("careful", "github://owner/repo#v1")
