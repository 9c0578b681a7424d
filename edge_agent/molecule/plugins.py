"""Installing the workspace's plugins from the platform (the seed guide's 30.3).

:func:`install_plugin` downloads ``GET /workspaces/:id/plugins/:name/download`` with
the workspace token and installs it into ``<workspace folder>/plugins/<name>/`` (the
workspace folder is the token's, ``~/.molecule/<id>/`` by default, as the SDK's
``plugins_dir``):

1. the tarball is checked and unpacked into a fresh ``.staging-<name>-*`` folder next
   to the target (:func:`~edge_agent.molecule.plugin_archive.unpack`), then verified
   against ``plugin.yaml``'s ``sha256`` (:func:`~edge_agent.molecule.plugin_archive.verify`);
2. only then does it replace the installed version: the old folder is renamed aside,
   the staging folder renamed into place, the old one removed. Any failure before
   that leaves the old version untouched (the SDK removed the old version first and
   verified after, so a tampered upgrade left nothing);
3. ``setup.sh`` runs only when asked (``run_setup``; off by default: it is code from
   the platform), as ``bash setup.sh`` in the plugin folder, in its own process group,
   killed after ``setup_timeout`` seconds; its output goes to the log, line by line. A
   failing setup does not undo the install (as with the SDK): it is reported;
4. the install is reported with ``POST /workspaces/:id/plugins``, best effort (an
   external workspace always gets 503 there).

A small record next to the plugin (``.<name>.installed.json``: source, version,
verified hash, time) is what ``edge-agent plugin list`` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from edge_agent.molecule.client import PlatformClient
from edge_agent.molecule.errors import MoleculeError, PluginError
from edge_agent.molecule.plugin_archive import (
    MANIFEST,
    ArchiveLimits,
    manifest_fields,
    unpack,
    verify,
)

logger = logging.getLogger(__name__)

#: The SDK gives ``setup.sh`` two minutes.
SETUP_TIMEOUT: Final = 120.0
#: Most output of ``setup.sh`` kept for the log.
MAX_SETUP_OUTPUT: Final = 64 * 1024
#: A plugin name becomes a folder name: the platform's rule plus a safe alphabet.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclasses.dataclass(frozen=True, slots=True)
class PluginRequest:
    """A plugin to install: its name and, optionally, where from (``local://NAME``
    when None; ``github://owner/repo#ref``...)."""

    name: str
    source: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or ".." in self.name:
            raise ValueError(
                f"invalid plugin name {self.name!r}: letters, digits, '.', '_' and '-' only"
            )

    @classmethod
    def parse(cls, spec: str) -> PluginRequest:
        """``NAME`` or ``NAME=SOURCE`` (as ``edge-agent run --plugin`` takes it)."""
        name, _, source = spec.partition("=")
        return cls(name.strip(), source.strip() or None)


@dataclasses.dataclass(frozen=True, slots=True)
class PluginOptions:
    run_setup: bool = False
    setup_timeout: float = SETUP_TIMEOUT
    report: bool = True
    limits: ArchiveLimits = dataclasses.field(default_factory=ArchiveLimits)


@dataclasses.dataclass(frozen=True, slots=True)
class SetupResult:
    """``setup.sh``'s outcome: its exit code (None: it did not finish) and why."""

    code: int | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclasses.dataclass(frozen=True, slots=True)
class InstalledPlugin:
    name: str
    path: Path
    source: str
    version: str | None
    sha256: str | None  # the verified hash; None: plugin.yaml declared none
    replaced: bool  # an older version was there
    skipped_links: tuple[str, ...] = ()
    setup: SetupResult | None = None


def plugins_dir(workspace_folder: Path) -> Path:
    """Where a workspace's plugins live (the SDK's ``plugins_dir``)."""
    return workspace_folder / "plugins"


async def install_plugin(
    client: PlatformClient,
    workspace_folder: Path,
    request: PluginRequest,
    options: PluginOptions = PluginOptions(),
) -> InstalledPlugin:
    """Download, check, verify and install one plugin (see the module docstring).

    Raises:
        PluginError: the archive was refused or does not verify (nothing changed).
        MoleculeError: the platform refused the download (TokenRejected, NotFound...).
    """
    download = await client.download_plugin(request.name, request.source)
    installed = await asyncio.to_thread(
        _install_files, download.data, plugins_dir(workspace_folder), request.name, options
    )
    installed = dataclasses.replace(installed, source=download.source)
    _write_record(installed)
    logger.info(
        "plugin_installed",
        extra={"plugin": installed.name, "verified": installed.sha256 is not None},
    )
    if options.run_setup and (installed.path / "setup.sh").is_file():
        setup = await run_setup(installed.path, options.setup_timeout)
        installed = dataclasses.replace(installed, setup=setup)
    if options.report:
        await _report(client, download.source)
    return installed


def list_plugins(workspace_folder: Path) -> list[dict[str, Any]]:
    """The installed plugins: name, version, source, sha256 (None: unverified), time."""
    folder = plugins_dir(workspace_folder)
    if not folder.is_dir():
        return []
    rows = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_dir() or path.is_symlink():
            continue
        record = _read_record(folder, path.name)
        rows.append({"name": path.name, "path": str(path), **record})
    return rows


def _install_files(data: bytes, folder: Path, name: str, options: PluginOptions) -> InstalledPlugin:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=folder))
    except OSError as exc:
        raise PluginError(f"cannot write plugins under {folder}: {exc}") from exc
    try:
        unpacked = unpack(data, staging, options.limits)
        sha256 = verify(staging)
        version = _version(staging)
        replaced = _swap(staging, folder / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return InstalledPlugin(
        name, folder / name, "", version, sha256, replaced, unpacked.skipped_links
    )


def _version(root: Path) -> str | None:
    manifest = root / MANIFEST
    if not manifest.is_file():
        return None
    return manifest_fields(manifest.read_text(encoding="utf-8", errors="replace")).get("version")


def _swap(staging: Path, target: Path) -> bool:
    """Put ``staging`` in ``target``'s place; the old one goes only once that worked."""
    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".old-{target.name}-", dir=target.parent))
        os.rename(target, old / target.name)
    try:
        os.rename(staging, target)
    except OSError as exc:
        if old is not None:
            os.rename(old / target.name, target)
            shutil.rmtree(old, ignore_errors=True)
        raise PluginError(f"cannot install the plugin in {target}: {exc}") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return old is not None


