"""WebSocket upgrades to a URL target behind the Molecule wrappers (edge_agent.upgrade):
ObjectBridge -> InboundSecretTarget -> DedupTarget -> UpgradingHttpTarget, a FakeStream
on one side and a raw TCP server on the other, so every byte the target gets is seen."""

from __future__ import annotations

import asyncio

from edge_agent.bridge import ObjectBridge
from edge_agent.molecule.dedup import DedupTarget
from edge_agent.molecule.inbound import InboundSecretTarget
from edge_agent.port import ExchangeRecord
from edge_agent.target import HttpTarget
from edge_agent.upgrade import UpgradingHttpTarget
from tests.agent.v2.support import (
    RawServer,
    canned,
    open_stream,
    parse_response,
    raw_server,
    read_head,
)

SECRET = "inbound-s3cret"
UPGRADE = (
    b"GET /chat?room=1 HTTP/1.1\r\nHost: relay.test\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: RawServer) -> None:
    """101, then every byte back upper-cased until EOF, then EOF (half-close)."""
    await read_head(reader, s)
    writer.write(SWITCHING)
    while data := await reader.read(65536):
        writer.write(data.upper())
    writer.write_eof()


def _chain(url: str, records: list[ExchangeRecord]) -> ObjectBridge:
    target = UpgradingHttpTarget(HttpTarget(url))
    return ObjectBridge(InboundSecretTarget(DedupTarget(target), SECRET), on_done=records.append)


async def test_an_upgrade_with_the_secret_is_piped_as_bytes() -> None:
    records: list[ExchangeRecord] = []
    async with raw_server(_pipe) as server:
        bridge = _chain(server.url + "/base", records)
        stream = open_stream(bridge.handler)
        assert stream.handler is not None
        auth = b"Authorization: Bearer " + SECRET.encode() + b"\r\n\r\n"
        stream.handler.data(UPGRADE + auth + b"early bytes")  # sent before the 101
        await stream.wait_for(lambda: b"EARLY BYTES" in stream.out)
        assert stream.out.startswith(SWITCHING)
        stream.handler.data(b"\x81\x05hello")
        await stream.wait_for(lambda: stream.out.endswith(b"\x81\x05HELLO"))
        stream.handler.end(False)  # the caller's half-close reaches the target as EOF
        await stream.wait()
        head = server.requests[0]
        assert head.startswith(b"GET /base/chat?room=1 HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"relay.test" not in head
        for line in [*UPGRADE.split(b"\r\n")[2:-1], auth.strip()]:
            assert line in head.split(b"\r\n"), line
        await bridge.aclose()
    assert len(records) == 1
    record = records[0]
    assert (record.method, record.target, record.status) == ("GET", "/chat?room=1", 101)
    assert record.bytes_out == len(stream.out) and record.error is None


async def test_an_upgrade_without_the_secret_gets_401_and_never_reaches_the_target() -> None:
    records: list[ExchangeRecord] = []
    async with raw_server(_pipe) as server:
        bridge = _chain(server.url, records)
        for auth in (b"", b"Authorization: Bearer not-the-secret\r\n"):
            stream = open_stream(bridge.handler)
            assert stream.handler is not None
            stream.handler.data(UPGRADE + auth + b"\r\n")
            await stream.wait()
            assert parse_response(bytes(stream.out)).status == 401
        await bridge.aclose()
        assert server.connections == 0
    assert [r.status for r in records] == [401, 401]


async def test_a_refused_upgrade_is_answered_as_the_target_answers() -> None:
    refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"  # keep-alive
    records: list[ExchangeRecord] = []
    async with raw_server(canned(refusal, refusal)) as server:
        bridge = _chain(server.url, records)
        for _ in range(2):
            stream = open_stream(bridge.handler)
            assert stream.handler is not None
            auth = b"Authorization: Bearer " + SECRET.encode() + b"\r\n\r\n"
            stream.handler.data(UPGRADE + auth)
            stream.handler.end(False)
            await stream.wait()
            assert bytes(stream.out) == refusal
        await bridge.aclose()
        assert server.connections == 1  # the kept-alive connection served the second one
    assert [r.status for r in records] == [403, 403]
