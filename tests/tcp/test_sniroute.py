"""relay.sniroute in one process: the relay's own TLS through the SNI listener, and the
callers it closes (silent, stalled mid-ClientHello, not TLS at all)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from relay import sniroute
from relay.certs import write_dev_certificate
from relay.config import Settings
from tests.relay.conftest import RunningRelay, start_relay


@pytest.fixture
async def relay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningRelay]:
    monkeypatch.setattr(sniroute, "CLIENT_HELLO_TIMEOUT", 0.5)
    write_dev_certificate(tmp_path / "certs", ["127.0.0.1"])
    settings = Settings(
        host="127.0.0.1",
        port=0,
        state_dir=tmp_path / "state",
        tls_cert=tmp_path / "certs" / "cert.pem",
        tls_key=tmp_path / "certs" / "key.pem",
        domain="edge.test",
    )
    running = await start_relay(settings)
    assert isinstance(running.server._server, sniroute.SniRouter)
    try:
        yield running
    finally:
        await running.stop()


async def test_the_relays_own_tls_is_served_through_the_sni_listener(
    relay: RunningRelay, tmp_path: Path
) -> None:
    context = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.pem"))
    async with httpx.AsyncClient(base_url=relay.url, verify=context, timeout=10) as client:
        for _ in range(3):  # keep-alive and new connections alike
            answer = await client.get("/_edge/healthz")
            assert answer.status_code == 200
    assert not relay.server._server.peeking  # type: ignore[union-attr]


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), seconds) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize(
    "first",
    [
        b"",  # says nothing
        b"\x16\x03\x01\x02\x00\x01\x00",  # the start of a ClientHello, then nothing
    ],
)
async def test_a_caller_without_a_whole_client_hello_is_closed(
    relay: RunningRelay, first: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.settings.port)
    writer.write(first)
    await writer.drain()
    assert await closed_within(reader, 3.0)  # CLIENT_HELLO_TIMEOUT is 0.5 s here
    writer.close()
    assert not relay.server._server.peeking  # type: ignore[union-attr]


async def test_plain_http_on_the_tls_port_gets_no_answer(relay: RunningRelay) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.settings.port)
    writer.write(b"GET /_edge/healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    await writer.drain()
    data = b""
    try:
        data = await asyncio.wait_for(reader.read(), 5.0)
    except ConnectionResetError:
        pass
    assert b"HTTP/1.1 200" not in data  # the relay's TLS refused it: no plaintext answer
    writer.close()
