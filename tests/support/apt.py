"""Installing a Debian package from a test's set-up, as CI (root, clean machine) needs."""

from __future__ import annotations

import os
import subprocess
from typing import Final

#: Seconds one apt-get call may take (an index refresh on a slow mirror included).
APT_TIMEOUT: Final = 600.0


def apt(*args: str) -> str | None:
    """Run ``apt-get -q ARGS`` non-interactively. None on success, else why it failed."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        proc = subprocess.run(
            ["apt-get", "-q", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=APT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"apt-get {args[0]}: {exc}"
    if proc.returncode != 0:
        return f"apt-get {args[0]} exited {proc.returncode}: {proc.stderr.strip()[-500:]}"
    return None
