"""One relay name with several addresses (DNS round robin over the nodes): the agent
moves to another address when its node dies. The agent runs in a mount namespace whose
/etc/hosts gives ``relays.test`` two loopback addresses, one node on each."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.cluster.conftest import NameOrigin, RedisServer, issue, start_node, wait_status
from tests.e2e.procs import BIN, Proc, Procs, clean_env, free_port

FAILOVER_BOUND = 10.0


def _namespaced_agent(procs: Procs, hosts: Path, relay: str, token: str, target: int) -> Proc:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /etc/hosts")
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    agent = [str(BIN / "edge-agent"), "http", str(target), "--relay", relay, "--token", token]
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(hosts)]
    return procs.add(Proc("agent-dns", [*argv, *agent], env=clean_env()))


def test_a_name_with_two_addresses_fails_over(
    redis_server: RedisServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    origin = NameOrigin("dns")
    port = free_port()
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.2 relays.test\n127.0.0.3 relays.test\n")
    try:
        with Procs() as procs:
            nodes = [
                start_node(
                    procs,
                    redis_server,
                    tmp_path_factory.mktemp("n"),
                    f"node-{host}",
                    host=host,
                    port=port,
                )
                for host in ("127.0.0.2", "127.0.0.3")
            ]
            relay = f"http://relays.test:{port}"
            agent = _namespaced_agent(procs, hosts, relay, issue(redis_server, "dns"), origin.port)
            agent.wait_line(r"^Forwarding ")
            owner = next(n for n in nodes if n.count(r"agent_connected") > 0)
            other = next(n for n in nodes if n is not owner)
            wait_status(f"{other.url}/a/dns/", 200, 5.0)  # through the other node: a hop
            owner.signal(signal.SIGKILL)
            killed = time.monotonic()
            wait_status(f"{other.url}/a/dns/", 200, FAILOVER_BOUND)
            print(f"failover by address: {time.monotonic() - killed:.2f} s")
            other.wait_line(r"agent_connected")
            agent.wait_line(r"relay_switched")
    finally:
        origin.close()
