"""Plugin sources and packing (contract 3.7): what ``GET .../plugins/:name/download``
and ``POST /workspaces/:id/plugins`` resolve, stage and send.

The real platform resolves ``<scheme>://<spec>`` with registered resolvers, stages the
plugin in a temporary folder (at most ``PLUGIN_INSTALL_MAX_DIR_BYTES``, 100 MiB) and
packs it as a gzip tar of its regular files and folders, paths relative to the plugin
folder, symlinks left out. Here:

* ``local://NAME`` reads ``<plugins dir>/NAME/`` (``edge-devplatform serve
  --plugins-dir``); the resolved name is the folder's name, so ``?source=local://other``
  on ``/plugins/foo/download`` is the name-mismatch 400;
* ``github://owner/repo#ref`` is a registered scheme with no network behind it: unpinned
  it gets the real 422, pinned the resolver's 502 ``failed to fetch plugin from github``;
* any other scheme is the 400 ``failed to resolve plugin source``.

Staging reads the files into memory (the size cap bounds it) and packing happens in a
worker thread, so a 100 MiB plugin does not stall the event loop.
"""

from __future__ import annotations

import dataclasses
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Final

from devplatform.errors import ApiError, BadRequest

SCHEMES: Final = ("github", "local")

UNPINNED: Final = (
    'unpinned github source: append a tag or commit SHA (e.g. "github://owner/repo#v1.2.0"). '
    "Set PLUGIN_ALLOW_UNPINNED=true to override"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    scheme: str
    spec: str

    @property
    def raw(self) -> str:
        return f"{self.scheme}://{self.spec}"


@dataclasses.dataclass(frozen=True, slots=True)
class Staged:
    """A resolved plugin: its name and its entries (relative POSIX path → file content
    and permission bits; ``None`` for a folder)."""

    name: str
    source: Source
    entries: dict[str, tuple[bytes, int] | None]


def valid_name(name: str) -> bool:
    """``validatePluginName``: not empty, no separators, no ``..``, its own base name."""
    return bool(name) and not any(bad in name for bad in ("/", "\\", "..")) and name not in (".",)


def parse_source(raw: str) -> Source:
    scheme, sep, spec = raw.partition("://")
    if not sep or not scheme or not spec:
        raise BadRequest("invalid plugin source")
    return Source(scheme, spec)


def stage(raw_source: str, plugins_dir: str | None, max_bytes: int) -> Staged:
    """Resolve and read a plugin, with the real pipeline's errors (``ApiError``)."""
    if not raw_source:
        raise BadRequest(
            '\'source\' is required (e.g. "local://my-plugin" or "github://owner/repo")'
        )
    source = parse_source(raw_source)
    if source.scheme not in SCHEMES:
        body = {"error": "failed to resolve plugin source", "available_schemes": list(SCHEMES)}
        raise ApiError(body=body, status=400)
    if source.scheme == "local" and not valid_name(source.spec):
        raise BadRequest("invalid plugin name")
    if source.scheme == "github":
        if "#" not in source.spec:
            raise ApiError(body={"error": UNPINNED, "source": source.raw}, status=422)
        raise _fetch_failed(source, 502)  # no network behind this stand-in
    folder = Path(plugins_dir) / source.spec if plugins_dir else None
    if folder is None or not folder.is_dir() or folder.is_symlink():
        raise _fetch_failed(source, 404)
    entries = _read_tree(folder, max_bytes, source)
    return Staged(source.spec, source, entries)


def _fetch_failed(source: Source, status: int) -> ApiError:
    body = {"error": f"failed to fetch plugin from {source.scheme}", "source": source.raw}
    return ApiError(body=body, status=status)


def _read_tree(root: Path, max_bytes: int, source: Source) -> dict[str, tuple[bytes, int] | None]:
    entries: dict[str, tuple[bytes, int] | None] = {}
    total = 0
    for folder, dirs, files in os.walk(root, followlinks=False):
        base = Path(folder)
        for name in sorted(dirs):
            if not (base / name).is_symlink():
                entries[(base / name).relative_to(root).as_posix()] = None
        for name in sorted(files):
            path = base / name
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                continue  # symlinks (and anything else) are left out, as the real packer does
            total += info.st_size
            if total > max_bytes:
                body = {"error": "staged plugin exceeds size limit", "source": source.raw}
                raise ApiError(body=body, status=413)
            entries[path.relative_to(root).as_posix()] = (path.read_bytes(), info.st_mode & 0o777)
    return entries


def pack(staged: Staged) -> bytes:
    """The gzip tar the download answers with (folders first, then files, sorted)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(staged.entries, key=lambda p: (staged.entries[p] is not None, p)):
            entry = staged.entries[path]
            info = tarfile.TarInfo(path)
            if entry is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                data, info.mode = entry
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
