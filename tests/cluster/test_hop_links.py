"""The entry node's links to an owner node, against a scripted owner on a real socket:
a reused link that the owner closed before answering is retried once on a new link for
a request that is all head, never for one with a body (no double POST)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.cluster.conftest import RedisServer, start_node
from tests.e2e.procs import Procs, RelayProc

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class ScriptedOwner:
    """Answers the first request of each connection, then drops the connection when the
    next one arrives (a keep-alive race lost); records every request head."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.heads: list[bytes] = []
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            served = 0
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                self.heads.append(head)
                if served:
                    return  # closed without an answer
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")), 0,
                )  # fmt: skip
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                conn.sendall(OK)
                served += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def entry(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RelayProc, ScriptedOwner]]:
    owner = ScriptedOwner()
    with Procs() as procs:
        node = start_node(procs, redis_server, tmp_path_factory.mktemp("e"), "entry")
        url = f"http://127.0.0.1:{owner.port}"
        client = redis.Redis.from_url(redis_server.url)
        client.set("edge:session:scripted", url, ex=60)
        client.publish("edge:sessions", f"up scripted {url}")
        client.close()
        deadline = time.monotonic() + 5
        while httpx.get(f"{node.url}/a/scripted/").status_code != 200:
            assert time.monotonic() < deadline, node.output()
            time.sleep(0.05)
        yield node, owner
    owner.close()


def test_a_get_is_sent_again_on_a_new_link(entry: tuple[RelayProc, ScriptedOwner]) -> None:
    node, owner = entry
    before = owner.connections
    answer = httpx.get(f"{node.url}/a/scripted/again")
    assert answer.status_code == 200 and answer.text == "ok"
    assert owner.connections == before + 1
    assert [h.split(b" ")[1] for h in owner.heads[-2:]] == [b"/a/scripted/again"] * 2
    assert all(b"x-edge-hop: " in h.lower() for h in owner.heads)


def test_a_post_is_never_sent_twice(entry: tuple[RelayProc, ScriptedOwner]) -> None:
    node, owner = entry
    heads = len(owner.heads)
    answer = httpx.post(f"{node.url}/a/scripted/pay", content=b"once")
    assert answer.status_code == 503
    assert answer.headers["x-edge-error"] == "node_unreachable"
    assert "closed the connection before answering" in answer.json()["error"]["message"]
    assert len(owner.heads) == heads + 1
