"""A laptop whose only way out is the company proxy: the router forwards nothing, and a
real tinyproxy (HTTP CONNECT, basic auth) and microsocks (SOCKS5, user/password) listen
on its LAN address. The agent reaches a TLS relay through each, picked from
``HTTPS_PROXY`` and from ``--proxy``, and a caller on the internet reaches the laptop's
server through the tunnel."""

from __future__ import annotations

import ssl
import sys

import httpx
import pytest

from tests.deploy.tools import require
from tests.nat.procs import NsProcess, _accepts
from tests.nat.product import BIN, START_TIMEOUT, Relay, free_port
from tests.nat.product import require as require_product
from tests.nat.topology import INTERNET_IP, ROUTER_LAN_IP, Topology

pytestmark = pytest.mark.root

PASSWORD = "corp-pw-never-logged"


def _proxies(topo: Topology, relay_port: int) -> tuple[NsProcess, NsProcess]:
    """tinyproxy (port 3128) and microsocks (1080) in the router, on its LAN side."""
    conf = topo.log_dir / "tinyproxy.conf"
    conf.write_text(
        f"Port 3128\nListen {ROUTER_LAN_IP}\nTimeout 30\nMaxClients 20\nLogLevel Connect\n"
        f"BasicAuth alice {PASSWORD}\nConnectPort {relay_port}\n"
    )
    argv = [require("tinyproxy", "tinyproxy"), "-d", "-c", str(conf)]
    tinyproxy = topo.spawn(topo.router, "tinyproxy", argv)
    tinyproxy.wait_port(ROUTER_LAN_IP, 3128)
    argv = [require("microsocks", "microsocks"), "-i", ROUTER_LAN_IP, "-p", "1080"]
    socks = topo.spawn(topo.router, "microsocks", [*argv, "-u", "bob", "-P", PASSWORD])
    socks.wait_port(ROUTER_LAN_IP, 1080)
    return tinyproxy, socks


def _tls_relay(topo: Topology) -> tuple[Relay, str]:
    """A relay with an ``edge-relay cert`` certificate in the internet; and its CA file."""
    certs = topo.log_dir / "certs"
    topo.internet.run([str(BIN / "edge-relay"), "cert", "--out", str(certs), "--host", INTERNET_IP])
    port = free_port(topo.internet)
    state = topo.log_dir / "relay-state"
    state.mkdir(mode=0o700)
    argv = [str(BIN / "edge-relay"), "serve", "--host", "0.0.0.0", "--port", str(port)]
    argv += ["--public-url", f"https://{INTERNET_IP}:{port}", "--state-dir", str(state)]
    argv += ["--tls-cert", str(certs / "cert.pem"), "--tls-key", str(certs / "key.pem")]
    proc = topo.spawn(topo.internet, "relay", argv)
    proc.wait_port(INTERNET_IP, port, timeout=START_TIMEOUT)
    return Relay(proc, port, state), str(certs / "ca.pem")


def _get(url: str, ca_file: str) -> httpx.Response:
    context = ssl.create_default_context(cafile=ca_file)
    with httpx.Client(verify=context, trust_env=False, timeout=10) as client:
        return client.get(url)


def test_the_tunnel_goes_through_the_company_proxy(topo: Topology) -> None:
    require_product("edge-relay serve", "edge-agent http")
    topo.router.sysctl("net.ipv4.ip_forward", "0")  # the proxy is the only way out
    relay, ca_file = _tls_relay(topo)
    assert not topo.laptop.call(_accepts, INTERNET_IP, relay.port)  # no direct path
    tinyproxy, socks = _proxies(topo, relay.port)
    origin = _origin(topo)
    base = [
        str(BIN / "edge-agent"),
        "http",
        str(origin),
        "--relay",
        f"https://{INTERNET_IP}:{relay.port}",
    ]
    base += ["--token", relay.issue_token("laptop"), "--ca-file", ca_file, "--no-inspect", "-vvv"]
    ways = [
        ("env", [], {"HTTPS_PROXY": f"http://alice:{PASSWORD}@{ROUTER_LAN_IP}:3128"}),
        ("socks", ["--proxy", f"socks5h://bob:{PASSWORD}@{ROUTER_LAN_IP}:1080"], {}),
    ]
    for label, flags, env in ways:
        agent = topo.spawn(topo.laptop, f"agent-{label}", [*base, *flags], env=env)
        url = agent.wait_output(r"Forwarding (\S+) ->", timeout=START_TIMEOUT).group(1)
        answer = topo.internet.call(_get, url + "hello.txt", ca_file)
        assert (answer.status_code, answer.text) == (200, "behind the proxy\n"), label
        agent.stop()
        assert PASSWORD not in agent.output()
    assert f"CONNECT {INTERNET_IP}:{relay.port} HTTP/1.1" in tinyproxy.output()
    assert f"connected to {INTERNET_IP}:{relay.port}" in socks.output()


def _origin(topo: Topology) -> int:
    """A static file server on the laptop's 127.0.0.1."""
    root = topo.log_dir / "www"
    root.mkdir()
    (root / "hello.txt").write_text("behind the proxy\n")
    port = free_port(topo.laptop)
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    topo.spawn(topo.laptop, "origin", [*argv, "--directory", str(root)]).wait_port(
        "127.0.0.1", port
    )
    return port
