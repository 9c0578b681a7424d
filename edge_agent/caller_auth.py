"""Caller credentials the relay enforces for this tunnel (``--caller-auth``).

The relay only ever learns the SHA-256 of a credential: for bearer, of the token; for
basic, of ``user:password``. The plain secret stays on this machine.
"""

from __future__ import annotations

import hashlib

from edge_agent.errors import ConfigError
from wire import CallerCredential


def bearer(token: str) -> CallerCredential:
    """Callers must send ``Authorization: Bearer <token>``."""
    if not token:
        raise ConfigError("caller auth bearer token is empty")
    return CallerCredential("bearer", _sha256(token))


def basic(user: str, password: str) -> CallerCredential:
    """Callers must send HTTP basic auth with this user and password."""
    if not user or ":" in user:
        raise ConfigError("caller auth basic user must be non-empty and without ':'")
    return CallerCredential("basic", _sha256(f"{user}:{password}"))


def parse(spec: str) -> CallerCredential:
    """``bearer:TOKEN`` or ``basic:USER:PASS`` (the password may contain ':')."""
    scheme, _, rest = spec.partition(":")
    if scheme == "bearer":
        return bearer(rest)
    if scheme == "basic":
        user, sep, password = rest.partition(":")
        if not sep:
            raise ConfigError("caller auth must look like basic:USER:PASS")
        return basic(user, password)
    raise ConfigError("caller auth must look like bearer:TOKEN or basic:USER:PASS")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
