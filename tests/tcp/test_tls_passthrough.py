"""TLS passthrough end to end: ``edge-agent tls`` in front of a local server that
terminates TLS itself (``openssl s_server``), reached through the relay's HTTPS port by
SNI. The callers verify the LOCAL server's certificate, issued by a CA made here that
the relay never sees: a relay that terminated TLS could not present it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.certs import write_dev_certificate
from tests.e2e.procs import Proc, Procs, RelayProc, free_port, wait_port
from tests.tcp.procs import RawAgent, issue

DOMAIN = "edge.test"


@pytest.fixture
def procs() -> Iterator[Procs]:
    with Procs() as started:
        yield started


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian: openssl, curl)")
    return found


def setup(procs: Procs, tmp: Path) -> tuple[RelayProc, Path, Path]:
    """A TLS relay with --domain, a TLS-terminating local server behind ``edge-agent tls``
    as ``web``; returns the relay, the relay's CA and the local server's CA."""
    relay_certs, web_certs = tmp / "relay-certs", tmp / "web-certs"
    write_dev_certificate(relay_certs, ["127.0.0.1", "localhost"])
    write_dev_certificate(web_certs, [f"web.{DOMAIN}"])
    web_port = free_port()
    procs.add(
        Proc(
            "s_server",
            [tool("openssl"), "s_server", "-quiet", "-www", "-accept", str(web_port),
             "-cert", str(web_certs / "cert.pem"), "-key", str(web_certs / "key.pem")],
        )
    )  # fmt: skip
    wait_port(web_port)
    relay = procs.add(
        RelayProc(
            tmp / "state",
            "--tls-cert", str(relay_certs / "cert.pem"),
            "--tls-key", str(relay_certs / "key.pem"),
            "--domain", DOMAIN,
            tls=True,
        )
    )  # fmt: skip
    token = issue(relay.state_dir, "web", "--tls")
    agent = procs.add(
        RawAgent("tls", relay, token, str(web_port), "--ca-file", str(relay_certs / "ca.pem"))
    )
    address, target = agent.wait_forwarding()
    assert (address, target) == (f"tls://web.{DOMAIN}:{relay.port}", f"127.0.0.1:{web_port}")
    return relay, relay_certs / "ca.pem", web_certs / "ca.pem"


def curl(
    port: int, ca: Path | None, host: str, path: str = "/"
) -> subprocess.CompletedProcess[str]:
    trust = ["--cacert", str(ca)] if ca is not None else ["--insecure"]
    return subprocess.run(
        [tool("curl"), "-sS", "--max-time", "10", *trust,
         "--resolve", f"{host}:{port}:127.0.0.1", f"https://{host}:{port}{path}"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )  # fmt: skip


def test_the_local_servers_own_certificate_reaches_the_caller(procs: Procs, tmp_path: Path) -> None:
    relay, relay_ca, web_ca = setup(procs, tmp_path)
    port = relay.port
    done = curl(port, web_ca, f"web.{DOMAIN}")
    assert done.returncode == 0, done.stderr
    assert "s_server" in done.stdout  # openssl's status page, over the local server's TLS

    # The relay's CA does not vouch for what the caller got: the relay did not terminate.
    refused = curl(port, relay_ca, f"web.{DOMAIN}")
    assert refused.returncode == 60, refused.stderr  # curl: certificate problem

    # openssl s_client sees the chain the local server sent, verified with its CA.
    shown = subprocess.run(
        [tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}",
         "-servername", f"web.{DOMAIN}", "-CAfile", str(web_ca), "-verify_return_error",
         "-brief"],
        input="", capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "Verification: OK" in shown.stderr
    assert f"web.{DOMAIN}" in shown.stderr


def test_the_relays_own_hosts_share_the_port(procs: Procs, tmp_path: Path) -> None:
    relay, relay_ca, _ = setup(procs, tmp_path)
    port = relay.port
    own = curl(port, relay_ca, "localhost", "/_edge/healthz")
    assert own.returncode == 0, own.stderr  # the relay's certificate, the relay's answer
    by_path = curl(port, relay_ca, "localhost", "/a/web/")  # no HTTP side to a TLS tunnel
    assert '"unknown_tunnel"' in by_path.stdout.replace(": ", ":"), by_path.stdout
    other = curl(port, None, f"nobody.{DOMAIN}")  # no such tunnel: the relay's own TLS
    assert other.returncode == 0, other.stderr
    assert '"code": "unknown_tunnel"' in other.stdout or '"code":"unknown_tunnel"' in other.stdout
    plain = subprocess.run(
        [tool("curl"), "-sS", "--max-time", "5", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert plain.returncode != 0  # not TLS at all: the relay's TLS refuses it


def test_a_token_without_the_tls_permission_is_refused(procs: Procs, tmp_path: Path) -> None:
    relay, relay_ca, _ = setup(procs, tmp_path)
    token = issue(relay.state_dir, "plain")
    agent = procs.add(RawAgent("tls", relay, token, "8443", "--ca-file", str(relay_ca)))
    assert agent.wait(20) == 3
    assert "may not open TLS tunnels" in agent.wait_line(r"^edge-agent: error: ").string
