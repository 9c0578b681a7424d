"""The paths under test, from the load generator to the origin.

Each :class:`BenchPath` starts its own processes (all on 127.0.0.1, in a temporary
directory of their own), says where to send requests (:attr:`BenchPath.base_url`) and
which processes are the path's own (:meth:`BenchPath.pids`, measured for RSS and CPU).

* ``direct``: no hop; the limit every other path is compared with.
* ``nginx``: Debian nginx ``proxy_pass``, one worker, keep-alive to the origin, no
  request buffering, no response buffering for SSE.
* ``ssh``: OpenSSH ``ssh -N -R`` to a throwaway sshd with freshly generated host and
  user keys, strict host key checking against that host key.
* ``edge``: molecule-edge, ``edge-relay serve --open`` plus ``edge-agent http``.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar, Final

from bench.procs import START_TIMEOUT, BenchError, Child, Children, free_port, wait_listening

#: Tunnel name the molecule-edge path asks the relay for.
EDGE_NAME: Final = "bench"


def wait_http_ok(url: str, timeout: float = START_TIMEOUT, child: Child | None = None) -> None:
    """Poll ``url`` until it answers 200 (a tunnel may listen before it forwards)."""
    deadline, last = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        if child is not None and child.proc.poll() is not None:
            raise BenchError(f"{child.name} exited with {child.proc.returncode}: {child.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f} s ({last})")


class BenchPath(abc.ABC):
    key: ClassVar[str]
    label: ClassVar[str]

    def __init__(self, children: Children, workdir: Path) -> None:
        self.children = children
        self.workdir = workdir / self.key
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.base_url = ""
        self._own: list[Child] = []

    @abc.abstractmethod
    def start(self, origin_port: int) -> None:
        """Start the path's processes; afterwards ``base_url + "/small"`` answers."""

    def pids(self) -> list[int]:
        return [child.proc.pid for child in self._own]

    def own(self) -> list[Child]:
        """The processes this path started (nginx, sshd, relay, ...), oldest first."""
        return list(self._own)

    def stop(self) -> None:
        for child in reversed(self._own):
            self.children.stop(child)
        self._own.clear()

    @staticmethod
    def missing() -> str | None:
        """Why this path cannot run on this machine, or None."""
        return None

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = self.children.start(f"{self.key}-{name}", argv, env=env, cwd=self.workdir)
        self._own.append(child)
        return child


class Direct(BenchPath):
    key, label = "direct", "direct"

    def start(self, origin_port: int) -> None:
        self.base_url = f"http://127.0.0.1:{origin_port}"