def _record_path(folder: Path, name: str) -> Path:
    return folder / f".{name}.installed.json"


def _write_record(installed: InstalledPlugin) -> None:
    record = {
        "source": installed.source,
        "version": installed.version,
        "sha256": installed.sha256,
        "installed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    path = _record_path(installed.path.parent, installed.name)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)


def _read_record(folder: Path, name: str) -> dict[str, Any]:
    empty: dict[str, Any] = {"source": None, "version": None, "sha256": None, "installed_at": None}
    try:
        record = json.loads(_record_path(folder, name).read_text())
    except (OSError, ValueError):
        return empty
    if not isinstance(record, dict):
        return empty
    return {key: record.get(key) for key in empty}


async def _report(client: PlatformClient, source: str) -> None:
    try:
        await client.report_plugin(source)
    except MoleculeError as exc:  # best effort: an external workspace gets 503 here
        logger.info("plugin_report_not_recorded", extra={"reason": str(exc)})


async def run_setup(folder: Path, limit: float) -> SetupResult:
    """``bash setup.sh`` in ``folder``; its output is logged line by line."""
    try:
        process = await asyncio.create_subprocess_exec(
            "bash", "setup.sh", cwd=folder, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **_own_group(),
        )  # fmt: skip
    except OSError as exc:
        return _logged(folder, SetupResult(None, f"cannot start bash: {exc.strerror}"), b"")
    try:
        output, _ = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        _kill_group(process)
        output = b""
        await process.wait()
        return _logged(folder, SetupResult(None, f"timed out after {limit:g} s"), output)
    code = process.returncode if process.returncode is not None else -1
    detail = "ok" if code == 0 else f"exit code {code}"
    return _logged(folder, SetupResult(code, detail), output[:MAX_SETUP_OUTPUT])


def _logged(folder: Path, result: SetupResult, output: bytes) -> SetupResult:
    level = logging.INFO if result.ok else logging.WARNING
    for line in output.decode("utf-8", "replace").splitlines():
        logger.log(level, "plugin_setup_output", extra={"plugin": folder.name, "line": line})
    logger.log(level, "plugin_setup_done", extra={"plugin": folder.name, "result": result.detail})
    return result


def _own_group() -> dict[str, Any]:
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if sys.platform == "win32":
            process.kill()
        else:
            os.killpg(process.pid, signal.SIGKILL)
