"""Processes of the TCP and TLS tunnel tests: ``edge-agent tcp|tls``, a port range for
the relay, a threaded echo server."""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

from tests.e2e.procs import BIN, Proc, RelayProc, clean_env, run_cli


def free_range(count: int) -> tuple[int, int]:
    """``count`` consecutive loopback ports that are free now (for ``--tcp-ports``)."""
    for _ in range(200):
        first = random.randrange(20000, 60000 - count)
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return first, first + count - 1
    raise RuntimeError(f"no {count} consecutive free ports")


def issue(state_dir: Path, name: str, *flags: str) -> str:
    done = run_cli("edge-relay", "token", "issue", name, "--state-dir", str(state_dir), *flags)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class RawAgent(Proc):
    """``edge-agent tcp|tls TARGET --relay URL --token T ...``."""

    def __init__(self, kind: str, relay: RelayProc, token: str, target: str, *args: str) -> None:
        argv = [str(BIN / "edge-agent"), kind, target, "--relay", relay.url, "--token", token]
        super().__init__(f"agent-{kind}", [*argv, *args], env=clean_env())

    def wait_forwarding(self, timeout: float = 20.0) -> tuple[str, str]:
        """The public address and the target of the ``Forwarding A -> T`` line."""
        match = self.wait_line(r"^Forwarding (\S+) -> (\S+)$", timeout)
        return match.group(1), match.group(2)


class EchoServer:
    """A threaded TCP echo server on a free loopback port (echoes until EOF)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self.sock.close()
