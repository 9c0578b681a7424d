"""Agents cut off for breaking the protocol wait before they may connect again.

A peer that breaks the protocol (a second GOAWAY, a flood of frames that make no
progress, bytes past its window...) is cut off at once, but an agent that reconnects at
once and does it again turns each cut into a new session set-up and a new flood: the
relay's loop spends its time on one bad agent. So each cut is a strike against the
agent's key, and its next upgrade requests are refused (429 ``agent_backoff`` with
``Retry-After``) for 1 s after the first strike, doubling with each further one up to
60 s. Strikes are forgotten 10 minutes after the last. The key is the token's digest;
an open relay, which has no token to tell agents apart, uses the client address.

An honest agent never breaks the protocol, so it never waits; its reconnect loop treats
429 as "retry later" anyway.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable
from typing import Final

#: Seconds refused after the first strike; each further strike doubles it, up to the cap.
FIRST_WAIT: Final = 1.0
MAX_WAIT: Final = 60.0
#: Seconds after the last strike when a key's strikes are forgotten.
MEMORY: Final = 600.0
#: Most keys remembered (the oldest strikes are forgotten first past it).
MAX_KEYS: Final = 10_000


@dataclasses.dataclass(slots=True)
class _Record:
    strikes: int
    last: float  # monotonic time of the last strike
    until: float  # refused before this monotonic time


class Penalties:
    """Strikes by key, and how long a key must still wait."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._records: collections.OrderedDict[str, _Record] = collections.OrderedDict()

    def strike(self, key: str) -> float:
        """Count a cut against ``key``; return the seconds it must now wait."""
        now = self._clock()
        record = self._records.pop(key, None)
        strikes = 1 if record is None or now - record.last > MEMORY else record.strikes + 1
        wait: float = min(MAX_WAIT, FIRST_WAIT * 2.0 ** min(strikes - 1, 16))
        self._records[key] = _Record(strikes, now, now + wait)
        while len(self._records) > MAX_KEYS:
            self._records.popitem(last=False)
        return wait

    def wait(self, key: str) -> float:
        """Seconds ``key`` must still wait before a new session (0: none)."""
        record = self._records.get(key)
        if record is None:
            return 0.0
        return max(0.0, record.until - self._clock())

    def __len__(self) -> int:
        return len(self._records)


def key_of(token_sha256: str | None, client: str) -> str:
    """The key of a session: its token's digest, else (open mode) its address."""
    return f"token:{token_sha256}" if token_sha256 is not None else f"addr:{client}"


#: Malformed request heads (400/431 from the head parser) one address may send within
#: :data:`OFFENCE_WINDOW` seconds before its connections are cut at once for
#: :data:`BLOCK_SECONDS`. A browser or an HTTP library never sends one.
OFFENCE_LIMIT: Final = 50
OFFENCE_WINDOW: Final = 10.0
BLOCK_SECONDS: Final = 10.0


@dataclasses.dataclass(slots=True)
class _Offences:
    count: int
    since: float  # monotonic start of the counting window
    until: float = 0.0  # connections cut before this monotonic time


class Offenders:
    """Public client addresses that keep sending malformed request heads.

    Refusing one costs the relay a read of up to the head limit, a parse and an answer
    (~0.4 ms); an attacker that opens connections in a loop turns that into most of a
    core. Past :data:`OFFENCE_LIMIT` in :data:`OFFENCE_WINDOW` seconds, the address's
    new connections are reset as soon as they are accepted, before any read, for
    :data:`BLOCK_SECONDS` (each connection tried meanwhile starts the block over).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._records: collections.OrderedDict[str, _Offences] = collections.OrderedDict()

    def offence(self, address: str) -> bool:
        """Count a malformed head from ``address``; True when it is now blocked."""
        now = self._clock()
        record = self._records.pop(address, None)
        if record is None or now - record.since > OFFENCE_WINDOW:
            record = _Offences(0, now, record.until if record is not None else 0.0)
        record.count += 1
        if record.count > OFFENCE_LIMIT:
            record.until = now + BLOCK_SECONDS
        self._records[address] = record
        while len(self._records) > MAX_KEYS:
            self._records.popitem(last=False)
        return record.until > now

    def blocked(self, address: str) -> bool:
        """Whether a new connection from ``address`` is cut at once (and the block
        extended: an address that keeps trying stays blocked)."""
        record = self._records.get(address)
        if record is None:
            return False
        now = self._clock()
        if record.until <= now:
            return False
        record.until = now + BLOCK_SECONDS
        return True
