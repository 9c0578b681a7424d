"""Rules the relay and the agent must apply alike, defined once.

* :data:`CONNECT_PATH`: where an agent opens its tunnel WebSocket (everything the relay
  serves itself lives under :data:`RESERVED_PREFIX`).
* :func:`valid_name`: a tunnel name is a lowercase DNS label, so it can be a host name
  label (``<name>.DOMAIN``) and can never contain a dot, a slash or an escape.
* :func:`credential_sha256`: how a caller credential is digested, so the relay checks
  callers against digests the agent sent in HELLO without learning the credential.
* :data:`AGENT_KEY_HEADER`: the upgrade request header with which an agent proves, in
  open mode, that it is the machine that holds a live name (a secret the agent keeps;
  the relay keeps only its SHA-256, :func:`credential_sha256`).
* :data:`HOP_BY_HOP`: header names that describe one connection, not the message
  (RFC 9110 section 7.6.1, plus the legacy Proxy-Connection and Keep-Alive).
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

RESERVED_PREFIX: Final = "/_edge/"
CONNECT_PATH: Final = "/_edge/connect"

AGENT_KEY_HEADER: Final = "X-Edge-Agent-Key"

#: Longest agent key the relay reads (a longer one is refused 400 bad_agent_key).
MAX_AGENT_KEY: Final = 256

NAME_RE: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def valid_name(name: str) -> bool:
    """Whether ``name`` is a usable tunnel name (a lowercase DNS label, 1-63 chars)."""
    return NAME_RE.fullmatch(name) is not None


def credential_sha256(credential: str) -> str:
    """Lowercase hex SHA-256 of a caller credential: a bearer token, or ``user:password``."""
    return hashlib.sha256(credential.encode("utf-8")).hexdigest()
