"""The topology itself: the NAT premise and each fault, with stdlib sockets only.

These tests do not involve the product. They prove that the laboratory behaves like the
real thing before the product tests rely on it.
"""

from __future__ import annotations

import errno
import statistics
from pathlib import Path

import pytest

from tests.nat import netns
from tests.nat.faults import impaired, silent_drop
from tests.nat.probes import EchoServer, connect, echo_rtts
from tests.nat.topology import (
    INTERNET_IP,
    ISP_UP_IP,
    LAPTOP_IP,
    LAPTOP_NET,
    ROUTER_WAN_IP,
    Topology,
)

pytestmark = pytest.mark.root

UNREACHABLE = (errno.ENETUNREACH, errno.EHOSTUNREACH)


def test_laptop_reaches_internet_through_masquerade(topo: Topology) -> None:
    server = EchoServer(topo.internet, "0.0.0.0")
    try:
        with connect(topo.laptop, INTERNET_IP, server.port, timeout=5) as conn:
            assert echo_rtts(conn, 3)
        assert server.wait_peer()[0] == ROUTER_WAN_IP  # not the laptop's 10.77.1.2
    finally:
        server.close()


def test_internet_cannot_open_a_connection_to_the_laptop(topo: Topology) -> None:
    server = EchoServer(topo.laptop, "0.0.0.0")
    try:
        # The server is up: the laptop itself reaches it.
        connect(topo.laptop, LAPTOP_IP, server.port, timeout=2).close()
        # No route to a private address on the internet.
        with pytest.raises(OSError) as unrouted:
            connect(topo.internet, LAPTOP_IP, server.port, timeout=2)
        assert unrouted.value.errno in UNREACHABLE
        # The router's public address forwards no port.
        with pytest.raises(ConnectionRefusedError):
            connect(topo.internet, ROUTER_WAN_IP, server.port, timeout=2)
        # Even with the private subnet routed to the router, its filter drops new inbound
        # connections silently.
        topo.isp.ip("route", "add", LAPTOP_NET, "via", ROUTER_WAN_IP)
        topo.internet.ip("route", "add", LAPTOP_NET, "via", ISP_UP_IP)
        with pytest.raises(TimeoutError):
            connect(topo.internet, LAPTOP_IP, server.port, timeout=2)
        assert server.peers == [(LAPTOP_IP, server.peers[0][1])]  # only the laptop's own
    finally:
        server.close()


def test_link_down_stalls_open_connection_and_new_ones_work_after(topo: Topology) -> None:
    server = EchoServer(topo.internet, "0.0.0.0")
    conn = connect(topo.laptop, INTERNET_IP, server.port, timeout=5)
    try:
        echo_rtts(conn, 1)
        topo.link_down()
        conn.sendall(b"y")  # accepted into the send buffer; it cannot leave
        conn.settimeout(3)
        with pytest.raises(TimeoutError):
            conn.recv(1)
        with pytest.raises(OSError) as refused:
            connect(topo.laptop, INTERNET_IP, server.port, timeout=3)
        assert refused.value.errno in UNREACHABLE
        topo.link_up()
        with connect(topo.laptop, INTERNET_IP, server.port, timeout=5) as fresh:
            assert echo_rtts(fresh, 1)
        # Neither end gave up, so TCP's retransmission delivers the byte sent while down:
        # a short cut is invisible to TCP; only application pings can notice it.
        conn.settimeout(20)
        assert conn.recv(1) == b"y"
    finally:
        conn.close()
        server.close()


def test_impairment_adds_delay_each_way_and_goes_away(topo: Topology) -> None:
    server = EchoServer(topo.internet, "0.0.0.0")
    conn = connect(topo.laptop, INTERNET_IP, server.port, timeout=5)
    try:
        before = statistics.median(echo_rtts(conn, 5))
        with impaired(topo, delay_ms=100, loss_pct=1.0) as impairment:
            during = echo_rtts(conn, 9)
        after = statistics.median(echo_rtts(conn, 5))
    finally:
        conn.close()
        server.close()
    during_ms = [round(r * 1000) for r in during]
    print(f"{impairment.kind}: RTT ms before {before * 1000:.2f}, during {during_ms}")
    assert before < 0.1
    # 100 ms each way: at least 200 ms (a lost packet only adds to it); wide upper margin.
    assert 0.19 <= statistics.median(during) < 1.5, impairment
    assert after < 0.1


def test_silent_drop_gives_no_reset_and_the_connection_resumes(topo: Topology) -> None:
    server = EchoServer(topo.internet, "0.0.0.0")
    conn = connect(topo.laptop, INTERNET_IP, server.port, timeout=5)
    try:
        echo_rtts(conn, 1)
        with silent_drop(topo):
            conn.sendall(b"z")
            conn.settimeout(4)
            with pytest.raises(TimeoutError):  # no RST (ConnectionResetError), no ICMP
                conn.recv(1)
            with pytest.raises(TimeoutError):  # a new SYN vanishes too: not refused
                connect(topo.laptop, INTERNET_IP, server.port, timeout=2)
        conn.settimeout(20)
        assert conn.recv(1) == b"z"  # TCP retransmission gets through once the drop ends
    finally:
        conn.close()
        server.close()


def test_destroy_removes_every_namespace_and_process(nat_host: None, tmp_path: Path) -> None:
    topology = Topology.build(tmp_path)
    proc = topology.spawn(topology.laptop, "sleeper", ["sleep", "600"])
    names = {ns.name for ns in topology.namespaces}
    assert names <= set(netns.list_names())
    topology.destroy()
    assert proc.popen.poll() is not None
    assert not names & set(netns.list_names())
