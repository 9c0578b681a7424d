"""A plugin tarball from the platform: checked, unpacked, and verified like the SDK does.

Everything here is synchronous and touches only the folder it is given; the caller runs
it in a worker thread (:mod:`edge_agent.molecule.plugins`).

Unpacking (:func:`unpack`) treats the archive as hostile. Before anything is written,
every member is checked, and one bad member refuses the whole archive
(:class:`~edge_agent.molecule.errors.UnsafeArchive`):

* a name that is absolute (``/x``, ``C:x``, ``\\\\x``), holds a ``..`` component, a
  backslash or a NUL, or appears twice;
* a member that is neither a regular file nor a folder (devices, FIFOs...);
* more than ``max_files`` members, or more than ``max_bytes`` of file content (the
  platform's own cap is 100 MiB), counted while reading, so a decompression bomb stops
  at the limit.

Symbolic and hard links are skipped with a warning, as the Molecule SDK does (the
platform never packs them): no link, inside or out, is ever created. The extraction
itself also runs through Python's ``data`` filter (PEP 706) where it exists, as a second
line of defence.

Verification (:func:`verify`) follows ``molecule_agent.client.verify_plugin_sha256``:
the ``sha256`` declared in ``plugin.yaml`` is the SHA-256 of the JSON text (Python's
``json.dumps`` defaults) of the sorted list of ``[relative POSIX path, SHA-256 of the
file]`` pairs of every regular file, ``plugin.yaml`` itself excluded. A plugin whose
``plugin.yaml`` declares none is installed unverified, as with the SDK; one whose
``sha256`` cannot be read with certainty is refused (fail closed), where the SDK would
skip the check.

``plugin.yaml`` is read without a YAML library: only top-level ``key: scalar`` lines
(optionally quoted, with a trailing comment) are understood, which is all ``name``,
``version`` and ``sha256`` ever are in the public plugins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Final

from edge_agent.molecule.errors import IntegrityError, UnsafeArchive

logger = logging.getLogger(__name__)

MANIFEST: Final = "plugin.yaml"
#: The platform's ``PLUGIN_INSTALL_MAX_DIR_BYTES``: the most file content we unpack.
MAX_BYTES: Final = 100 * 1024 * 1024
#: Most members (files, folders, skipped links) one archive may hold.
MAX_FILES: Final = 10_000

_SHA256_LINE: Final = re.compile(
    r"""^sha256[ \t]*:[ \t]*(?P<q>['"]?)(?P<hex>[0-9A-Fa-f]{64})(?P=q)[ \t]*(?:\#.*)?$"""
)
_SHA256_KEY: Final = re.compile(r"""(^|[\s{,'"])sha256['"]?\s*:""", re.MULTILINE)
_SCALAR_LINE: Final = re.compile(
    r"""^(?P<key>[A-Za-z_][\w-]*)[ \t]*:[ \t]*"""
    r"""(?P<q>['"]?)(?P<value>[^'"#]*?)(?P=q)[ \t]*(?:\#.*)?$"""
)


@dataclasses.dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_bytes: int = MAX_BYTES
    max_files: int = MAX_FILES


@dataclasses.dataclass(frozen=True, slots=True)
class Unpacked:
    """What :func:`unpack` wrote: file and folder counts, file bytes, skipped links."""

    files: int
    folders: int
    size: int
    skipped_links: tuple[str, ...]


def unpack(data: bytes, destination: Path, limits: ArchiveLimits = ArchiveLimits()) -> Unpacked:
    """Check every member of the gzip tar ``data``, then extract it into
    ``destination`` (an empty folder). Raises UnsafeArchive; on error ``destination``
    may hold part of the archive (the caller removes it)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members, skipped = _checked_members(archive, limits)
            _extract(archive, members, destination)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnsafeArchive(f"the plugin archive cannot be unpacked: {exc}") from exc
    files = [m for m in members if m.isfile()]
    return Unpacked(len(files), len(members) - len(files), sum(m.size for m in files), skipped)


def _checked_members(
    archive: tarfile.TarFile, limits: ArchiveLimits
) -> tuple[list[tarfile.TarInfo], tuple[str, ...]]:
    members: list[tarfile.TarInfo] = []
    skipped: list[str] = []
    seen: set[str] = set()
    count = size = 0
    for member in archive:  # streaming: a bomb is stopped by the limits below
        count += 1
        if count > limits.max_files:
            raise UnsafeArchive(f"the plugin archive has more than {limits.max_files} entries")
        name = _safe_name(member.name)
        if member.issym() or member.islnk():
            logger.warning("plugin_link_skipped", extra={"entry": name, "target": member.linkname})
            skipped.append(name)
            continue
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchive(f"the plugin archive holds a special file: {name!r}")
        if name in seen:
            raise UnsafeArchive(f"the plugin archive holds {name!r} twice")
        seen.add(name)
        size += member.size if member.isfile() else 0
        if size > limits.max_bytes:
            raise UnsafeArchive(f"the plugin's files add up to more than {limits.max_bytes} bytes")
        if name != ".":
            member.name = name
            members.append(member)
    return members, tuple(skipped)


def _safe_name(raw: str) -> str:
    """The member's normalised relative POSIX path, or UnsafeArchive."""
    if not raw or "\x00" in raw or "\\" in raw:
        raise UnsafeArchive(f"the plugin archive holds a bad entry name: {raw!r}")
    path = PurePosixPath(raw)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", raw) or ".." in path.parts:
        raise UnsafeArchive(f"the plugin archive holds a path outside the plugin: {raw!r}")
    return path.as_posix()


def _extract(archive: tarfile.TarFile, members: list[tarfile.TarInfo], destination: Path) -> None:
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: PEP 706's checks as well
        archive.extractall(destination, members=members, filter="data")
    else:
        archive.extractall(destination, members=members)  # every member was checked above


def declared_sha256(manifest_text: str) -> str | None:
    """The ``sha256`` of ``plugin.yaml``, None when it declares none.

    Raises:
        IntegrityError: a ``sha256`` key is there but not as one top-level line with
            64 hex digits (nested, multi-line, flow style, repeated, malformed).
    """
    found = [
        m.group("hex") for line in manifest_text.splitlines() if (m := _SHA256_LINE.match(line))
    ]
    mentioned = len(_SHA256_KEY.findall(manifest_text))
    if mentioned == 0:
        return None
    if len(found) != 1 or mentioned != 1:
        raise IntegrityError(
            "plugin.yaml declares a sha256 that cannot be read (it must be one top-level "
            "line 'sha256: <64 hex digits>')"
        )
    return found[0]


def manifest_fields(manifest_text: str) -> dict[str, str]:
    """Top-level scalar fields of ``plugin.yaml`` (``name``, ``version``...)."""
    fields: dict[str, str] = {}
    for line in manifest_text.splitlines():
        match = _SCALAR_LINE.match(line)
        if match and match.group("value"):
            fields.setdefault(match.group("key"), match.group("value").strip())
    return fields


def content_sha256(root: Path) -> str:
    """The SDK's manifest hash of the regular files under ``root``."""
    pairs = [[rel, _file_sha256(root / rel)] for rel in sorted(_files(root)) if rel != MANIFEST]
    return hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()


def verify(root: Path) -> str | None:
    """Check the unpacked plugin at ``root`` against its declared ``sha256``.

    Returns the verified hash, or None when ``plugin.yaml`` is absent or declares none.

    Raises:
        IntegrityError: the files do not match, or the declaration cannot be read.
    """
    manifest = root / MANIFEST
    if not manifest.is_file():
        return None
    expected = declared_sha256(manifest.read_text(encoding="utf-8", errors="replace"))
    if expected is None:
        return None
    actual = content_sha256(root)
    if actual != expected:
        raise IntegrityError(
            f"the plugin's files do not match the sha256 in its plugin.yaml "
            f"(declared {expected}, found {actual})"
        )
    return actual


def _files(root: Path) -> list[str]:
    found: list[str] = []
    for folder, _dirs, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return found


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()
