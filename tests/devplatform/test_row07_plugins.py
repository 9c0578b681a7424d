"""Row 7 / 7b (contract 3.7): the plugin download of an external workspace, and the
install report that only a container workspace can honour."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from tests.devplatform.conftest import ADMIN, Dev, PlatformFactory, bearer

PLUGIN_YAML = b"name: careful\nversion: 1.0.1\n"


def plugin_tree(root: Path) -> Path:
    """``root/careful``: a plugin shaped like the public molecule-ai-plugin-* ones."""
    folder = root / "careful"
    (folder / "rules").mkdir(parents=True)
    (folder / "skills" / "careful-mode").mkdir(parents=True)
    (folder / "plugin.yaml").write_bytes(PLUGIN_YAML)
    (folder / "rules" / "careful-bash.md").write_text("- be careful\n")
    (folder / "skills" / "careful-mode" / "SKILL.md").write_text("# careful\n")
    (folder / "setup.sh").write_text("echo setup\n")
    os.chmod(folder / "setup.sh", 0o755)
    os.symlink("/etc/passwd", folder / "rules" / "leak")  # never packed
    return root


@pytest.fixture
async def dev_plugins(make_platform: PlatformFactory, tmp_path: Path) -> Dev:
    return await make_platform(plugins_dir=str(plugin_tree(tmp_path / "plugins")))


def members(body: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        return {member.name: member for member in archive.getmembers()}


async def test_download_sends_the_plugin_as_a_gzip_tar(dev_plugins: Dev) -> None:
    workspace_id, token = await dev_plugins.create_external()
    path = f"/workspaces/{workspace_id}/plugins/careful/download"
    response = await dev_plugins.client.get(path, headers=bearer(token))
    assert response.status_code == 200
    headers = response.headers
    assert headers["content-type"] == "application/gzip"
    assert headers["content-disposition"] == 'attachment; filename="careful.tar.gz"'
    assert int(headers["content-length"]) == len(response.content)
    assert (headers["x-plugin-name"], headers["x-plugin-source"]) == ("careful", "local://careful")
    entries = members(response.content)
    assert sorted(entries) == [
        "plugin.yaml", "rules", "rules/careful-bash.md", "setup.sh", "skills",
        "skills/careful-mode", "skills/careful-mode/SKILL.md",
    ]  # fmt: skip
    assert entries["rules"].isdir() and entries["setup.sh"].mode & 0o100
    assert "rules/leak" not in entries  # symlinks are left out
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        extracted = archive.extractfile("plugin.yaml")
        assert extracted is not None and extracted.read() == PLUGIN_YAML


@pytest.mark.parametrize(
    ("name", "query", "status", "body"),
    [
        ("nothing", "", 404, {"error": "failed to fetch plugin from local", "source": "local://nothing"}),
        ("careful", "?source=local://other", 404,
         {"error": "failed to fetch plugin from local", "source": "local://other"}),
        ("careful", "?source=nonsense", 400, {"error": "invalid plugin source"}),
        ("careful", "?source=ftp://x", 400,
         {"error": "failed to resolve plugin source", "available_schemes": ["github", "local"]}),
        ("careful", "?source=local://..", 400, {"error": "invalid plugin name"}),
        ("careful", "?source=github://owner/repo%23v1", 502,
         {"error": "failed to fetch plugin from github", "source": "github://owner/repo#v1"}),
        ("..x", "", 400, {"error": "invalid plugin name"}),
    ],
)  # fmt: skip
async def test_download_errors(
    dev_plugins: Dev, name: str, query: str, status: int, body: dict[str, object]
) -> None:
    workspace_id, token = await dev_plugins.create_external()
    path = f"/workspaces/{workspace_id}/plugins/{name}/download{query}"
    response = await dev_plugins.client.get(path, headers=bearer(token))
    assert (response.status_code, response.json()) == (status, body)


async def test_an_unpinned_github_source_is_422(dev_plugins: Dev) -> None:
    workspace_id, token = await dev_plugins.create_external()
    path = f"/workspaces/{workspace_id}/plugins/careful/download?source=github://owner/repo"
    response = await dev_plugins.client.get(path, headers=bearer(token))
    assert response.status_code == 422
    assert response.json()["error"].startswith("unpinned github source")


async def test_a_source_that_resolves_to_another_name(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    root = plugin_tree(tmp_path / "plugins")
    (root / "other").mkdir()
    (root / "other" / "plugin.yaml").write_text("name: other\n")
    dev = await make_platform(plugins_dir=str(root))
    workspace_id, token = await dev.create_external()
    path = f"/workspaces/{workspace_id}/plugins/careful/download?source=local://other"
    response = await dev.client.get(path, headers=bearer(token))
    assert (response.status_code, response.json()) == (
        400,
        {
            "error": 'source resolved to plugin "other" but URL requested "careful"',
            "resolved_name": "other",
            "requested_name": "careful",
        },
    )


async def test_a_plugin_over_the_size_cap_is_413(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    dev = await make_platform(plugins_dir=str(plugin_tree(tmp_path / "p")), plugin_max_bytes=40)
    workspace_id, token = await dev.create_external()
    path = f"/workspaces/{workspace_id}/plugins/careful/download"
    response = await dev.client.get(path, headers=bearer(token))
    assert (response.status_code, response.json()) == (
        413,
        {"error": "staged plugin exceeds size limit", "source": "local://careful"},
    )


async def test_download_needs_the_workspaces_own_token(dev_plugins: Dev) -> None:
    workspace_id, _ = await dev_plugins.create_external()
    _, other_token = await dev_plugins.create_external(name="other")
    path = f"/workspaces/{workspace_id}/plugins/careful/download"
    missing = await dev_plugins.client.get(path)
    assert (missing.status_code, missing.json()) == (401, {"error": "missing workspace auth token"})
    wrong = await dev_plugins.client.get(path, headers=bearer(other_token))
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid workspace auth token"})
    admin = await dev_plugins.client.get(path, headers=ADMIN)  # passes the middleware only
    assert (admin.status_code, admin.json()) == (401, {"error": "invalid workspace auth token"})


async def test_no_plugins_dir_means_no_local_plugins(dev: Dev) -> None:
    workspace_id, token = await dev.create_external()
    path = f"/workspaces/{workspace_id}/plugins/careful/download"
    response = await dev.client.get(path, headers=bearer(token))
    assert response.status_code == 404


async def test_the_install_report_of_an_external_workspace_is_503(dev_plugins: Dev) -> None:
    workspace_id, token = await dev_plugins.create_external()
    path = f"/workspaces/{workspace_id}/plugins"
    report = await dev_plugins.client.post(
        path, json={"source": "local://careful"}, headers=bearer(token)
    )
    assert (report.status_code, report.json()) == (
        503,
        {"error": "workspace container not running"},
    )
    unknown = await dev_plugins.client.post(
        path, json={"source": "local://nothing"}, headers=bearer(token)
    )
    assert unknown.status_code == 404
    empty = await dev_plugins.client.post(path, json={}, headers=bearer(token))
    assert empty.status_code == 400 and empty.json()["error"].startswith("'source' is required")
    broken = await dev_plugins.client.post(path, content=b"{", headers=bearer(token))
    assert (broken.status_code, broken.json()) == (400, {"error": "invalid request body"})
