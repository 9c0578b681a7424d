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
from tests.support.apt import apt

#: command -> Debian package that provides it
COMMANDS: Final = {"ip": "iproute2", "tc": "iproute2", "nft": "nftables", "sysctl": "procps"}
LOCK_PATH: Final = Path(tempfile.gettempdir()) / "molecule-edge-nat-apt.lock"
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
            if err := apt("update") or apt("install", "-y", "--no-upgrade", *packages):
                return f"could not install {' '.join(packages)}: {err}"
    if still := _missing():
        return f"still missing after apt-get: {' '.join(still)}"
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
