"""The edge-agent command line, run as a real subprocess against the fake relay."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from edge_agent.config import load_file, resolve_http
from edge_agent.errors import ConfigError
from tests.agent.certs import make_pki
from tests.agent.conftest import TOKEN
from tests.agent.fake_relay import FakeRelay, StreamWasReset
from tests.agent.origin import OriginApp, run_uvicorn
from wire import ErrorCode

ROOT = Path(__file__).resolve().parents[2]
EDGE_AGENT = str(Path(sys.executable).with_name("edge-agent"))


@asynccontextmanager
async def agent_process(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    proc = await asyncio.create_subprocess_exec(
        EDGE_AGENT,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean | (env or {}),
        cwd=ROOT,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().rstrip("\n")


async def test_http_prints_url_and_request_lines_then_drains(
    relay: FakeRelay, origin: str, tmp_path: Path
) -> None:
    port = origin.rsplit(":", 1)[1]
    config = tmp_path / "agent.toml"
    config.write_text(f'token = "{TOKEN}"\nname = "wrong"\n[http]\nname = "demo"\n')
    env = {"EDGE_RELAY_URL": relay.url}
    async with agent_process("http", port, "--config", str(config), env=env) as proc:
        assert await _line(proc) == f"Forwarding https://relay.test/a/demo/ -> {origin}"
        assert (await _line(proc)).startswith("Inspector http://127.0.0.1:")
        session = await relay.session()
        head, body = await session.request("POST", "/echo?x=1", body=b"hi")
        assert head.status == 201
        clock, method, target, status, ms, unit, size, b = (await _line(proc)).split()
        assert re.fullmatch(r"\d\d:\d\d:\d\d", clock)  # the time of day
        assert (method, target, status, unit, b) == ("POST", "/echo?x=1", "201", "ms", "B")
        assert int(ms) >= 0 and int(size) > len(body)  # the response's bytes, head included
        stream = await session.open("GET", "/missing-route")
        await stream.response()
        assert (await _line(proc)).split()[1:4] == ["GET", "/missing-route", "404"]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    assert [g.code for g in session.goaways] == [ErrorCode.NO_ERROR]


async def test_http_serves_an_asgi_app(relay: FakeRelay) -> None:
    args = ("http", "--app", "tests.agent.asgi_app:app", "--relay", relay.url)
    async with agent_process(*args, "--token", TOKEN, "--name", "demo") as proc:
        assert await _line(proc) == (
            "Forwarding https://relay.test/a/demo/ -> tests.agent.asgi_app:app"
        )
        session = await relay.session()
        head, body = await session.request("GET", "/hi")
        assert (head.status, body) == (200, b"hello from /hi")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


async def test_bad_token_exits_with_a_clear_message(relay: FakeRelay) -> None:
    secret = "not-the-right-token"
    args = ("http", "8000", "--relay", relay.url, "--token", secret, "-vv")
    async with agent_process(*args) as proc:
        _out, err = await asyncio.wait_for(proc.communicate(), 15)
    message = err.decode()
    assert proc.returncode == 3
    assert "edge-agent: error: the relay refused the agent's token (401 invalid_token" in message
    assert secret not in message  # not even in the -vv handshake logs
    assert len(relay.attempts) == 1


async def test_usage_errors_exit_2() -> None:
    async with agent_process("http", "8000") as proc:
        _out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 2 and b"EDGE_RELAY_URL" in err


def test_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'relay = "https://file.example"\ntoken = "file-token"\nca-file = "/ca.pem"\n'
        'caller-auth = "bearer:x"\n[run]\nworkspace = "ignored"\n'
    )
    file = load_file(str(config))
    env = {"EDGE_RELAY_URL": "https://env.example", "EDGE_RELAY_TOKEN": "env-token"}
    flags = {"relay": "https://flag.example", "target": "8000", "caller_auth": ()}
    settings = resolve_http(flags, env, file)
    assert settings.relay == "https://flag.example"  # flag > env
    assert settings.token == "env-token"  # env > file
    assert settings.ca_file == "/ca.pem"  # file
    assert settings.caller_auth == ("bearer:x",)
    with pytest.raises(ConfigError, match="either a TARGET"):
        resolve_http({"target": "1", "app": "m:a"}, env, {})
    with pytest.raises(ConfigError, match="unknown keys"):
        resolve_http({"target": "1"}, env, {"relya": "typo"})


async def test_https_target_with_its_own_certificate(relay: FakeRelay, tmp_path: Path) -> None:
    """``--target-ca`` trusts a local server's own CA (``--target-insecure`` skips the
    check); ``--host-header rewrite`` gives it its own host; the relay's TLS flags are
    not involved."""
    pki = make_pki(tmp_path)
    tls = (str(pki.cert_file), str(pki.key_file))
    async with run_uvicorn(OriginApp(), tls=tls) as origin:
        authority = origin.removeprefix("https://")
        for trust in (["--target-ca", str(pki.ca_file)], ["--target-insecure"]):
            args = ["http", origin, "--name", "demo", "--no-inspect", *trust]
            env = {"EDGE_RELAY_URL": relay.url, "EDGE_RELAY_TOKEN": TOKEN}
            async with agent_process(*args, "--host-header", "rewrite", env=env) as proc:
                assert (await _line(proc)).startswith("Forwarding ")
                session = await relay.session()
                head, raw = await session.request("GET", "/echo", [("Host", "demo.relay.test")])
                assert head.status == 201
                hosts = [v for n, v in json.loads(raw)["headers"] if n == "host"]
                assert hosts == [authority]
                proc.send_signal(signal.SIGINT)
                assert await asyncio.wait_for(proc.wait(), 15) == 0


async def test_https_target_not_trusted_is_a_clear_failure(
    relay: FakeRelay, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)
    tls = (str(pki.cert_file), str(pki.key_file))
    async with run_uvicorn(OriginApp(), tls=tls) as origin:
        env = {"EDGE_RELAY_URL": relay.url, "EDGE_RELAY_TOKEN": TOKEN}
        async with agent_process("http", origin, "--name", "demo", "--no-inspect", env=env) as p:
            assert (await _line(p)).startswith("Forwarding ")
            session = await relay.session()
            stream = await session.open("GET", "/echo")
            with pytest.raises(StreamWasReset):
                await stream.response()
            line = await _line(p)
            assert " GET /echo " in line and "certificate" in line.lower(), line
            p.send_signal(signal.SIGINT)
            await asyncio.wait_for(p.wait(), 15)


@pytest.mark.parametrize("kind", ["unknown host", "https to plain http", "not HTTP"])
async def test_a_wrong_relay_url_ends_with_one_line(origin: str, kind: str) -> None:
    """A first connection that fails for a reason a retry cannot fix ends the agent (a
    relay that worked once is retried forever instead)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if kind == "not HTTP":
            writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        else:  # a plain HTTP server reading a TLS hello
            await reader.read(1)
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    other = server.sockets[0].getsockname()[1]
    urls = {
        "unknown host": "http://no-such-relay.invalid:9",
        "https to plain http": f"https://127.0.0.1:{other}",
        "not HTTP": f"http://127.0.0.1:{other}",
    }
    port = origin.rsplit(":", 1)[1]
    args = ["http", port, "--relay", urls[kind], "--token", TOKEN, "--name", "demo"]
    async with server, agent_process(*args, "--no-inspect") as proc:
        code = await asyncio.wait_for(proc.wait(), 30)
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
    assert code == 2, err
    assert "check --relay" in err and err.count("\n") <= 3, err
