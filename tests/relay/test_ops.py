"""Operating the relay: health, readiness, metrics, TLS, the CLI and its settings."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from cryptography import x509

from relay import cli
from relay.config import Settings
from relay.tokens import TokenStore
from tests.relay.conftest import RelayFactory, RunningRelay
from tests.relay.fake_agent import FakeAgent, FakeRequest
from wire import ErrorCode


async def test_health_ready_and_metrics(relay: RunningRelay) -> None:
    async def handler(request: FakeRequest) -> None:
        if request.target == "/fail":
            request.reset(ErrorCode.CONNECT_ERROR)
            return
        await request.read_body()
        await request.respond(200)
        await request.send(b"12345", end=True)

    async with relay.client() as client:
        assert (await client.get("/_edge/healthz")).json() == {"status": "ok"}
        ready = await client.get("/_edge/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "agents": 0}
        async with FakeAgent(relay.url, handler, token=relay.issue("demo"), name="demo") as agent:
            await agent.wait_welcome()
            assert (await client.post("/a/demo/", content=b"abc")).status_code == 200
            assert (await client.get("/a/demo/fail")).status_code == 502
            assert (await client.get("/a/nobody/")).status_code == 404
            metrics = await client.get("/_edge/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = set(metrics.text.splitlines())
    for expected in (
        "edge_agents_connected 1.0",
        "edge_streams_open 0.0",
        'edge_requests_total{class="2xx"} 1.0',
        'edge_requests_total{class="4xx"} 1.0',
        'edge_requests_total{class="5xx"} 1.0',
        'edge_relay_errors_total{code="unknown_tunnel"} 1.0',
        'edge_relay_errors_total{code="target_unreachable"} 1.0',
        'edge_stream_resets_total{by="agent",code="CONNECT_ERROR"} 1.0',
        "edge_agent_sessions_total 1.0",
        "edge_sessions_replaced_total 0.0",
        "edge_agent_reconnects_total 0.0",
        "edge_request_duration_seconds_count 2.0",
        "edge_request_first_byte_seconds_count 1.0",
        "# TYPE edge_requests_total counter",
    ):
        assert expected in lines, expected
    tunnel_bytes = {
        line.split("}")[0].split('"')[1]: float(line.split()[-1])
        for line in lines
        if line.startswith("edge_tunnel_bytes_total{")
    }
    # Heads included: the POST's head and its 3 body bytes; the 200 with its 5 bytes.
    assert tunnel_bytes["in"] > 3 + len("POST / HTTP/1.1\r\n") and tunnel_bytes["out"] > 5


async def test_accepted_sockets_have_tcp_nodelay(relay: RunningRelay) -> None:
    async with FakeAgent(relay.url, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            assert (await client.get("/a/demo/")).status_code == 200
            # The caller's keep-alive connection and the agent's WebSocket.
            transports = [c.transport for c in relay.app.connections]
            transports += [s.session.link.transport for s in relay.state.registry.local_sessions()]  # type: ignore[union-attr]
            assert len(transports) == 2
            for transport in transports:
                assert transport is not None
                sock = transport.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_readyz_is_503_while_draining(relay: RunningRelay) -> None:
    relay.state.draining = True
    async with relay.client() as client:
        assert (await client.get("/_edge/readyz")).status_code == 503
        assert (await client.get("/_edge/healthz")).status_code == 200
        r = await client.get("/a/demo/")
    assert r.status_code == 503 and r.headers["x-edge-error"] == "relay_draining"


async def test_tls_serves_https_and_wss(relay_factory: RelayFactory, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "tls"
    result = runner.invoke(
        cli.main, ["cert", "--out", str(out), "--host", "127.0.0.1", "--host", "localhost"]
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat(out / "key.pem").st_mode) == 0o600
    leaf = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]

    relay: RunningRelay = await relay_factory(tls_cert=out / "cert.pem", tls_key=out / "key.pem")
    context = ssl.create_default_context(cafile=str(out / "ca.pem"))
    token = relay.issue("demo")
    async with FakeAgent(relay.url, token=token, name="demo", ssl=context) as agent:
        welcome = await agent.wait_welcome()
        assert welcome.urls[0].startswith("https://127.0.0.1:")
        async with relay.client(verify=context) as client:
            r = await client.get("/a/demo/")
    assert r.status_code == 200


def test_token_commands(tmp_path: Path) -> None:
    state = tmp_path / "state"
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli.main, [*args, "--state-dir", str(state)])

    issued = run("token", "issue", "demo")
    assert issued.exit_code == 0
    token = issued.stdout.strip()
    assert issued.stdout == token + "\n" and token.startswith("mer_") and len(token) > 40
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state / "tokens.json").st_mode) == 0o600
    assert token not in (state / "tokens.json").read_text()
    store = TokenStore(state)
    store.refresh()
    assert store.authenticate(token) is not None

    assert run("token", "issue", "demo").exit_code == 1  # one token per name
    assert run("token", "issue", "Not_A_Name").exit_code == 1
    rotated = run("token", "issue", "demo", "--replace").stdout.strip()
    assert rotated != token

    listing = run("token", "list")
    assert listing.exit_code == 0
    assert listing.stdout.startswith("demo\t") and rotated not in listing.stdout

    assert run("token", "revoke", "demo").exit_code == 0
    assert run("token", "revoke", "demo").exit_code == 1
    assert run("token", "list").stdout == ""


def test_version_and_help() -> None:
    runner = CliRunner()
    assert "edge-relay" in runner.invoke(cli.main, ["--version"]).output
    text = runner.invoke(cli.main, ["serve", "--help"]).output
    for flag in (
        "--public-url",
        "--domain",
        "--open",
        "--tls-cert",
        "--max-body",
        "--drain-timeout",
        "--config",
        "--log-format",
        "--verbose",
    ):
        assert flag in text


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    seen: list[Settings] = []
    monkeypatch.setattr("relay.server.serve", seen.append)
    monkeypatch.setattr("relay.logs.configure", lambda *a: None)
    for name in list(os.environ):
        if name.startswith("EDGE_RELAY_"):
            monkeypatch.delenv(name)
    return seen


def test_settings_precedence_flags_env_file(
    captured: list[Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        'port = 1111\nhost = "0.0.0.0"\nmax-body = "1MiB"\npublic-url = "https://relay.example"\n'
        "response-timeout = 42\nopen = true\n"
    )
    monkeypatch.setenv("EDGE_RELAY_PORT", "2222")
    monkeypatch.setenv("EDGE_RELAY_MAX_STREAMS", "77")
    runner = CliRunner()
    for args in (["--config", str(config), "serve"], ["serve", "--config", str(config)]):
        assert runner.invoke(cli.main, args).exit_code == 0
    result = runner.invoke(cli.main, ["--config", str(config), "serve", "--port", "3333"])
    assert result.exit_code == 0, result.output
    assert "WARNING: open mode" in result.stderr
    from_file_env, _, flagged = captured
    assert from_file_env.port == 2222  # environment beats the file
    assert flagged.port == 3333  # a flag beats both
    assert from_file_env.host == "0.0.0.0"
    assert from_file_env.max_request_body == 1024 * 1024
    assert from_file_env.max_streams == 77
    assert from_file_env.response_timeout == 42.0
    assert from_file_env.open_mode is True
    assert from_file_env.base_url() == "https://relay.example"


def test_unknown_config_key_is_an_error(captured: list[Settings], tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("prot = 1\n")
    result = CliRunner().invoke(cli.main, ["--config", str(config), "serve"])
    assert result.exit_code == 2 and "prot" in result.output
    assert captured == []


def test_every_serve_flag_is_a_config_key(captured: list[Settings], tmp_path: Path) -> None:
    """A flag added to ``serve`` must be accepted in the config file too."""
    flags = {p.name for p in cli.serve.params if isinstance(p, click.Option) and p.name != "config"}
    flags = {"open" if name == "open_mode" else name for name in flags} - {"verbose", "log_format"}
    assert flags <= cli._SERVE_KEYS, sorted(flags - cli._SERVE_KEYS)
    config = tmp_path / "relay.toml"
    config.write_text("ping-interval = 3\nping-timeout = 4\n")
    assert CliRunner().invoke(cli.main, ["serve", "--config", str(config)]).exit_code == 0
    assert (captured[0].ws_ping_interval, captured[0].ws_ping_timeout) == (3.0, 4.0)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("*.tunnels.test", "without '*.'"),
        ("https://tunnels.test", "not a domain name"),
        ("tunnels.test:8080", "not a domain name"),
        ("tun nels.test", "not a domain name"),
        ("-bad.test", "not a domain name"),
        ("", "not a domain name"),
    ],
)
def test_a_bad_domain_is_refused_with_what_is_wrong(
    captured: list[Settings], tmp_path: Path, value: str, said: str
) -> None:
    for args in (["serve", "--domain", value], ["doctor", "--domain", value]):
        result = CliRunner().invoke(cli.main, args)
        assert result.exit_code == 2 and said in result.output, result.output
    config = tmp_path / "relay.toml"
    config.write_text(f'domain = "{value}"\n')
    result = CliRunner().invoke(cli.main, ["--config", str(config), "serve"])
    assert result.exit_code == 2 and said in result.output, result.output
    assert captured == []


def test_host_urls_keep_the_public_urls_scheme_and_port(captured: list[Settings]) -> None:
    runner = CliRunner()
    for public_url in (
        "https://relay.example:8443",
        "http://relay.example",
        "https://relay.example/",
    ):
        args = ["serve", "--domain", "Tunnels.Example.", "--public-url", public_url]
        assert runner.invoke(cli.main, args).exit_code == 0
    urls = [settings.tunnel_urls("demo")[1] for settings in captured]
    assert urls == [
        "https://demo.tunnels.example:8443/",
        "http://demo.tunnels.example/",
        "https://demo.tunnels.example/",
    ]
    assert Settings(port=9000, domain="localhost").tunnel_urls("demo", 9001) == (
        "http://127.0.0.1:9001/a/demo/",
        "http://demo.localhost:9001/",
    )


def test_localhost_routing_only_for_a_relay_on_loopback() -> None:
    assert Settings().route_domain() == "localhost"
    assert Settings(host="::1", public_url="http://localhost:8080").route_domain() == "localhost"
    assert Settings(domain="Tunnels.Example").route_domain() == "tunnels.example"
    assert Settings(host="0.0.0.0").route_domain() is None  # reachable from elsewhere
    assert Settings(public_url="https://relay.example").route_domain() is None
    assert Settings(public_url="https://relay.example").tunnel_urls("demo") == (
        "https://relay.example/a/demo/",
    )
