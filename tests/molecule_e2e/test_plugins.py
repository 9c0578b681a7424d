"""Plugins end to end: ``edge-agent plugin install|list`` and ``edge-agent run --plugin``
against the dev platform's ``--plugins-dir`` (real processes, both generations): an
install, an upgrade, a tampered version refused with the old one kept, setup.sh only
with ``--run-setup``, and a plugin in place before the command starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge_agent.molecule.clishared import EXIT_PLUGIN
from tests.e2e.procs import run_cli
from tests.molecule.test_plugins import sdk_manifest_hash
from tests.molecule_e2e.conftest import Stack, Workspace
from tests.molecule_e2e.test_run import SETTLE, _read, eventually


def publish(stack: Stack, name: str, files: dict[str, str], *, sha256: str | None = "auto") -> Path:
    """Put plugin ``name`` in the platform's plugins folder, with a correct sha256 in
    its plugin.yaml unless told otherwise (None: none; a value: that one)."""
    folder = stack.tmp / "plugins" / name
    if folder.exists():
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    manifest = f"name: {name}\nversion: {files.get('VERSION', '1').strip()}\n"
    if sha256 == "auto":
        (folder / "plugin.yaml").write_text(manifest)
        sha256 = sdk_manifest_hash(folder)
    (folder / "plugin.yaml").write_text(manifest + (f"sha256: {sha256}\n" if sha256 else ""))
    return folder


def plugin_cli(stack: Stack, ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    base = [
        "--platform", stack.platform.url, "--workspace-id", ws.id, "--token", ws.token,
        "--token-dir", str(ws.token_dir),
    ]  # fmt: skip
    return run_cli("edge-agent", "plugin", *args, *base, timeout=60)


def test_install_upgrade_and_a_tampered_version(stack: Stack) -> None:
    ws = stack.workspace("plugins")
    publish(stack, "careful", {"VERSION": "1", "rules/careful.md": "- be careful\n"})
    first = plugin_cli(stack, ws, "install", "careful")
    assert first.returncode == 0, first.stderr
    installed = ws.token_dir / ws.id / "plugins" / "careful"
    assert f"Installed plugin careful 1 from local://careful in {installed}" in first.stdout
    assert "(sha256 verified)" in first.stdout
    assert (installed / "rules" / "careful.md").read_text() == "- be careful\n"

    publish(stack, "careful", {"VERSION": "2", "skills/s/SKILL.md": "# skill\n"})
    second = plugin_cli(stack, ws, "install", "careful")
    assert second.returncode == 0, second.stderr
    assert "Upgraded plugin careful 2" in second.stdout
    assert not (installed / "rules").exists() and (installed / "skills/s/SKILL.md").exists()

    folder = publish(stack, "careful", {"VERSION": "3", "skills/s/SKILL.md": "# skill\n"})
    (folder / "skills/s/SKILL.md").write_text("# changed after it was hashed\n")
    third = plugin_cli(stack, ws, "install", "careful")
    assert third.returncode == EXIT_PLUGIN
    assert "do not match the sha256 in its plugin.yaml" in third.stderr
    assert (installed / "skills/s/SKILL.md").read_text() == "# skill\n"  # version 2 stays

    listing = plugin_cli(stack, ws, "list", "--json")
    [row] = json.loads(listing.stdout)
    assert (row["name"], row["version"], row["source"]) == ("careful", "2", "local://careful")
    assert row["sha256"] == sdk_manifest_hash(installed)


def test_refusals_of_the_platform(stack: Stack) -> None:
    ws = stack.workspace("no-plugin")
    missing = plugin_cli(stack, ws, "install", "nowhere")
    assert missing.returncode == 5  # a 404 is a refusal of the platform
    assert "failed to fetch plugin from local" in missing.stderr
    bad = plugin_cli(stack, ws, "install", "../etc")
    assert bad.returncode == 2 and "invalid plugin name" in bad.stderr
    unpinned = plugin_cli(stack, ws, "install", "x", "--source", "github://owner/repo")
    assert unpinned.returncode == 5 and "unpinned github source" in unpinned.stderr


def test_setup_runs_only_with_run_setup(stack: Stack) -> None:
    ws = stack.workspace("setup")
    marker = stack.tmp / f"setup-ran-{ws.id}"
    publish(stack, "withsetup", {"setup.sh": f"echo installing deps\ntouch {marker}\n"})
    plain = plugin_cli(stack, ws, "install", "withsetup")
    assert plain.returncode == 0 and not marker.exists()
    ran = plugin_cli(stack, ws, "install", "withsetup", "--run-setup", "-v")
    assert ran.returncode == 0, ran.stderr
    assert marker.exists() and "setup.sh: ok" in ran.stdout
    assert "plugin_setup_output" in ran.stderr and "line=installing deps" in ran.stderr


CHECKS_PLUGIN = r"""
import os, sys, time
path = os.path.join(sys.argv[1], "plugins", "ready", "rules", "ready.md")
with open(sys.argv[2], "w") as fh:
    fh.write("present" if os.path.exists(path) else "missing")
parent = os.getppid()
while os.getppid() == parent:
    time.sleep(0.2)
"""


def test_run_installs_plugins_before_the_command_starts(stack: Stack) -> None:
    ws = stack.workspace("run-plugin")
    publish(stack, "ready", {"rules/ready.md": "ready\n"})
    seen = stack.tmp / f"plugin-seen-{ws.id}"
    agent = stack.start_agent(
        ws, "--to", stack.origin.url, "--plugin", "ready",
        "--", sys.executable, "-c", CHECKS_PLUGIN, str(ws.token_dir / ws.id), str(seen),
    )  # fmt: skip
    agent.wait_line(r"^Installed plugin ready 1 from local://ready in .*\(sha256 verified\)")
    assert eventually(lambda: _read(seen), SETTLE, "the command ran") == "present"
    assert agent.stamp(r"^Installed plugin ready") < agent.stamp(r"^Starting ")
