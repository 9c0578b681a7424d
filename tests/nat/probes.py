"""Small stdlib TCP servers and clients placed in namespaces, for the topology tests."""

from __future__ import annotations

import socket
import threading
import time
from typing import Final

from tests.nat.netns import Netns

#: Largest read of the echo server; the tests send a few bytes at a time.
CHUNK: Final = 65536


class EchoServer:
    """A TCP echo server listening inside ``ns``; remembers each client's address.

    Threads serve it, so it runs while the test thread blocks on a client. :meth:`close`
    stops it and closes every connection it accepted.
    """

    def __init__(self, ns: Netns, host: str) -> None:
        self.sock: socket.socket = ns.call(socket.create_server, (host, 0))
        self.port: int = self.sock.getsockname()[1]
        self.peers: list[tuple[str, int]] = []
        self._conns: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer[:2])
            self._conns.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        try:
            while data := conn.recv(CHUNK):
                conn.sendall(data)
        except OSError:
            pass

    def wait_peer(self, timeout: float = 5.0) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while not self.peers:
            if time.monotonic() > deadline:
                raise TimeoutError("no client reached the echo server")
            time.sleep(0.01)
        return self.peers[0]

    def close(self) -> None:
        self._closed = True
        for s in [self.sock, *self._conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept()/recv()
            except OSError:
                pass
            s.close()


def connect(ns: Netns, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection made from inside ``ns``; raises OSError/TimeoutError as connect does."""
    sock: socket.socket = ns.call(socket.create_connection, (host, port), timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def echo_rtts(sock: socket.socket, count: int, timeout: float = 10.0) -> list[float]:
    """Round-trip times in seconds of ``count`` one-byte echoes, one after the other."""
    sock.settimeout(timeout)
    rtts = []
    for _ in range(count):
        start = time.monotonic()
        sock.sendall(b"x")
        if sock.recv(1) != b"x":
            raise ConnectionError("echo connection closed")
        rtts.append(time.monotonic() - start)
    return rtts
