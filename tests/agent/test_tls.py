"""TLS to the relay: verified by default, a private CA on request, an optional pin."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_agent.connect import ConnectOptions
from edge_agent.errors import ConfigError, TlsError
from edge_agent.forward import HttpForwarder
from edge_agent.tls import TlsOptions, normalize_pin
from tests.agent.certs import Pki, make_pki
from tests.agent.conftest import TOKEN, make_agent, stop_agent
from tests.agent.fake_relay import FakeRelay


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def tls_relay(pki: Pki) -> AsyncIterator[FakeRelay]:
    relay = await FakeRelay(tokens={TOKEN: "demo"}, ssl_context=pki.server_context()).start()
    try:
        yield relay
    finally:
        await relay.stop()


async def _serve_one(relay: FakeRelay, origin: str, tls: TlsOptions) -> int:
    target = HttpForwarder(origin)
    run = make_agent(relay.url, target, options=ConnectOptions(tls=tls)).start()
    try:
        session = await relay.session(within=5)
        head, _ = await session.request("GET", "/echo")
        return head.status
    finally:
        await stop_agent(run)
        await target.aclose()


async def _fails(relay: FakeRelay, origin: str, tls: TlsOptions) -> TlsError:
    target = HttpForwarder(origin)
    run = make_agent(relay.url, target, options=ConnectOptions(tls=tls)).start()
    try:
        with pytest.raises(TlsError) as info:
            await run.finish(5)
    finally:
        await target.aclose()
    assert len(relay.attempts) <= 1  # fatal: no retry loop (a pin check follows the upgrade)
    return info.value


async def test_self_signed_relay_is_refused_by_default(tls_relay: FakeRelay, origin: str) -> None:
    error = await _fails(tls_relay, origin, TlsOptions())
    assert "--ca-file" in str(error)
    assert tls_relay.sessions == []


async def test_private_ca_file_is_trusted(tls_relay: FakeRelay, origin: str, pki: Pki) -> None:
    assert tls_relay.url.startswith("https://")
    assert await _serve_one(tls_relay, origin, TlsOptions(ca_file=str(pki.ca_file))) == 201


async def test_pin(tls_relay: FakeRelay, origin: str, pki: Pki) -> None:
    wrong = TlsOptions(ca_file=str(pki.ca_file), pin_sha256="ab" * 32)
    error = await _fails(tls_relay, origin, wrong)
    assert "pin" in str(error)
    colons = ":".join(pki.cert_sha256[i : i + 2] for i in range(0, 64, 2)).upper()
    right = TlsOptions(ca_file=str(pki.ca_file), pin_sha256=colons)
    assert await _serve_one(tls_relay, origin, right) == 201


async def test_insecure_connects_with_a_warning(
    tls_relay: FakeRelay, origin: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.tls")
    assert await _serve_one(tls_relay, origin, TlsOptions(insecure=True)) == 201
    assert any(r.getMessage() == "tls_verification_disabled" for r in caplog.records)


def test_pin_format() -> None:
    assert normalize_pin("AB:" * 31 + "AB") == "ab" * 32
    with pytest.raises(ConfigError):
        normalize_pin("abc")


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    from edge_agent.tls import client_context

    with pytest.raises(ConfigError):
        client_context(TlsOptions(ca_file=str(tmp_path / "nope.pem")))
