"""TLS: a relay with an ``edge-relay cert`` certificate serves HTTPS and WSS; the agent
verifies it by default, trusts it with ``--ca-file`` (optionally pinned), and skips
verification only with a loud ``--insecure``."""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.client import session
from tests.e2e.origin import Origin
from tests.e2e.procs import AgentProc, Procs, RelayProc, issue_token, run_cli, start_agent

EXIT_CONFIG = 2


@dataclass
class TlsRelay:
    relay: RelayProc
    certs: Path
    fingerprint: str
    token: str


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRelay]:
    certs = tmp_path_factory.mktemp("certs")
    done = run_cli("edge-relay", "cert", "--out", str(certs), "--host", "127.0.0.1")
    assert done.returncode == 0, done.stderr
    fingerprint = re.fullmatch(r"sha256 fingerprint: ([0-9a-f]{64})\n", done.stdout)
    assert fingerprint is not None, done.stdout
    assert (certs / "key.pem").stat().st_mode & 0o777 == 0o600
    state = tmp_path_factory.mktemp("tls-state")
    args = ("--tls-cert", str(certs / "cert.pem"), "--tls-key", str(certs / "key.pem"))
    procs = Procs()
    try:
        relay = procs.add(RelayProc(state, *args, name="relay-tls", tls=True))
        yield TlsRelay(relay, certs, fingerprint.group(1), issue_token(state, "secure"))
    finally:
        procs.stop_all()


async def _get_https(url: str, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    async with session() as http, http.get(url, ssl=context) as resp:
        await resp.read()
        return resp.status


def _refused(tls: TlsRelay, procs: Procs, origin: Origin, *flags: str) -> str:
    start = time.monotonic()
    args = (str(origin.port), "--relay", tls.relay.url, "--token", tls.token, *flags)
    agent = procs.add(AgentProc(*args, name="agent-tls-refused"))
    assert agent.wait(15) == EXIT_CONFIG, agent.output()
    agent.wait_line(r"edge-agent: error:", 5)
    assert time.monotonic() - start < 15
    assert agent.count(r"^Forwarding ") == 0
    return agent.output()


def test_agent_refuses_an_unknown_certificate_by_default(
    tls: TlsRelay, procs: Procs, origin: Origin
) -> None:
    out = _refused(tls, procs, origin)
    assert "edge-agent: error: the relay's certificate is not trusted" in out
    assert "--ca-file" in out


async def test_agent_trusts_the_relay_with_its_ca_file(
    tls: TlsRelay, procs: Procs, origin: Origin
) -> None:
    ca = tls.certs / "ca.pem"
    flags = ("--ca-file", str(ca), "--pin-sha256", tls.fingerprint)
    agent = procs.add(start_agent(tls.relay, tls.token, str(origin.port), *flags, name="a-ca"))
    assert agent.url == f"{tls.relay.url}/a/secure/"
    assert agent.url.startswith("https://")
    assert await _get_https(agent.url + "echo", ca) == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):  # callers verify too
        async with session() as http, http.get(agent.url + "echo"):
            pass


def test_agent_refuses_a_certificate_that_does_not_match_the_pin(
    tls: TlsRelay, procs: Procs, origin: Origin
) -> None:
    flags = ("--ca-file", str(tls.certs / "ca.pem"), "--pin-sha256", "ab" * 32)
    out = _refused(tls, procs, origin, *flags)
    assert "does not match the pin" in out


async def test_insecure_connects_and_warns_loudly(
    tls: TlsRelay, procs: Procs, origin: Origin
) -> None:
    agent = procs.add(
        start_agent(tls.relay, tls.token, str(origin.port), "--insecure", name="a-insecure")
    )
    agent.wait_line(r"^WARNING: --insecure: the relay's TLS certificate is NOT verified")
    assert await _get_https(agent.url + "echo", tls.certs / "ca.pem") == 200
