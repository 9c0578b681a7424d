"""The agent key: a secret that shows an open-mode relay which machine holds a name.

Without a token, anyone may ask an open relay for any free name; a live name is given
only to an upgrade that presents the same key as the session holding it (header
``X-Edge-Agent-Key``; the relay keeps its SHA-256). So an agent that restarts, or
reconnects before the relay noticed its old session die, gets its name back at once,
while an agent on another machine is refused 409 ``name_in_use``.

Without a token, ``edge-agent http`` keeps its key in
``$XDG_STATE_HOME/edge-agent/agent-key`` (``~/.local/state/...``), 0600, made on first
use: the same for every agent process of this user on this machine. Where it cannot be
stored, and with a token (which proves the name by itself), the key is per process.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Final

#: Characters of a new key (URL-safe base64 of 32 random bytes).
KEY_BYTES: Final = 32

logger = logging.getLogger(__name__)


def key_file() -> Path:
    """``$XDG_STATE_HOME/edge-agent/agent-key`` or ``~/.local/state/edge-agent/agent-key``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-agent" / "agent-key"


def new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def machine_key(path: Path | None = None) -> str:
    """This machine's agent key: read from ``path`` (default :func:`key_file`), or made
    and stored there (0600, in a 0700 folder). A per-process key when that fails."""
    path = path or key_file()
    try:
        key = path.read_text("ascii").strip()
        if key:
            return key
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("agent_key_unreadable", extra={"path": str(path), "error": str(exc)})
        return new_key()
    return _store(path, new_key())


def _store(path: Path, key: str) -> str:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another agent process made it first: use theirs
        return path.read_text("ascii").strip() or key
    except OSError as exc:
        logger.info("agent_key_not_stored", extra={"path": str(path), "error": str(exc)})
        return key
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
    return key
