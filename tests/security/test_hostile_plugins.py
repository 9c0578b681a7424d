"""Hostile plugin tarballs: whatever the platform (or someone in its place) sends, an
install writes nothing outside ``<workspace>/plugins/<name>/``, creates no link and no
special file, stops at the size and entry limits, and leaves the installed version as
it was when it refuses.

The tarballs are served through the real :class:`PlatformClient` (its HTTP layer on an
``httpx.MockTransport``), as the platform's download answer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from edge_agent.molecule.client import PlatformClient
from edge_agent.molecule.errors import IntegrityError, PluginError, UnsafeArchive
from edge_agent.molecule.plugin_archive import ArchiveLimits
from edge_agent.molecule.plugins import PluginOptions, PluginRequest, install_plugin

WS = "6a0b3c2d-0000-4000-8000-00000000beef"
Entry = Callable[[tarfile.TarFile], None]


def file_entry(name: str, data: bytes = b"x", mode: int = 0o644) -> Entry:
    def add(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        archive.addfile(info, io.BytesIO(data))

    return add


def special_entry(name: str, kind: bytes, target: str = "") -> Entry:
    def add(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        archive.addfile(info)

    return add


def tarball(*entries: Entry) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for add in entries:
            add(archive)
    return buffer.getvalue()


GOOD = tarball(file_entry("plugin.yaml", b"name: careful\nversion: 1\n"), file_entry("a.md"))


async def install(tmp_path: Path, body: bytes, **limits: int) -> Path:
    """Install ``body`` as plugin "careful" for the workspace folder ``tmp_path/ws``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(503, json={"error": "workspace container not running"})
        return httpx.Response(200, content=body, headers={"Content-Type": "application/gzip"})

    client = PlatformClient(
        "https://platform.example", WS, token="t" * 43, transport=httpx.MockTransport(handler)
    )
    options = PluginOptions(limits=ArchiveLimits(**limits))
    async with client:
        installed = await install_plugin(client, tmp_path / "ws", PluginRequest("careful"), options)
    return installed.path


def escaped_to_tmp() -> bool:
    return Path("/tmp/evil-plugin-file").exists()


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


@pytest.fixture
async def installed(tmp_path: Path) -> Path:
    """A good version of the plugin, already installed."""
    return await install(tmp_path, GOOD)


