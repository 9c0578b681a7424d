"""The relay's token store: which agent token may claim which tunnel name.

A token is printed once by ``edge-relay token issue NAME``; the store keeps only its
SHA-256, so a stolen state file does not let anyone connect. One token per name; a token
claims only its own name. The file is JSON, written atomically (temporary file in the same
folder, fsync, rename) with mode 0600 in a 0700 folder, under an exclusive lock so two CLI
invocations cannot lose each other's change.

A running relay notices ``token revoke`` by polling the file's identity (inode, size,
mtime) every :data:`relay.config.TOKEN_POLL_INTERVAL` seconds and re-reading it when it
changed; sessions whose token is gone (or was re-issued) are then closed with GOAWAY
UNAUTHORIZED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from relay.config import RESERVED_NAMES
from relay.errors import RelayConfigError
from wire.rules import valid_name

#: File name inside the state folder.
TOKENS_FILE: Final = "tokens.json"

#: Revoked names remembered (for 410 tunnel_revoked); past it the oldest are forgotten.
MAX_REVOKED_NAMES: Final = 10_000

#: Prefix of every token, so a leaked one is recognisable by secret scanners.
TOKEN_PREFIX: Final = "mer_"

#: Random bytes in a token (256 bits).
TOKEN_BYTES: Final = 32


@dataclasses.dataclass(frozen=True, slots=True)
class TokenRecord:
    """One stored token: the name it claims, the SHA-256 of the token, when issued."""

    name: str
    sha256: str
    created: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """Tokens kept in ``<state_dir>/tokens.json``.

    Reading never creates anything; :meth:`issue` and :meth:`revoke` create the folder
    (0700) and the file (0600) when needed. Raises :class:`RelayConfigError` for a file
    that cannot be read or parsed.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / TOKENS_FILE
        self._records: dict[str, TokenRecord] = {}
        self._identity: tuple[int, int, int] | None = None
        #: Names whose token this process saw disappear (oldest first, at most
        #: MAX_REVOKED_NAMES): their public URL answers 410 tunnel_revoked, not 503.
        self._revoked: dict[str, None] = {}

    # -- the relay side: authenticate and notice changes --------------------------------

    def refresh(self) -> bool:
        """Re-read the file if it changed since the last read. Returns whether it did."""
        identity = self._stat()
        if identity == self._identity:
            return False
        records = self._read()
        if self._identity is not None:  # not the first read: these were revoked
            self._revoked.update(dict.fromkeys(self._records.keys() - records.keys()))
        for name in records:
            self._revoked.pop(name, None)
        while len(self._revoked) > MAX_REVOKED_NAMES:
            del self._revoked[next(iter(self._revoked))]
        self._records = records
        self._identity = identity
        return True

    def revoked(self, name: str) -> bool:
        """Whether ``name``'s token was revoked while this relay ran (and none issued since)."""
        return name in self._revoked

    def authenticate(self, token: str) -> TokenRecord | None:
        """The record ``token`` belongs to, or None. Compares every hash in constant time."""
        digest = token_hash(token)
        found: TokenRecord | None = None
        for record in self._records.values():
            if hmac.compare_digest(record.sha256, digest):
                found = record
        return found

    def current_hash(self, name: str) -> str | None:
        record = self._records.get(name)
        return record.sha256 if record else None

    def owns(self, name: str) -> bool:
        """Whether a token exists for ``name`` (such names are not free in open mode)."""
        return name in self._records

    # -- the CLI side ---------------------------------------------------------------------

    def records(self) -> list[TokenRecord]:
        self.refresh()
        return sorted(self._records.values(), key=lambda r: r.name)

    def issue(self, name: str, replace: bool = False) -> str:
        """Create a token for ``name`` and return it (the only time it is seen).

        Raises RelayConfigError for an invalid or reserved name, or when ``name`` has a
        token already and ``replace`` is false.
        """
        if not valid_name(name) or name in RESERVED_NAMES:
            raise RelayConfigError(f"{name!r} is not a valid tunnel name (a lowercase DNS label)")
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        with self._locked():
            records = self._read()
            if name in records and not replace:
                raise RelayConfigError(f"{name} already has a token (use --replace to rotate it)")
            created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            records[name] = TokenRecord(name, token_hash(token), created)
            self._write(records)
        return token

    def revoke(self, name: str) -> bool:
        """Delete ``name`` 's token. Returns False if it had none."""
        with self._locked():
            records = self._read()
            if records.pop(name, None) is None:
                return False
            self._write(records)
        return True

    # -- files ----------------------------------------------------------------------------

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _read(self) -> dict[str, TokenRecord]:
        try:
            raw = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RelayConfigError(f"cannot read token store {self.path}: {exc}") from exc
        return _parse(raw, self.path)

    def _write(self, records: dict[str, TokenRecord]) -> None:
        data = {"version": 1, "tokens": {n: dataclasses.asdict(r) for n, r in records.items()}}
        tmp = self.path.with_name(f".{TOKENS_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_dir()
        fd = os.open(self.state_dir / ".tokens.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _ensure_dir(self) -> None:
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkdir's mode is filtered by the umask and ignored for an existing folder.
            os.chmod(self.state_dir, 0o700)
        except OSError as exc:
            raise RelayConfigError(f"cannot use state folder {self.state_dir}: {exc}") from exc


def _parse(raw: Any, path: Path) -> dict[str, TokenRecord]:
    tokens = raw.get("tokens") if isinstance(raw, dict) else None
    if not isinstance(tokens, dict):
        raise RelayConfigError(f"token store {path} is malformed")
    records: dict[str, TokenRecord] = {}
    for name, entry in tokens.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)):
            raise RelayConfigError(f"token store {path}: bad entry for {name!r}")
        records[name] = TokenRecord(name, entry["sha256"], str(entry.get("created", "")))
    return records
