"""The tunnel through real proxies on loopback: Debian's tinyproxy (HTTP CONNECT with
basic auth) and microsocks (SOCKS5 with user/password), chosen by ``--proxy`` or by the
environment, and each way a proxy refuses. The proxy's own log proves the tunnel went
through it; tests/nat/test_proxy.py shows a laptop that has no other way out."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.deploy.tools import require
from tests.e2e.origin import Origin
from tests.e2e.procs import (
    BIN,
    AgentProc,
    Proc,
    Procs,
    RelayProc,
    clean_env,
    free_port,
    issue_token,
    run_cli,
    wait_port,
)

PASSWORD = "pw-4b1d-never-logged"


@dataclass
class Setup:
    relay: RelayProc  # plain HTTP
    tls_relay: RelayProc
    ca_file: Path
    token: str  # for "demo", on both relays
    http_proxy: Proc  # tinyproxy: alice / PASSWORD; CONNECT to the relays' ports only
    http_port: int
    socks: Proc  # microsocks: bob / PASSWORD
    socks_port: int


def _tinyproxy(tmp: Path, ports: list[int]) -> tuple[Proc, int]:
    port = free_port()
    conf = tmp / "tinyproxy.conf"
    allowed = "".join(f"ConnectPort {p}\n" for p in ports)
    conf.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nLogLevel Connect\n"
        f"BasicAuth alice {PASSWORD}\n{allowed}"
    )
    proc = Proc("tinyproxy", [require("tinyproxy", "tinyproxy"), "-d", "-c", str(conf)])
    return proc, port


def _microsocks() -> tuple[Proc, int]:
    port = free_port()
    argv = [require("microsocks", "microsocks"), "-i", "127.0.0.1", "-p", str(port)]
    return Proc("microsocks", [*argv, "-u", "bob", "-P", PASSWORD]), port


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("proxy")
    done = run_cli("edge-relay", "cert", "--out", str(tmp / "certs"), "--host", "127.0.0.1")
    assert done.returncode == 0, done.stderr
    tls_args = ["--tls-cert", str(tmp / "certs/cert.pem"), "--tls-key", str(tmp / "certs/key.pem")]
    with Procs() as procs:
        relay = procs.add(RelayProc(tmp / "state"))
        tls_relay = procs.add(RelayProc(tmp / "state", *tls_args, name="relay-tls", tls=True))
        http_proxy, http_port = _tinyproxy(tmp, [relay.port, tls_relay.port])
        procs.add(http_proxy)
        socks, socks_port = _microsocks()
        procs.add(socks)
        wait_port(http_port)
        wait_port(socks_port)
        token = issue_token(tmp / "state", "demo")
        yield Setup(
            relay, tls_relay, tmp / "certs/ca.pem", token, http_proxy, http_port, socks, socks_port
        )


def _agent(procs: Procs, relay: str, *flags: str, env: dict[str, str] | None = None) -> AgentProc:
    argv = ["--relay", relay, "--name", "demo", "--no-inspect", *flags]
    return procs.add(AgentProc(*argv, env=env))


def test_http_connect_with_basic_auth_to_a_tls_relay(
    setup: Setup, procs: Procs, origin: Origin
) -> None:
    proxy = f"http://alice:{PASSWORD}@127.0.0.1:{setup.http_port}"
    flags = ["--token", setup.token, "--ca-file", str(setup.ca_file), "--proxy", proxy, "-vvv"]
    agent = _agent(procs, setup.tls_relay.url, str(origin.port), *flags)
    url = agent.wait_url()
    context = ssl.create_default_context(cafile=str(setup.ca_file))
    with httpx.Client(verify=context, trust_env=False, timeout=10) as client:
        assert client.get(url + "echo?via=proxy").json()["query_string"] == "via=proxy"
    setup.http_proxy.wait_line(rf"CONNECT 127\.0\.0\.1:{setup.tls_relay.port} HTTP/1\.1")
    agent.stop()
    assert PASSWORD not in agent.output()  # not even in -vvv's handshake logs


def test_socks5_from_the_environment_and_no_proxy(
    setup: Setup, procs: Procs, origin: Origin
) -> None:
    socks = f"socks5h://bob:{PASSWORD}@127.0.0.1:{setup.socks_port}"
    through = rf"connected to 127\.0\.0\.1:{setup.relay.port}"
    before = setup.socks.count(through)
    env = {"all_proxy": socks, "EDGE_RELAY_TOKEN": setup.token}
    agent = _agent(procs, setup.relay.url, str(origin.port), env=env)
    url = agent.wait_url()
    with httpx.Client(trust_env=False, timeout=10) as client:
        assert client.get(url + "echo").status_code == 200
    setup.socks.wait_count(through, before + 1)
    agent.stop()
    # NO_PROXY names the relay's host: straight there, the proxy sees nothing.
    agent = _agent(procs, setup.relay.url, str(origin.port), env=env | {"NO_PROXY": "127.0.0.1"})
    agent.wait_url()
    agent.stop()
    assert setup.socks.count(through) == before + 1


@pytest.mark.parametrize(
    ("proxy", "relay_port", "message"),
    [
        (
            "http://127.0.0.1:{http}",
            None,
            "the proxy http://127.0.0.1:{http} requires authentication "
            "(407 Proxy Authentication Required): give http://USER:PASSWORD@HOST:PORT",
        ),
        (
            "http://alice:wrong-{pw}@127.0.0.1:{http}",
            None,
            "the proxy http://127.0.0.1:{http} refused the user name or password "
            "(401 Unauthorized)",
        ),
        (
            "http://alice:{pw}@127.0.0.1:{http}",
            9,
            "the proxy http://127.0.0.1:{http} refused to connect to the relay 127.0.0.1:9 "
            "(403 Access violation)",
        ),
        (
            "socks5://127.0.0.1:{socks}",
            None,
            "the SOCKS5 proxy socks5://127.0.0.1:{socks} accepts none of the agent's "
            "authentication methods: give socks5://USER:PASSWORD@HOST:PORT",
        ),
        (
            "socks5://bob:wrong-{pw}@127.0.0.1:{socks}",
            None,
            "the SOCKS5 proxy socks5://127.0.0.1:{socks} refused the user name or password",
        ),
        ("ftp://127.0.0.1:21", None, "--proxy: proxy scheme 'ftp' is not supported"),
    ],
)
def test_a_proxy_refusal_is_one_line_and_exit_2(
    setup: Setup, proxy: str, relay_port: int | None, message: str
) -> None:
    ports = {"http": setup.http_port, "socks": setup.socks_port, "pw": PASSWORD}
    relay = f"http://127.0.0.1:{relay_port or setup.relay.port}"
    argv = ["http", "8000", "--relay", relay, "--token", setup.token, "--no-inspect"]
    done = run_cli("edge-agent", *argv, "--proxy", proxy.format(**ports))
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert re.search(re.escape(message.format(**ports)), lines[-1]), done.stderr
    assert PASSWORD not in done.stderr and "Traceback" not in done.stderr


def test_start_takes_proxy_too(setup: Setup, procs: Procs, origin: Origin) -> None:
    config = Path(setup.ca_file).parent.parent / "start.toml"
    config.write_text(
        f'relay = "{setup.relay.url}"\ntoken = "{setup.token}"\n'
        f'[tunnels.one]\ntarget = {origin.port}\nname = "demo"\n'
        f'proxy = "http://alice:{PASSWORD}@127.0.0.1:{setup.http_port}"\n'
    )
    argv = [str(BIN / "edge-agent"), "start", "--all"]
    agent = procs.add(Proc("start", [*argv, "--config", str(config)], env=clean_env()))
    agent.wait_line(r"^\[one\] Forwarding ")
    setup.http_proxy.wait_line(rf"CONNECT 127\.0\.0\.1:{setup.relay.port} HTTP/1\.1")
