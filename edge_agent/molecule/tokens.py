"""The workspace credential cache, where the Molecule SDK keeps it.

Layout (the same as ``molecule_agent.RemoteAgentClient``, so either tool can pick up a
token the other obtained)::

    <base dir, default ~/.molecule>/            created 0700 if missing, never re-moded
        <workspace-id>/                         0700 (repaired)
            .auth_token                         0600  the workspace token, bare, no newline
            .platform_inbound_secret            0600  "next" generation only

Writes are atomic (a temporary file in the same directory, fsync, ``os.replace``), so a
reader never sees half a token and there is no window with default-umask permissions:
the temporary file is created 0600. Unlike the SDK we take no ``fcntl`` lock (POSIX
only, and a contended write was silently skipped there); ``os.replace`` is atomic on
POSIX and Windows alike.

``base_dir`` may also name a per-workspace folder itself, as the SDK's ``token_dir``
does: a folder called ``<workspace-id>``, or one that holds ``.auth_token`` while it has
no ``<workspace-id>/.auth_token`` below it. Then the token is read and written there.

Loose permissions found on an existing directory or file are repaired (and logged,
without the content). On Windows the POSIX mode bits mean little; there we rely on the
per-user profile directory's ACLs and skip the checks.

Values are never logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import sys
import tempfile
from pathlib import Path

from edge_agent.molecule.errors import TokenStoreError

logger = logging.getLogger(__name__)

#: Where the SDK keeps its per-workspace directories.
DEFAULT_BASE_DIR = Path("~") / ".molecule"
TOKEN_FILE = ".auth_token"
INBOUND_SECRET_FILE = ".platform_inbound_secret"

DIR_MODE = 0o700
FILE_MODE = 0o600

#: Longest credential we accept (from disk, the command line or the platform). Real
#: tokens are 43 characters; the bound keeps a corrupt file from becoming a huge header.
MAX_CREDENTIAL_LENGTH = 4096

# A credential goes into an HTTP header: visible ASCII only, so nothing can smuggle a
# CR/LF into the request.
_CREDENTIAL_RE = re.compile(r"[\x21-\x7e]+")
# The workspace id becomes a path component: no separators, no "..".
_WORKSPACE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

_POSIX = sys.platform != "win32"


def check_credential(value: str, what: str = "token") -> str:
    """Return ``value`` stripped, or raise ``ValueError`` if it cannot be a credential."""
    value = value.strip()
    if not 0 < len(value) <= MAX_CREDENTIAL_LENGTH or not _CREDENTIAL_RE.fullmatch(value):
        raise ValueError(f"the {what} is empty, too long or contains non-printable characters")
    return value


class TokenStore:
    """Reads and writes one workspace's credentials on disk.

    Args:
        workspace_id: the workspace UUID; it names the directory.
        base_dir: the directory holding per-workspace directories (``~/.molecule``),
            or one workspace's own folder (see the module docstring).

    Raises:
        ValueError: ``workspace_id`` is not usable as a directory name.
    """

    def __init__(self, workspace_id: str, base_dir: Path | str | None = None) -> None:
        if not _WORKSPACE_ID_RE.fullmatch(workspace_id):
            raise ValueError(f"invalid workspace id for the token cache: {workspace_id!r}")
        base = (Path(base_dir) if base_dir is not None else DEFAULT_BASE_DIR).expanduser()
        if _is_workspace_folder(base, workspace_id):
            self.base_dir, self.directory = base.parent, base
        else:
            self.base_dir, self.directory = base, base / workspace_id

    @property
    def token_path(self) -> Path:
        return self.directory / TOKEN_FILE

    @property
    def inbound_secret_path(self) -> Path:
        return self.directory / INBOUND_SECRET_FILE

    def load_token(self) -> str | None:
        """The cached token, or ``None`` when there is none."""
        return self._load(self.token_path, "token")

    def save_token(self, token: str) -> None:
        """Cache ``token`` (atomically, 0600 in a 0700 directory)."""
        self._save(self.token_path, check_credential(token, "token"))

    def load_inbound_secret(self) -> str | None:
        """The cached platform inbound secret, or ``None``."""
        return self._load(self.inbound_secret_path, "inbound secret")

    def save_inbound_secret(self, secret: str) -> None:
        """Cache the platform inbound secret next to the token."""
        self._save(self.inbound_secret_path, check_credential(secret, "inbound secret"))

    def adopt_token(self, explicit: str | None) -> str | None:
        """The token to use: ``explicit`` (command line / environment) wins and is cached.

        Returns the cached token when ``explicit`` is ``None`` or empty.
        """
        if explicit and explicit.strip():
            token = check_credential(explicit, "token")
            if self.load_token() != token:
                self.save_token(token)
                logger.info("token_cached path=%s source=explicit", self.token_path)
            return token
        return self.load_token()

    def _load(self, path: Path, what: str) -> str | None:
        try:
            raw = _read_no_follow(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TokenStoreError(f"cannot read the cached {what} at {path}: {exc}") from exc
        self._repair(path)
        try:
            text = raw.decode("ascii")
            return check_credential(text, what) if text.strip() else None
        except (UnicodeDecodeError, ValueError) as exc:
            raise TokenStoreError(f"the cached {what} at {path} is corrupt") from exc

    def _save(self, path: Path, value: str) -> None:
        try:
            self._ensure_directory()
            _atomic_write(path, value.encode("ascii"))
        except OSError as exc:
            raise TokenStoreError(f"cannot write {path}: {exc}") from exc

    def _ensure_directory(self) -> None:
        # The base directory is only created private, never re-moded: it may be one the
        # user chose and shares. The per-workspace directory is ours and kept 0700.
        self.base_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self.directory.mkdir(mode=DIR_MODE, exist_ok=True)
        if self.directory.is_symlink() or not self.directory.is_dir():
            raise TokenStoreError(f"{self.directory} is not a directory")
        _repair_mode(self.directory, DIR_MODE)

    def _repair(self, path: Path) -> None:
        try:
            _repair_mode(self.directory, DIR_MODE)
            _repair_mode(path, FILE_MODE)
        except OSError as exc:
            raise TokenStoreError(f"cannot fix permissions of {path}: {exc}") from exc


def _is_workspace_folder(folder: Path, workspace_id: str) -> bool:
    """Whether ``folder`` is one workspace's folder (the SDK's ``token_dir``), not a base."""
    if folder.name == workspace_id:
        return True
    try:
        nested = (folder / workspace_id / TOKEN_FILE).exists()
        return not nested and (folder / TOKEN_FILE).is_file()
    except OSError:  # unreadable: treat it as a base and let reading report the problem
        return False


def _read_no_follow(path: Path) -> bytes:
    # O_NOFOLLOW: a symlink planted in place of the file is refused, not followed.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(MAX_CREDENTIAL_LENGTH + 64)


def _atomic_write(path: Path, data: bytes) -> None:
    # mkstemp creates the file 0600 itself, so the value is never readable by others.
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _repair_mode(path, FILE_MODE)


def _repair_mode(path: Path, wanted: int) -> None:
    """Make ``path``'s permission bits ``wanted`` if group/other have any access."""
    if not _POSIX:
        return
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    if mode & 0o077 or mode & wanted != wanted:
        logger.warning(
            "credential_permissions_repaired",
            extra={"path": str(path), "was": f"{mode:o}", "now": f"{wanted:o}"},
        )
        os.chmod(path, wanted)