HOSTILE: dict[str, tuple[bytes, str]] = {
    "absolute path": (tarball(file_entry("/tmp/evil-plugin-file")), "outside the plugin"),
    "dot-dot path": (tarball(file_entry("../../evil")), "outside the plugin"),
    "dot-dot in the middle": (tarball(file_entry("rules/../../evil")), "outside the plugin"),
    "windows drive": (tarball(file_entry("C:evil")), "outside the plugin"),
    "backslash": (tarball(file_entry("..\\evil")), "bad entry name"),
    "character device": (tarball(special_entry("dev", tarfile.CHRTYPE)), "special file"),
    "fifo": (tarball(special_entry("pipe", tarfile.FIFOTYPE)), "special file"),
    "the same name twice": (tarball(file_entry("a.md"), file_entry("a.md")), "twice"),
    "not a gzip tar": (b"\x1f\x8b" + b"not really gzip" * 10, "cannot be unpacked"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_hostile_archive_is_refused_and_changes_nothing(
    installed: Path, tmp_path: Path, case: str
) -> None:
    body, message = HOSTILE[case]
    before = tree(tmp_path)
    with pytest.raises(UnsafeArchive, match=message):
        await install(tmp_path, body)
    assert tree(tmp_path) == before  # no staging left, the good version untouched
    assert (installed / "a.md").read_bytes() == b"x"
    assert not escaped_to_tmp()
    assert not (tmp_path / "evil").exists() and not (tmp_path / "ws" / "evil").exists()


async def test_links_are_never_created(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    body = tarball(
        special_entry("passwd", tarfile.SYMTYPE, "/etc/passwd"),
        special_entry("up", tarfile.SYMTYPE, str(outside)),
        file_entry("up/planted", b"through the link"),  # would land outside via "up"
        special_entry("hard", tarfile.LNKTYPE, "/etc/hostname"),
        special_entry("inside", tarfile.SYMTYPE, "a.md"),
        file_entry("a.md"),
    )
    path = await install(tmp_path, body)
    assert not any(p.is_symlink() for p in path.rglob("*"))
    assert list(outside.iterdir()) == []
    assert (path / "up" / "planted").read_bytes() == b"through the link"  # a plain folder
    assert tree(path) == {"a.md", "up", "up/planted"}


async def test_too_many_entries_stop_at_the_limit(tmp_path: Path) -> None:
    body = tarball(*(file_entry(f"f{i}") for i in range(50)))
    with pytest.raises(UnsafeArchive, match="more than 20 entries"):
        await install(tmp_path, body, max_files=20)
    assert tree(tmp_path / "ws" / "plugins") == set()


async def test_a_decompression_bomb_stops_at_the_byte_limit(tmp_path: Path) -> None:
    # 64 MiB of zeros compress to about 64 KiB; the limit is 1 MiB of file content.
    zeros = tarball(file_entry("bomb", bytes(64 * 1024 * 1024)))
    assert len(zeros) < 200 * 1024
    with pytest.raises(UnsafeArchive, match="more than 1048576 bytes"):
        await install(tmp_path, zeros, max_bytes=1024 * 1024)
    assert tree(tmp_path / "ws" / "plugins") == set()


async def test_a_header_that_lies_about_its_size(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        file_entry("a.md", b"abc")(archive)
    data = bytearray(raw.getvalue())
    data[124:136] = b"%011o\0" % (1 << 30)  # the size field: 1 GiB, no such content
    header_sum = sum(data[:148]) + 8 * 32 + sum(data[156:512])
    data[148:156] = b"%06o\0 " % header_sum
    with pytest.raises(UnsafeArchive):
        await install(tmp_path, gzip.compress(bytes(data)), max_bytes=1 << 20)


async def test_a_tampered_file_fails_verification_and_keeps_the_old_version(
    installed: Path, tmp_path: Path
) -> None:
    digest = hashlib.sha256(b"original").hexdigest()
    declared = hashlib.sha256(f'[["a.md", "{digest}"]]'.encode()).hexdigest()
    manifest = f"name: careful\nversion: 2\nsha256: {declared}\n".encode()
    good = tarball(file_entry("plugin.yaml", manifest), file_entry("a.md", b"original"))
    tampered = tarball(file_entry("plugin.yaml", manifest), file_entry("a.md", b"tampered"))
    with pytest.raises(IntegrityError, match="do not match"):
        await install(tmp_path, tampered)
    assert (installed / "plugin.yaml").read_bytes() == b"name: careful\nversion: 1\n"
    assert [p.name for p in (tmp_path / "ws" / "plugins").iterdir() if "staging" in p.name] == []
    path = await install(tmp_path, good)
    assert (path / "a.md").read_bytes() == b"original"


@pytest.mark.parametrize(
    "declaration",
    [
        "meta:\n  sha256: " + "0" * 64,  # nested
        "sha256: " + "0" * 63,  # too short
        "sha256: >\n  " + "0" * 64,  # folded block
        "sha256: " + "0" * 64 + "\nsha256: " + "1" * 64,  # twice
        "{name: careful, sha256: " + "0" * 64 + "}",  # flow style
    ],
)
async def test_a_sha256_that_cannot_be_read_is_refused(tmp_path: Path, declaration: str) -> None:
    body = tarball(file_entry("plugin.yaml", declaration.encode()), file_entry("a.md"))
    with pytest.raises(IntegrityError, match="cannot be read"):
        await install(tmp_path, body)
    assert tree(tmp_path / "ws" / "plugins") == set()


async def test_every_refusal_is_a_plugin_error(tmp_path: Path) -> None:
    with pytest.raises(PluginError):
        await install(tmp_path, HOSTILE["absolute path"][0])
