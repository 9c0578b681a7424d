"""TCP tunnel ports are allocated cluster-wide: two names never get the same port, even
on nodes that could both bind it, and a name keeps its port when it moves node."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.cluster.conftest import RedisServer, start_node
from tests.e2e.procs import BIN, Proc, Procs, clean_env, run_cli
from tests.tcp.procs import EchoServer, free_range


def _raw_agent(procs: Procs, nodes: list[str], token: str, target: int, label: str) -> Proc:
    relays = [arg for node in nodes for arg in ("--relay", node)]
    argv = [str(BIN / "edge-agent"), "tcp", str(target), *relays, "--token", token]
    return procs.add(Proc(label, argv, env=clean_env()))


def _port(agent: Proc, nth: int = 1) -> int:
    agent.wait_count(r"^Forwarding \S+ -> ", nth)
    lines = [line for line in agent.lines if line.startswith("Forwarding ")]
    return int(lines[nth - 1].split()[1].rsplit(":", 1)[1])


def _echo(host: str, port: int, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2) as sock:
                sock.sendall(b"ping")
                return sock.recv(16)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _issue(redis: RedisServer, name: str) -> str:
    done = run_cli("edge-relay", "token", "issue", name, "--tcp", "--cluster", redis.url)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_ports_are_cluster_wide_and_follow_the_name(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    first, last = free_range(2)
    echo = EchoServer()
    try:
        with Procs() as procs:
            flags = ("--tcp-ports", f"{first}-{last}")
            node_a = start_node(procs, redis_server, tmp_path_factory.mktemp("a"), "node-a",
                                *flags, host="127.0.0.2")  # fmt: skip
            node_b = start_node(procs, redis_server, tmp_path_factory.mktemp("b"), "node-b",
                                *flags, host="127.0.0.3")  # fmt: skip
            one = _raw_agent(procs, [node_a.url, node_b.url], _issue(redis_server, "one"),
                             echo.port, "agent-one")  # fmt: skip
            port_one = _port(one)
            two = _raw_agent(procs, [node_b.url], _issue(redis_server, "two"), echo.port,
                             "agent-two")  # fmt: skip
            port_two = _port(two)
            assert {port_one, port_two} == {first, last}  # B could bind A's port: it did not
            assert _echo("127.0.0.2", port_one) == b"ping"
            node_a.signal(signal.SIGKILL)
            assert _port(one, nth=2) == port_one  # on node B now, same port
            assert _echo("127.0.0.3", port_one) == b"ping"
    finally:
        echo.close()
