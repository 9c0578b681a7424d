"""A throwaway OpenSSH server on a free loopback port, and the client commands that
reach it (through a tunnel) with keys made for the test.

Debian's ``openssh-server`` and ``openssh-client`` are installed with apt-get when
missing (CI: root on a clean machine). The server runs as root in the foreground
(``sshd -D -e -f CONFIG``) with its own host key and one authorized user key, every file
in the test's folder; clients trust that host key alone (``HostKeyAlias``), so a
successful login proves the bytes reached this sshd and no other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

import pytest

from tests.e2e.procs import Proc, free_port, wait_port
from tests.support.apt import apt

#: The name clients know the server's host key by, whatever port they connect to.
ALIAS: Final = "edge-test-sshd"

_PACKAGES: Final = {"sshd": "openssh-server", "ssh": "openssh-client", "scp": "openssh-client"}


def ssh_tool(command: str) -> str:
    """The path of ``sshd``/``ssh``/``scp``, installing the package when missing."""
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/usr/bin")
    if found:
        return found
    package = _PACKAGES[command]
    install = ("install", "-y", "--no-upgrade", "--no-install-recommends", package)
    why = apt(*install) and (apt("update") or apt(*install))
    found = shutil.which(command, path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.skip(f"{package} is missing and could not be installed: {why or 'not found'}")
    return found


def _keygen(path: Path) -> None:
    subprocess.run(
        [ssh_tool("ssh").replace("/ssh", "/ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f",
         str(path)],
        check=True,
        capture_output=True,
    )  # fmt: skip


class Sshd:
    """``sshd`` for one test folder; :meth:`stop` ends it (also on ``with`` exit)."""

    def __init__(self, folder: Path) -> None:
        if os.geteuid() != 0:
            pytest.skip("the throwaway sshd runs as root (privilege separation needs it)")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        self.host_key = folder / "host_key"
        self.user_key = folder / "user_key"
        _keygen(self.host_key)
        _keygen(self.user_key)
        (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
        host_pub = (folder / "host_key.pub").read_text().split()
        (folder / "known_hosts").write_text(f"{ALIAS} {host_pub[0]} {host_pub[1]}\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self.port = free_port()
        config = folder / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "Subsystem sftp internal-sftp\nMaxStartups 100\nLogLevel ERROR\n"
        )
        self.proc = Proc("sshd", [ssh_tool("sshd"), "-D", "-e", "-f", str(config)])
        try:
            wait_port(self.port, timeout=10.0)
        except BaseException:
            self.stop()
            raise

    def client_options(self, port: int) -> list[str]:
        """Options of ``ssh``/``scp`` that reach this server at ``127.0.0.1:port``."""
        return [
            "-F", "/dev/null",
            "-i", str(self.user_key),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", f"HostKeyAlias={ALIAS}",
            "-o", f"UserKnownHostsFile={self.folder / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=10",
        ]  # fmt: skip

    def ssh(
        self, port: int, *command: str, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        argv = [ssh_tool("ssh"), *self.client_options(port), "-p", str(port), "root@127.0.0.1"]
        return subprocess.run(
            [*argv, *command], capture_output=True, text=True, timeout=timeout, check=False
        )

    def scp(
        self, port: int, source: Path, dest: Path, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        argv = [ssh_tool("scp"), *self.client_options(port), "-P", str(port), "-q"]
        return subprocess.run(
            [*argv, str(source), f"root@127.0.0.1:{dest}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self) -> None:
        self.proc.stop(timeout=5.0)

    def __enter__(self) -> Sshd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
