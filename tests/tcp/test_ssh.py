"""Raw TCP tunnels end to end: real OpenSSH through ``edge-agent tcp`` to a throwaway
sshd, the port a name keeps, the token's TCP permission, and the stream limit."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import Procs, RelayProc
from tests.tcp.procs import EchoServer, RawAgent, free_range, issue
from tests.tcp.sshd import Sshd

#: Size of the file copied with scp.
SCP_BYTES = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with Sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def procs() -> Iterator[Procs]:
    with Procs() as started:
        yield started


def tcp_relay(procs: Procs, state: Path, *args: str, port: int = 0) -> RelayProc:
    first, last = free_range(4)
    return procs.add(RelayProc(state, "--tcp-ports", f"{first}-{last}", *args, port=port))


def public_port(address: str) -> int:
    assert address.startswith("tcp://127.0.0.1:"), address
    return int(address.rsplit(":", 1)[1])


def test_ssh_and_a_100_mib_scp_through_the_tunnel(sshd: Sshd, procs: Procs, tmp_path: Path) -> None:
    relay = tcp_relay(procs, tmp_path / "state")
    token = issue(relay.state_dir, "shell", "--tcp")
    agent = procs.add(RawAgent("tcp", relay, token, str(sshd.port)))
    address, target = agent.wait_forwarding()
    assert target == f"127.0.0.1:{sshd.port}"
    port = public_port(address)
    assert port != sshd.port

    done = sshd.ssh(port, "echo", "ok")
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr

    source, dest = tmp_path / "big.bin", tmp_path / "copied.bin"
    source.write_bytes(os.urandom(SCP_BYTES))
    started = time.monotonic()
    done = sshd.scp(port, source, dest)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest
    print(f"scp of 100 MiB through the tunnel: {elapsed:.2f} s")
    agent.wait_line(r"^TCP connection \d+ closed .* B out")


def test_a_name_keeps_its_port_across_an_agent_reconnect_and_a_relay_restart(
    sshd: Sshd, procs: Procs, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    relay = tcp_relay(procs, state)
    token = issue(state, "keep", "--tcp")
    first = procs.add(RawAgent("tcp", relay, token, str(sshd.port)))
    port = public_port(first.wait_forwarding()[0])
    stored = json.loads((state / "tokens.json").read_text())["tokens"]["keep"]
    assert stored["tcp_port"] == port

    first.stop()  # the agent goes away; a new one for the same name gets the same port
    second = procs.add(RawAgent("tcp", relay, token, str(sshd.port)))
    assert public_port(second.wait_forwarding()[0]) == port
    assert sshd.ssh(port, "echo", "ok").stdout == "ok\n"

    relay.stop()  # a new relay process, same state: the agent reconnects by itself
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    args = relay.args[relay.args.index("--tcp-ports") :]
    relay = procs.add(RelayProc(state, *args, port=relay.port))
    relay.wait_line(r"tcp_port_open agent=keep port=" + str(port), timeout=30)
    done = sshd.ssh(port, "echo", "ok")
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


def test_a_token_without_the_tcp_permission_is_refused_clearly(
    procs: Procs, tmp_path: Path
) -> None:
    relay = tcp_relay(procs, tmp_path / "state")
    token = issue(relay.state_dir, "webonly")
    agent = procs.add(RawAgent("tcp", relay, token, "22"))
    assert agent.wait(20) == 3  # EXIT_AUTH: no retry
    line = agent.wait_line(r"^edge-agent: error: ")
    assert "may not open TCP tunnels" in line.string
    assert "edge-relay token issue webonly --tcp" in line.string
    assert "tcp_port_open" not in relay.output()


def test_connections_beyond_the_stream_limit_are_refused_at_once(
    procs: Procs, tmp_path: Path
) -> None:
    echo = EchoServer()
    try:
        relay = tcp_relay(procs, tmp_path / "state", "--max-streams", "2")
        token = issue(relay.state_dir, "echo", "--tcp")
        agent = procs.add(RawAgent("tcp", relay, token, str(echo.port)))
        port = public_port(agent.wait_forwarding()[0])
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        for i, sock in enumerate(held):  # both are open streams now
            sock.sendall(b"ping%d" % i)
            assert sock.recv(100) == b"ping%d" % i
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        started = time.monotonic()
        try:
            assert extra.recv(100) == b""
        except ConnectionResetError:
            pass  # aborted: a reset is a refusal too
        assert time.monotonic() - started < 2.0
        assert echo.accepted == 2  # the third never reached the target
        held[0].sendall(b"still")  # the held ones were not disturbed
        assert held[0].recv(100) == b"still"
        for sock in (*held, extra):
            sock.close()
    finally:
        echo.close()


def test_half_closes_and_both_directions_at_once(procs: Procs, tmp_path: Path) -> None:
    """16 MiB sent while the echo comes back, then the caller's half-close: every byte
    returns, in order, and the echo server's close reaches the caller as a clean EOF."""
    echo = EchoServer()
    try:
        relay = tcp_relay(procs, tmp_path / "state")
        token = issue(relay.state_dir, "echo", "--tcp")
        agent = procs.add(RawAgent("tcp", relay, token, str(echo.port)))
        port = public_port(agent.wait_forwarding()[0])
        payload = os.urandom(16 * 1024 * 1024)
        conn = socket.create_connection(("127.0.0.1", port), timeout=20)

        def send() -> None:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)  # our half ends; theirs is still open

        sender = threading.Thread(target=send)
        sender.start()
        received = bytearray()
        while data := conn.recv(1 << 20):
            received += data
        sender.join(20)
        conn.close()
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        agent.wait_line(r"^TCP connection \d+ closed .* 16777216 B in 16777216 B out$")
    finally:
        echo.close()
