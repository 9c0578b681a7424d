"""tunnel.WsLink over a real loopback WebSocket: close, keepalive, violations, writes (the
upgrade itself: test_handshake.py)."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import tunnel
import tunnel.server
import wire
from tests.tunnel.pair import Hooks, Pair, Recorder, Server, close_pair, make_pair
from tunnel import link as link_module
from tunnel import wsframe
from wire import ErrorCode


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    made = await make_pair()
    yield made
    await close_pair(made)


async def closed(link: tunnel.WsLink, within: float = 5.0) -> float:
    """Wait for the link's end; returns how long it took."""
    start = time.monotonic()
    await asyncio.wait_for(asyncio.shield(link.closed), within)
    return time.monotonic() - start


# -- close handshake -----------------------------------------------------------------------


async def test_close_started_by_the_client(pair: Pair) -> None:
    _stream, mine, theirs = await pair.open(b"x")
    pair.agent_link.close(1000, "bye")
    took = max(await closed(pair.relay_link), await closed(pair.agent_link))
    assert took < link_module.CLOSE_TIMEOUT  # a real handshake, not the timeout
    assert pair.relay_link.close_code == 1000  # the code the peer saw
    assert pair.agent_link.close_code == 1000  # and its answer
    assert len(mine.aborts) == 1 and len(theirs.aborts) == 1


async def test_close_started_by_the_server(pair: Pair) -> None:
    pair.relay_link.close(tunnel.WS_GOING_AWAY, "shutting down")
    took = max(await closed(pair.agent_link), await closed(pair.relay_link))
    assert took < link_module.CLOSE_TIMEOUT
    assert pair.agent_link.close_code == tunnel.WS_GOING_AWAY
    assert pair.relay_link.close_code == tunnel.WS_GOING_AWAY
    await pair.agent_hooks.wait(lambda: pair.agent_hooks.session_closed == 1)


async def test_session_close_sends_goaway_then_the_close_code(pair: Pair) -> None:
    pair.relay.close(ErrorCode.REPLACED, "a newer session", tunnel.WS_POLICY)
    await closed(pair.agent_link)
    assert [g.code for g in pair.agent_hooks.goaways] == [ErrorCode.REPLACED]
    assert pair.agent_link.close_code == tunnel.WS_POLICY


# -- keepalive ---------------------------------------------------------------------------------


async def test_pings_are_sent_and_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = await make_pair(client={"ping_interval": 0.05, "ping_timeout": 0.3})
    try:
        seen: list[int] = []
        other = pair.relay_link._other

        def spy(opcode: int, payload: bytes, session: Any) -> None:
            seen.append(opcode)
            other(opcode, payload, session)

        monkeypatch.setattr(pair.relay_link, "_other", spy)
        await asyncio.sleep(1.0)  # several ping timeouts: the pongs kept the link up
        assert seen.count(wsframe.OP_PING) >= 5
        assert not pair.agent_link.closed.done()
        rtt = pair.agent_link.rtt  # the pinger's last round trip (loopback: well under 0.3 s)
        assert rtt is not None and 0 <= rtt < 0.3
        assert pair.relay_link.rtt is None  # it only answers
        assert not pair.agent.is_closed
    finally:
        await close_pair(pair)


@pytest.mark.parametrize("silent", ["server", "client"])
async def test_a_silent_peer_is_dropped_after_the_ping_timeout(silent: str) -> None:
    keepalive = {"ping_interval": 0.1, "ping_timeout": 0.1}
    none = {"ping_interval": None, "ping_timeout": None}
    pinging = "client" if silent == "server" else "server"
    pair = await make_pair(
        client=keepalive if pinging == "client" else none,
        server=keepalive if pinging == "server" else none,
    )
    try:
        quiet_link = pair.relay_link if silent == "server" else pair.agent_link
        assert quiet_link.transport is not None
        quiet_link.transport.pause_reading()  # neither pongs nor anything else
        pinger = pair.agent_link if pinging == "client" else pair.relay_link
        assert not pinger.closed.done()
        took = await closed(pinger, within=3)
        assert took < 1.5  # one interval and one timeout, with room for a slow machine
        hooks = pair.agent_hooks if pinging == "client" else pair.relay_hooks
        await hooks.wait(lambda: hooks.session_closed == 1)
    finally:
        await close_pair(pair)


# -- protocol violations -----------------------------------------------------------------------


async def test_a_text_message_fails_the_session_with_protocol_error(pair: Pair) -> None:
    pair.agent_link.send_text(b"hello?")
    await closed(pair.agent_link)
    assert [c for c, _ in pair.relay_hooks.protocol_errors] == [ErrorCode.PROTOCOL_ERROR]
    assert [g.code for g in pair.agent_hooks.goaways] == [ErrorCode.PROTOCOL_ERROR]
    assert pair.agent_link.close_code == tunnel.WS_PROTOCOL_ERROR


async def test_an_oversized_message_is_closed_with_1009(pair: Pair) -> None:
    _stream, mine, _theirs = await pair.open(b"x")
    pair.agent_link.send([b"\x05" + bytes(wire.MAX_FRAME_SIZE)])  # one byte too many
    # Failed at once (RFC 6455 section 7.1.7), not at the end of the close timeout.
    assert await closed(pair.agent_link) < link_module.CLOSE_TIMEOUT
    assert pair.agent_link.close_code == wsframe.CLOSE_TOO_BIG
    await pair.relay_hooks.wait(lambda: pair.relay_hooks.session_closed == 1)
    assert len(mine.aborts) == 1


