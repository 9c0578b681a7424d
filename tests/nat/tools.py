"""What the NAT suite needs from the host, installed by the suite itself when missing.

Root, network namespaces, iproute2 (``ip``, ``tc``), nftables (``nft``) and procps
(``sysctl``). Missing packages are installed once with apt-get, under a lock file so that
two runs started together do not both run apt. :func:`prerequisites` returns ``None``
when everything is there, else the reason to skip (printed by the caller).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

from tests.nat import netns

#: command -> Debian package that provides it
COMMANDS: Final = {"ip": "iproute2", "tc": "iproute2", "nft": "nftables", "sysctl": "procps"}
LOCK_PATH: Final = Path(tempfile.gettempdir()) / "molecule-edge-nat-apt.lock"
#: apt-get update + install on a slow mirror; past this the suite skips instead of hanging.
APT_TIMEOUT: Final = 600.0

_cached: list[str | None] = []


def prerequisites() -> str | None:
    """``None`` when the suite can run here, else why not (computed once per session)."""
    if not _cached:
        _cached.append(_check())
    return _cached[0]


def _check() -> str | None:
    if os.geteuid() != 0:
        return "NAT tests need root (network namespaces, nftables); CI runs them as root"
    if reason := _install_missing():
        return reason
    return _probe_netns()


def _missing() -> list[str]:
    return sorted({pkg for cmd, pkg in COMMANDS.items() if shutil.which(cmd) is None})


def _install_missing() -> str | None:
    if not _missing():
        return None
    with LOCK_PATH.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be installing right now
        packages = _missing()
        if packages:
            print(f"NAT tests: installing {' '.join(packages)} with apt-get")
            if err := _apt(["update"]) or _apt(["install", "-y", "--no-upgrade", *packages]):
                return f"could not install {' '.join(packages)}: {err}"
    if still := _missing():
        return f"still missing after apt-get: {' '.join(still)}"
    return None


def _apt(args: list[str]) -> str | None:
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


def _probe_netns() -> str | None:
    """Make and remove one namespace with an nftables table, to fail early and clearly."""
    name = f"{netns.PREFIX}-{os.getpid()}-0-probe"
    try:
        ns = netns.Netns(name).add()
        ns.nft("table ip probe {\n chain c {\n type nat hook postrouting priority srcnat\n }\n}\n")
    except (netns.NetnsError, OSError, subprocess.SubprocessError) as exc:
        return f"network namespaces or nftables do not work here: {exc}"
    finally:
        netns.Netns(name).delete()
    return None