NGINX_CONF: Final = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    tcp_nodelay on;
    upstream origin {{
        server 127.0.0.1:{origin};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 0;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_request_buffering off;
        # Buffer responses in memory only (nginx's default buffers, never a temp file).
        proxy_max_temp_file_size 0;
        location / {{ proxy_pass http://origin; }}
        location /sse {{ proxy_pass http://origin; proxy_buffering off; }}
    }}
}}
"""


class Nginx(BenchPath):
    key, label = "nginx", "nginx proxy_pass"

    @staticmethod
    def missing() -> str | None:
        return None if shutil.which("nginx") else "nginx is not installed"

    def start(self, origin_port: int) -> None:
        port = free_port()
        # Workers run as an unprivileged user when we are root: let them in.
        self.workdir.chmod(0o755)
        conf = self.workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.workdir, origin=origin_port, port=port))
        argv = ["nginx", "-p", str(self.workdir), "-c", str(conf)]
        child = self._spawn("nginx", [*argv, "-e", str(self.workdir / "error.log")])
        wait_listening(port, child=child)
        self.base_url = f"http://127.0.0.1:{port}"
        wait_http_ok(self.base_url + "/small", child=child)


SSHD_CONF: Final = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding remote
GatewayPorts no
X11Forwarding no
PermitTTY no
UsePAM no
StrictModes no
LogLevel ERROR
"""


class SshReverse(BenchPath):
    key, label = "ssh", "ssh -R"

    @staticmethod
    def missing() -> str | None:
        needed = ("/usr/sbin/sshd", "ssh", "ssh-keygen")
        absent = [tool for tool in needed if not shutil.which(tool)]
        return f"missing {', '.join(absent)} (openssh)" if absent else None

    def start(self, origin_port: int) -> None:
        d, sshd_port, public_port = self.workdir, free_port(), free_port()
        for key in ("host_key", "user_key"):
            with contextlib.suppress(FileNotFoundError):
                (d / key).unlink()
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True
            )
        shutil.copy(d / "user_key.pub", d / "authorized_keys")
        host_pub = (d / "host_key.pub").read_text().split()
        (d / "known_hosts").write_text(f"[127.0.0.1]:{sshd_port} {host_pub[0]} {host_pub[1]}\n")
        user = os.environ.get("USER") or _whoami()
        (d / "sshd_config").write_text(SSHD_CONF.format(port=sshd_port, dir=d, user=user))
        # sshd's privilege separation needs this directory; systemd normally makes it.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        sshd = self._spawn("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")])
        wait_listening(sshd_port, child=sshd)
        ssh = self._spawn("client", self._ssh_argv(sshd_port, public_port, origin_port, user))
        wait_listening(public_port, child=ssh)
        self.base_url = f"http://127.0.0.1:{public_port}"
        self.ready(ssh)

    def ready(self, client: Child) -> None:
        """Wait until the forwarded port serves (the HTTP origin answers /small)."""
        wait_http_ok(self.base_url + "/small", child=client)

    def _ssh_argv(self, sshd_port: int, public_port: int, origin_port: int, user: str) -> list[str]:
        d = self.workdir
        options = {
            "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": str(d / "known_hosts"),
            "GlobalKnownHostsFile": "/dev/null",
            "IdentitiesOnly": "yes",
            "BatchMode": "yes",
            "ExitOnForwardFailure": "yes",
            "ControlMaster": "no",
            "ServerAliveInterval": "20",
        }
        argv = ["ssh", "-F", "/dev/null", "-N", "-i", str(d / "user_key"), "-p", str(sshd_port)]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        forward = f"127.0.0.1:{public_port}:127.0.0.1:{origin_port}"
        return [*argv, "-R", forward, f"{user}@127.0.0.1"]


def _whoami() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def edge_command(name: str) -> list[str]:
    """The console script of the installed project, next to this interpreter."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [name]


def edge_missing(names: tuple[str, ...] = ("edge-relay", "edge-agent")) -> str | None:
    """Why the molecule-edge commands cannot run yet, or None."""
    for name in names:
        try:
            result = subprocess.run(
                [*edge_command(name), "--help"], capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{name} --help failed: {exc}"
        if result.returncode != 0:
            last = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
            return f"{name} is not ready ({' '.join(last) or 'exit ' + str(result.returncode)})"
    return None


class MoleculeEdge(BenchPath):
    key, label = "edge", "molecule-edge"

    @staticmethod
    def missing() -> str | None:
        return edge_missing()

    def start(self, origin_port: int) -> None:
        port = free_port()
        relay_url = f"http://127.0.0.1:{port}"
        relay = self._spawn(
            "relay",
            [
                *edge_command("edge-relay"),
                *("serve", "--host", "127.0.0.1", "--port", str(port), "--open"),
                *("--state-dir", str(self.workdir / "relay-state")),
            ],
        )
        wait_listening(port, child=relay)
        agent = self._spawn(
            "agent",
            [
                *edge_command("edge-agent"),
                *("http", str(origin_port), "--relay", relay_url, "--name", EDGE_NAME),
                "--no-inspect",  # the comparison is of the tunnels (inspector: docs/inspector.md)
            ],
        )
        self.base_url = f"{relay_url}/a/{EDGE_NAME}"
        wait_http_ok(self.base_url + "/small", child=agent)


ALL_PATHS: Final[dict[str, type[BenchPath]]] = {
    cls.key: cls for cls in (Direct, Nginx, SshReverse, MoleculeEdge)
}


def path_keys(selection: str | None, default: str) -> list[str]:
    """Parse ``--paths``; raises BenchError for a name that is not a path."""
    keys = [k.strip() for k in (selection or default).split(",") if k.strip()]
    unknown = [k for k in keys if k not in ALL_PATHS]
    if unknown:
        raise BenchError(f"unknown paths: {', '.join(unknown)} (known: {', '.join(ALL_PATHS)})")
    return keys
