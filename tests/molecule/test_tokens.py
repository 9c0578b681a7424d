"""The token cache: SDK layout, permissions, atomic writes, explicit tokens."""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from edge_agent.molecule.errors import TokenStoreError
from edge_agent.molecule.tokens import MAX_CREDENTIAL_LENGTH, TokenStore, check_credential

WS = "3f1c2a9e-0000-4000-8000-000000000001"
TOKEN = "tok_" + "x" * 39

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_layout_matches_the_sdk(tmp_path: Path) -> None:
    store = TokenStore(WS, tmp_path / "home" / ".molecule")
    store.save_token(TOKEN)
    path = tmp_path / "home" / ".molecule" / WS / ".auth_token"
    assert path.read_bytes() == TOKEN.encode()  # bare, no newline, like the SDK
    assert store.load_token() == TOKEN


def test_default_base_dir_is_home_molecule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    assert TokenStore(WS).token_path == tmp_path / ".molecule" / WS / ".auth_token"


def test_the_sdks_per_workspace_folder_is_used_as_is(tmp_path: Path) -> None:
    # RemoteAgentClient(token_dir=D) keeps its token in D/.auth_token, not D/<id>/.
    sdk_folder = tmp_path / "sdk-tokens"
    sdk_folder.mkdir(mode=0o700)
    (sdk_folder / ".auth_token").write_text(TOKEN)
    store = TokenStore(WS, sdk_folder)
    assert store.directory == sdk_folder and store.load_token() == TOKEN
    store.save_inbound_secret("secret-value")
    assert (sdk_folder / ".platform_inbound_secret").read_text() == "secret-value"


def test_a_folder_named_after_the_workspace_is_its_own(tmp_path: Path) -> None:
    store = TokenStore(WS, tmp_path / WS)  # empty yet: the SDK's default ~/.molecule/<id>
    store.save_token(TOKEN)
    assert (tmp_path / WS / ".auth_token").read_text() == TOKEN
    assert not (tmp_path / WS / WS).exists()


def test_a_base_with_the_nested_layout_stays_a_base(tmp_path: Path) -> None:
    TokenStore(WS, tmp_path).save_token(TOKEN)
    (tmp_path / ".auth_token").write_text("stray")  # someone else's file at the top
    store = TokenStore(WS, tmp_path)
    assert store.directory == tmp_path / WS and store.load_token() == TOKEN


def test_an_empty_base_keeps_the_nested_layout(tmp_path: Path) -> None:
    assert TokenStore(WS, tmp_path).token_path == tmp_path / WS / ".auth_token"


@posix_only
def test_new_files_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # the most permissive umask must not leak into the files
    try:
        store = TokenStore(WS, tmp_path)
        store.save_token(TOKEN)
        store.save_inbound_secret("secret-value")
    finally:
        os.umask(old_umask)
    assert mode(store.directory) == 0o700
    assert mode(store.token_path) == 0o600
    assert mode(store.inbound_secret_path) == 0o600
    assert store.inbound_secret_path.name == ".platform_inbound_secret"
    assert [p.name for p in store.directory.iterdir() if p.name.startswith(".tmp")] == []


@posix_only
def test_loose_permissions_are_repaired_on_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = TokenStore(WS, tmp_path)
    store.save_token(TOKEN)
    os.chmod(store.directory, 0o755)
    os.chmod(store.token_path, 0o644)
    with caplog.at_level(logging.WARNING):
        assert store.load_token() == TOKEN
    assert mode(store.directory) == 0o700 and mode(store.token_path) == 0o600
    assert "credential_permissions_repaired" in caplog.text
    assert TOKEN not in caplog.text


@posix_only
def test_loose_directory_is_repaired_on_save(tmp_path: Path) -> None:
    store = TokenStore(WS, tmp_path)
    store.directory.mkdir(parents=True, mode=0o777)
    os.chmod(store.directory, 0o777)
    store.save_token(TOKEN)
    assert mode(store.directory) == 0o700


@posix_only
def test_symlinked_token_file_is_refused(tmp_path: Path) -> None:
    store = TokenStore(WS, tmp_path)
    store.directory.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(TOKEN)
    store.token_path.symlink_to(elsewhere)
    with pytest.raises(TokenStoreError):
        store.load_token()


def test_overwrite_is_atomic_replace(tmp_path: Path) -> None:
    store = TokenStore(WS, tmp_path)
    store.save_token(TOKEN)
    store.save_token("second-token")
    assert store.load_token() == "second-token"
    assert sorted(p.name for p in store.directory.iterdir()) == [".auth_token"]


def test_missing_and_empty_files_mean_no_token(tmp_path: Path) -> None:
    store = TokenStore(WS, tmp_path)
    assert store.load_token() is None
    store.directory.mkdir(parents=True)
    store.token_path.write_text("  \n")
    assert store.load_token() is None


def test_sdk_written_token_with_trailing_newline_is_read(tmp_path: Path) -> None:
    store = TokenStore(WS, tmp_path)
    store.directory.mkdir(parents=True)
    store.token_path.write_text(TOKEN + "\n")
    assert store.load_token() == TOKEN


def test_corrupt_token_file_is_an_error_without_its_content(tmp_path: Path) -> None:
    store = TokenStore(WS, tmp_path)
    store.directory.mkdir(parents=True)
    store.token_path.write_bytes(b"abc def\x00")
    with pytest.raises(TokenStoreError) as info:
        store.load_token()
    assert "abc" not in str(info.value)


def test_adopt_explicit_token_caches_it(tmp_path: Path) -> None:
    store = TokenStore(WS, tmp_path)
    store.save_token(TOKEN)
    assert store.adopt_token("  explicit-token ") == "explicit-token"
    assert store.load_token() == "explicit-token"
    assert store.adopt_token(None) == "explicit-token"
    assert store.adopt_token("") == "explicit-token"


@pytest.mark.parametrize("bad", ["", "has space", "line\nbreak", "x" * (MAX_CREDENTIAL_LENGTH + 1)])
def test_check_credential_refuses_header_breakers(bad: str) -> None:
    with pytest.raises(ValueError):
        check_credential(bad)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden", "x" * 200])
def test_workspace_id_must_be_a_safe_path_component(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        TokenStore(bad, tmp_path)


def test_directory_in_the_way_is_an_error(tmp_path: Path) -> None:
    store = TokenStore(WS, tmp_path)
    store.base_dir.mkdir(parents=True, exist_ok=True)
    store.directory.write_text("not a directory")
    with pytest.raises(TokenStoreError):
        store.save_token(TOKEN)