async def test_an_oversized_header_is_refused_before_its_payload(pair: Pair) -> None:
    # A client frame header announcing 1 TiB, and not a byte of it: 1009 at once.
    header = bytes((0x82, 0x80 | 127)) + struct.pack("!Q", 1 << 40) + b"mask"
    pair.agent_link.send_raw(header)
    # Failed at once (RFC 6455 section 7.1.7), not at the end of the close timeout.
    assert await closed(pair.agent_link) < link_module.CLOSE_TIMEOUT
    assert pair.agent_link.close_code == wsframe.CLOSE_TOO_BIG


async def test_a_frame_breaking_rfc_6455_is_closed_with_1002(pair: Pair) -> None:
    pair.agent_link.send_raw(bytes((0x82 | 0x40, 0x80)) + b"mask")  # RSV1 set
    # Failed at once (RFC 6455 section 7.1.7), not at the end of the close timeout.
    assert await closed(pair.agent_link) < link_module.CLOSE_TIMEOUT
    assert pair.agent_link.close_code == wsframe.CLOSE_PROTOCOL_ERROR


# -- logs ----------------------------------------------------------------------------------------


async def test_authorization_never_appears_in_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tunnel.websocket")
    caplog.set_level(logging.DEBUG, logger="tunnel")
    secret = "tok-very-secret-0123456789"
    pair = await make_pair(headers=(("Authorization", f"Bearer {secret}"),))
    try:
        assert any(secret.encode() in head for head in pair.server.heads)  # it was sent
        names = {r.name for r in caplog.records}
        assert "tunnel.websocket" in names  # the handshake was logged at DEBUG...
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert "[redacted]" in text  # ...with the header, both ways through
        assert secret not in text and secret not in caplog.text
    finally:
        await close_pair(pair)


class _ClosingServer(Server):
    """Accepts the upgrade and closes at once, before any session is attached."""

    def upgrade(self, transport: asyncio.Transport, head: bytes, rest: bytes) -> None:
        ws, request = tunnel.server.read_upgrade(head)
        assert request is not None
        link = tunnel.server.accept(ws, request, transport, rest)
        assert link is not None
        self.links.append(link)
        link.close(tunnel.WS_POLICY, "not now")


async def test_a_link_closed_before_its_session_completes_the_close_handshake() -> None:
    server = await _ClosingServer().start()
    try:
        link, _response = await tunnel.connect_link(server.uri, open_timeout=3)
        hooks = Hooks("agent")
        link.attach(tunnel.Session(wire.Connection(wire.Role.AGENT), hooks))
        assert await closed(link) < link_module.CLOSE_TIMEOUT
        assert await closed(server.links[0]) < link_module.CLOSE_TIMEOUT
        assert link.close_code == tunnel.WS_POLICY
        assert hooks.session_closed == 1
    finally:
        await server.stop()


class _Transport:
    """A transport whose buffer the test sets, pausing its protocol as asyncio's do:
    above the high-water mark (not at it), resuming at or below the low one."""

    def __init__(self, link: tunnel.WsLink) -> None:
        self.link = link
        self.size = 0
        self.high = 0
        self.low = 0
        self.paused = False
        self.written: list[bytes] = []

    def set_protocol(self, protocol: object) -> None:
        pass

    def get_extra_info(self, name: str) -> None:
        return None

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.high, self.low = high, low

    def get_write_buffer_size(self) -> int:
        return self.size

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.size += len(data)
        if self.size > self.high and not self.paused:
            self.paused = True
            self.link.pause_writing()

    def drain(self) -> None:
        self.size = 0
        if self.paused:
            self.paused = False
            self.link.resume_writing()


@pytest.mark.parametrize("buffered", [link_module.WRITE_HIGH - 1, link_module.WRITE_HIGH])
async def test_the_writer_never_waits_for_a_resume_that_cannot_come(buffered: int) -> None:
    """The session frames nothing while budget() is not positive and waits for the
    transport's resume_writing(); a transport only pauses above its high-water mark, so
    with exactly that much buffered the budget must still be positive."""
    link = tunnel.WsLink(False, ping_interval=None)
    transport = _Transport(link)
    link.adopt(transport)  # type: ignore[arg-type]
    assert transport.high == link_module.WRITE_HIGH
    session = tunnel.Session(wire.Connection(wire.Role.RELAY), Hooks("relay"))
    link.attach(session)
    session.conn.receive(wire.encode_frame(_hello()))
    session.send_welcome(wire.Welcome("demo", ("https://relay.test/demo/",), 8, 1))
    await asyncio.sleep(0)
    stream = session.open(wire.StreamKind.HTTP, Recorder())
    await asyncio.sleep(0)
    transport.drain()
    transport.size = buffered  # the socket is backed up to about the mark
    stream.write(b"p" * 100_000)
    for _ in range(20):
        await asyncio.sleep(0)
        transport.drain()  # the socket drains; resume_writing() only if it was paused
    assert stream.buffered == 0  # everything was framed in the end


def _hello() -> wire.Frame:
    payload = wire.frames.encode_hello(wire.Hello("demo", (), "t"))
    return wire.Frame(wire.FrameType.HELLO, 0, payload)
