"""The relay's token store: which agent token may claim which tunnel name.

A token is printed once by ``edge-relay token issue NAME``; the store keeps only its
SHA-256, so a stolen state file does not let anyone connect. One token per name; a token
claims only its own name. A token opens HTTP tunnels; raw TCP and TLS passthrough
tunnels only when issued with that permission (``--tcp``, ``--tls``: they bypass the
relay's HTTP checks, see docs/security.md), so a token issued before these existed,
whose record has no ``kinds``, opens HTTP tunnels only. Likewise a token lets several
agents serve its name at once (a pool, ``edge-agent http --pool``) only when issued with
``--pool``; its record then says ``"pool": true``. A name's TCP port, once the
relay picked it, is kept in its record: the port stays the name's across reconnects,
relay restarts and token rotation. The file is JSON, written atomically (temporary file in the same
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from relay.config import RESERVED_NAMES
from relay.errors import RelayConfigError
from wire import StreamKind
from wire.payloads import TUNNEL_NAMES
from wire.rules import valid_name

#: File name inside the state folder.
TOKENS_FILE: Final = "tokens.json"

#: Revoked names remembered (for 410 tunnel_revoked); past it the oldest are forgotten.
MAX_REVOKED_NAMES: Final = 10_000

#: Prefix of every token, so a leaked one is recognisable by secret scanners.
TOKEN_PREFIX: Final = "mer_"

#: Random bytes in a token (256 bits).
TOKEN_BYTES: Final = 32


#: What every token may open, and what a token may open at most.
DEFAULT_KINDS: Final = frozenset({StreamKind.HTTP})
ALL_KINDS: Final = frozenset(StreamKind)

_KIND_NAMES: Final = {text: kind for kind, text in TUNNEL_NAMES.items()}


@dataclasses.dataclass(frozen=True, slots=True)
class TokenRecord:
    """One stored token: the name it claims, the SHA-256 of the token, when issued, the
    kinds of tunnel it may open, the name's TCP port once one was picked, and whether
    several agents may serve the name at once (a pool)."""

    name: str
    sha256: str
    created: str
    kinds: frozenset[StreamKind] = DEFAULT_KINDS
    tcp_port: int | None = None
    pool: bool = False

    def to_json(self) -> dict[str, Any]:
        kinds = sorted(TUNNEL_NAMES[k] for k in self.kinds)
        out: dict[str, Any] = {"sha256": self.sha256, "created": self.created, "kinds": kinds}
        if self.tcp_port is not None:
            out["tcp_port"] = self.tcp_port
        if self.pool:
            out["pool"] = True
        return out


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
        self._install(self._read(), first=self._identity is None)
        self._identity = identity
        return True

    def _install(self, records: dict[str, TokenRecord], first: bool) -> None:
        """Use ``records`` from now on; names that left them (after the first read) were
        revoked."""
        if not first:
            self._revoked.update(dict.fromkeys(self._records.keys() - records.keys()))
        for name in records:
            self._revoked.pop(name, None)
        while len(self._revoked) > MAX_REVOKED_NAMES:
            del self._revoked[next(iter(self._revoked))]
        self._records = records

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

    def record(self, name: str) -> TokenRecord | None:
        return self._records.get(name)

    def issue(
        self,
        name: str,
        replace: bool = False,
        kinds: frozenset[StreamKind] = DEFAULT_KINDS,
        pool: bool = False,
    ) -> str:
        """Create a token for ``name`` and return it (the only time it is seen).

        ``kinds``: the tunnels it may open (HTTP is always among them); ``pool``: several
        agents may serve the name at once. A rotated token keeps the name's TCP port.

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
            old = records.get(name)
            port = old.tcp_port if old is not None else None
            records[name] = TokenRecord(
                name, token_hash(token), created, kinds | DEFAULT_KINDS, port, pool
            )
            self._write(records)
        return token

    def assign_port(
        self, name: str, pick: Callable[[int | None, set[int]], int | None]
    ) -> int | None:
        """Keep the TCP port ``pick(current, taken)`` returns in ``name``'s record.

        ``current`` is the record's port (None: none yet), ``taken`` the ports other
        records hold; ``pick`` (the relay, which binds the port it returns) answers
        None when no port is free. Returns the port, or None (also when ``name`` has no
        token). Runs under the store's lock, so two relays never pick the same port.
        """
        with self._locked():
            records = self._read()
            record = records.get(name)
            if record is None:
                return None
            taken = {r.tcp_port for r in records.values() if r.name != name and r.tcp_port}
            port = pick(record.tcp_port, taken)
            if port is not None and port != record.tcp_port:
                records[name] = dataclasses.replace(record, tcp_port=port)
                self._write(records)
            self._records = records
            self._identity = self._stat()
        return port

    def ports(self) -> dict[int, str]:
        """TCP ports the records hold, with their names."""
        return {r.tcp_port: r.name for r in self._records.values() if r.tcp_port is not None}

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
        data = {"version": 1, "tokens": {n: r.to_json() for n, r in records.items()}}
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
        kinds = _kinds(entry.get("kinds", ["http"]))
        port, pool = entry.get("tcp_port"), entry.get("pool", False)
        if kinds is None or not (port is None or (type(port) is int and 0 < port < 65536)):
            raise RelayConfigError(f"token store {path}: bad kinds or tcp_port for {name!r}")
        if type(pool) is not bool:
            raise RelayConfigError(f"token store {path}: bad pool for {name!r}")
        created = str(entry.get("created", ""))
        records[name] = TokenRecord(
            name, entry["sha256"], created, kinds | DEFAULT_KINDS, port, pool
        )
    return records


def _kinds(raw: Any) -> frozenset[StreamKind] | None:
    if not (isinstance(raw, list) and all(isinstance(k, str) for k in raw)):
        return None
    kinds = {_KIND_NAMES.get(k) for k in raw}
    return None if None in kinds else frozenset(k for k in kinds if k is not None)
