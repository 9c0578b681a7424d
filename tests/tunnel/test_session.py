"""tunnel.Session and tunnel.Stream over a real loopback WebSocket.

The relay side is a tiny asyncio server (read the head, ``read_upgrade``/``accept``),
the agent side ``connect_link``; both run the shared runtime with recording hooks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import tunnel
import wire
from tests.tunnel.pair import Pair, Recorder, close_pair, frames, make_pair
from tunnel import link as link_module
from tunnel import stream as stream_module
from wire import ErrorCode, Flag, FrameType

WINDOW = wire.INITIAL_STREAM_WINDOW


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    made = await make_pair()
    yield made
    await close_pair(made)


def spy(monkeypatch: pytest.MonkeyPatch, link: tunnel.WsLink) -> list[list[wire.Message]]:
    """Every ``send`` of ``link`` (one list of messages = one transport write)."""
    sends: list[list[wire.Message]] = []
    original = link.send

    def send(messages: list[wire.Message]) -> bool:
        sends.append(list(messages))
        return original(messages)

    monkeypatch.setattr(link, "send", send)
    return sends


def data_frames(sends: list[list[wire.Message]], sid: int) -> list[wire.Frame]:
    return [
        f
        for batch in sends
        for f in frames(batch)
        if f.type is FrameType.DATA and f.stream_id == sid
    ]


async def quiet(turns: int = 5) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def settle(pair: Pair, within: float = 5.0) -> None:
    """Wait until no credit is in flight: each side's view of the other's window agrees."""
    async with asyncio.timeout(within):
        while True:
            a, r = pair.agent.conn, pair.relay.conn
            if (
                r._send_session.available == a._recv_session.remaining
                and a._send_session.available == r._recv_session.remaining
            ):
                return
            await asyncio.sleep(0.01)


# -- the session ---------------------------------------------------------------------------


async def test_hello_and_welcome_go_through_the_hooks(pair: Pair) -> None:
    assert [h.name for h in pair.relay_hooks.hellos] == ["demo"]
    assert pair.relay_hooks.hellos[0].agent == "tunnel-tests"
    assert [w.name for w in pair.agent_hooks.welcomes] == ["demo"]
    assert pair.agent.conn.established and pair.relay.conn.established
    # A HELLO sent again after WELCOME reaches the relay's hook, unanswered.
    pair.agent.send_hello(wire.Hello("demo", (), "again"))
    await pair.relay_hooks.wait(lambda: len(pair.relay_hooks.hellos) == 2)
    await quiet()
    assert len(pair.agent_hooks.welcomes) == 1


async def test_bytes_both_ways_in_order_with_fin(pair: Pair) -> None:
    stream, mine, theirs = await pair.open(b"first ")
    parts = [b"%d," % i for i in range(500)]
    for part in parts:
        stream.write(part)
        if len(part) % 3 == 0:
            await asyncio.sleep(0)
    stream.end()
    await theirs.wait(lambda: bool(theirs.ended))
    assert theirs.received == b"first " + b"".join(parts)
    assert theirs.ended == [False]
    back = theirs.stream
    assert back is not None
    big = bytes(range(256)) * 4096  # 1 MiB: several frames, more than a window
    back.write(b"head;")
    back.write(big)
    back.end()
    await mine.wait(lambda: bool(mine.ended))
    assert mine.received == b"head;" + big
    assert stream.closed and back.closed
    assert stream.sid in pair.relay_hooks.closed_streams
    assert stream.sid in pair.agent_hooks.closed_streams
    assert not pair.relay.streams and not pair.agent.streams
    assert not mine.aborts and not theirs.aborts


async def test_small_writes_of_one_turn_become_one_data_frame_with_the_fin(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, _mine, theirs = await pair.open()
    sends = spy(monkeypatch, pair.relay_link)
    for i in range(100):
        stream.write(b"%03d|" % i)
    stream.end()
    await theirs.wait(lambda: bool(theirs.ended))
    data = data_frames(sends, stream.sid)
    assert len(data) == 1
    assert data[0].payload == b"".join(b"%03d|" % i for i in range(100))
    assert data[0].flags == Flag.FIN
    assert len(sends) == 1  # one write for the whole turn
    assert theirs.chunks == [data[0].payload]


async def test_the_fin_rides_on_the_last_data_frame(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, _mine, theirs = await pair.open()
    sends = spy(monkeypatch, pair.relay_link)
    body = b"z" * (wire.MAX_PAYLOAD + 1000)
    stream.write(body)
    stream.end()
    await theirs.wait(lambda: bool(theirs.ended))
    data = data_frames(sends, stream.sid)
    assert [len(f.payload) for f in data] == [wire.MAX_PAYLOAD, 1000]
    assert [f.fin for f in data] == [False, True]  # no empty END frame after them
    assert theirs.received == body


async def test_a_fin_alone_is_sent_when_no_bytes_wait(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, _mine, theirs = await pair.open(b"abc")
    await theirs.wait(lambda: theirs.size == 3)
    sends = spy(monkeypatch, pair.relay_link)
    stream.end()
    await theirs.wait(lambda: bool(theirs.ended))
    data = data_frames(sends, stream.sid)
    assert [(f.payload, f.fin) for f in data] == [(b"", True)]


# -- credit --------------------------------------------------------------------------------


async def test_credit_is_returned_exactly_once_over_many_streams(pair: Pair) -> None:
    """6 MiB each way over 48 streams, half of them read with pauses: afterwards nothing
    is held and each side's windows agree with the other's (conserved)."""
    paused: list[Recorder] = []

    def new_handler(stream: tunnel.Stream) -> Recorder:
        handler = Recorder(f"agent-{stream.sid}")
        if stream.sid % 4 == 1:
            stream.pause_reading()
            paused.append(handler)
        return handler

    pair.agent_hooks.new_handler = new_handler
    size = 128 * 1024
    opened = [await pair.open() for _ in range(48)]
    for stream, _mine, theirs in opened:
        stream.write(bytes([stream.sid % 256]) * size)
        stream.end()
        assert theirs.stream is not None
        theirs.stream.write(b"r" * size)
        theirs.stream.end()
    await asyncio.sleep(0.05)
    for handler in paused:  # they got at most their window, credit still held
        assert handler.size <= WINDOW
        assert handler.stream is not None
        handler.stream.resume_reading()
    for stream, mine, theirs in opened:
        await theirs.wait(lambda t=theirs: bool(t.ended))  # type: ignore[misc]
        await mine.wait(lambda m=mine: bool(m.ended))  # type: ignore[misc]
        assert theirs.received == bytes([stream.sid % 256]) * size
        assert mine.size == size
    await settle(pair)
    for conn in (pair.agent.conn, pair.relay.conn):
        assert conn._recv_session.buffered == 0
        assert conn.open_streams == 0
    total = 48 * size
    # The session window was granted back (in quarter-window batches) as it was drained.
    agent_recv = pair.agent.conn._recv_session
    assert agent_recv.remaining + agent_recv.owed == wire.INITIAL_SESSION_WINDOW
    assert agent_recv.owed < wire.INITIAL_SESSION_WINDOW // 4  # under one batch
    assert total - agent_recv.owed >= wire.INITIAL_SESSION_WINDOW // 4  # a batch went back
    assert pair.relay.conn._send_session.available == agent_recv.remaining
    assert not pair.relay.streams and not pair.agent.streams


async def test_pause_reading_keeps_credit_and_resume_returns_it(pair: Pair) -> None:
    def new_handler(stream: tunnel.Stream) -> Recorder:
        stream.pause_reading()
        return Recorder(f"agent-{stream.sid}")

    pair.agent_hooks.new_handler = new_handler
    stream, _mine, theirs = await pair.open()
    body = bytes(range(256)) * 4096  # 1 MiB, four initial windows
    stream.write(body)
    stream.end()
    await theirs.wait(lambda: theirs.size >= WINDOW)
    await asyncio.sleep(0.1)
    # The peer stopped after one window: bounded bytes in flight.
    assert theirs.size == WINDOW
    assert pair.relay.conn.sendable(stream.sid) == 0
    assert stream.buffered == len(body) - WINDOW
    assert pair.agent.conn._recv_session.buffered == WINDOW
    assert theirs.stream is not None
    theirs.stream.resume_reading()
    await theirs.wait(lambda: bool(theirs.ended))
    assert theirs.received == body
    await settle(pair)
    assert pair.agent.conn._recv_session.buffered == 0


async def test_credit_held_by_a_paused_reader_goes_back_when_the_stream_closes(
    pair: Pair,
) -> None:
    pair.agent_hooks.new_handler = _paused_handler
    stream, mine, theirs = await pair.open(b"q" * 1000, end=True)
    await theirs.wait(lambda: bool(theirs.ended))
    assert pair.agent.conn._recv_session.buffered == 1000  # held, reading is paused
    assert theirs.stream is not None
    theirs.stream.write(b"answer")
    theirs.stream.end()
    await mine.wait(lambda: bool(mine.ended))
    assert theirs.stream.closed and stream.closed
    assert pair.agent.conn._recv_session.buffered == 0
    theirs.stream.resume_reading()  # nothing more to return: no error, no double credit
    await settle(pair)
    assert pair.agent.conn._recv_session.buffered == 0


async def test_open_with_more_than_one_frame_of_first_bytes_and_the_fin(pair: Pair) -> None:
    body = bytes(range(256)) * 1200  # 300 KiB: more than an OPEN may carry
    stream, _mine, theirs = await pair.open(body, end=True)
    await theirs.wait(lambda: bool(theirs.ended))
    assert theirs.received == body
    assert stream.local_done


async def test_a_stream_refused_when_opened_returns_its_credit(pair: Pair) -> None:
    def refuse(stream: tunnel.Stream) -> Recorder:
        stream.reset(ErrorCode.REFUSED_STREAM, "draining")
        return Recorder()

    pair.agent_hooks.new_handler = refuse
    mine = Recorder()
    stream = pair.relay.open(wire.StreamKind.HTTP, mine, b"r" * 5000)
    stream.write(b"more")
    await mine.wait(lambda: bool(mine.aborts))
    assert mine.aborts == [(ErrorCode.REFUSED_STREAM, "draining")]
    await settle(pair)
    assert pair.agent.conn._recv_session.buffered == 0
    assert not pair.agent.streams and not pair.relay.streams


async def test_producer_is_paused_at_write_high_and_resumed_below_write_low(pair: Pair) -> None:
    def new_handler(stream: tunnel.Stream) -> Recorder:
        stream.pause_reading()
        return Recorder(f"agent-{stream.sid}")

    pair.agent_hooks.new_handler = new_handler
    stream, mine, theirs = await pair.open()
    chunk = 100 * 1024
    stream.write(b"a" * chunk)
    stream.write(b"b" * chunk)
    assert mine.writes == []  # 200 KiB queued: under WRITE_HIGH
    stream.write(b"c" * chunk)
    assert mine.writes == [("pause", 3 * chunk)]  # crossed WRITE_HIGH
    stream.write(b"d" * chunk)
    assert len(mine.writes) == 1  # once
    await theirs.wait(lambda: theirs.size == WINDOW)
    await asyncio.sleep(0.05)
    assert len(mine.writes) == 1  # still above WRITE_LOW: the peer holds its credit
    assert theirs.stream is not None
    theirs.stream.resume_reading()
    await theirs.wait(lambda: theirs.size == 4 * chunk)
    assert [w for w, _ in mine.writes] == ["pause", "resume"]
    assert mine.writes[0][1] > stream_module.WRITE_HIGH
    assert mine.writes[1][1] < stream_module.WRITE_LOW


# -- priority ------------------------------------------------------------------------------


async def test_a_small_stream_is_not_queued_behind_a_bulk_one() -> None:
    pair = await make_pair(sndbuf=64 * 1024)
    try:
        log: list[tuple[str, int]] = []
        pair.agent_hooks.new_handler = lambda s: Recorder(f"agent-{s.sid}", log)
        bulk, _m1, bulk_in = await pair.open()
        small, _m2, small_in = await pair.open()
        total = 24 * 1024 * 1024
        piece = b"B" * (1024 * 1024)
        for _ in range(total // len(piece)):
            bulk.write(piece)
        await bulk_in.wait(lambda: len(bulk_in.chunks) >= 4)
        small.write(b"urgent")
        at = len(log)
        await small_in.wait(lambda: small_in.size > 0, within=10)
        index = log.index((small_in.name, 6))
        overtaken = [n for name, n in log[at:index] if name == bulk_in.name]
        assert bulk_in.size < total  # the bulk stream was still sending
        # Behind at most what was framed before the write (the link's budget) and what
        # the sockets hold: a few frames, not the bulk stream's queue.
        assert len(overtaken) <= 8, overtaken
        assert sum(overtaken) <= link_module.WRITE_HIGH + 512 * 1024
    finally:
        await close_pair(pair)


async def test_a_bulk_write_is_framed_whole_when_the_link_budget_is_short(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With 1,000 bytes of room left under the link's high mark, a 200,000-byte write
    # (one read of a raw TCP caller) still goes as one frame, not cut into two (two
    # frames, two writes on the far side, a copy of both halves); a small write is
    # framed within the budget as before.
    stream, _mine, theirs = await pair.open()
    monkeypatch.setattr(pair.relay_link, "budget", lambda: 1000)
    sends = spy(monkeypatch, pair.relay_link)
    bulk = b"b" * 200_000
    stream.write(bulk)
    await theirs.wait(lambda: theirs.size == len(bulk))
    assert [len(f.payload) for f in data_frames(sends, stream.sid)] == [len(bulk)]
    small = b"s" * (stream_module.WHOLE_WRITE - 1)
    stream.write(small)
    await theirs.wait(lambda: theirs.size == len(bulk) + len(small))
    sizes = [len(f.payload) for f in data_frames(sends, stream.sid)[1:]]
    assert sizes[0] <= 1000 and sum(sizes) == len(small)


async def test_a_stream_written_by_a_handler_during_a_later_pass_is_sent(pair: Pair) -> None:
    # The writer walks its ready streams in passes. Here the first stream's queue drops
    # below WRITE_LOW in its second pass, and its handler's resume_writing() writes to
    # another stream then: that stream must be sent, not left queued in a dropped list.
    small, _m2, small_in = await pair.open()
    stream, mine, theirs = await pair.open()
    resume = mine.resume_writing

    def resume_and_write() -> None:
        resume()
        small.write(b"urgent")

    mine.resume_writing = resume_and_write  # type: ignore[method-assign]
    for size in (100 * 1024, 100 * 1024, 60 * 1024):  # over WRITE_HIGH: paused
        stream.write(b"x" * size)
    assert [w for w, _ in mine.writes] == ["pause"]
    await theirs.wait(lambda: theirs.size == 260 * 1024)
    assert [w for w, _ in mine.writes] == ["pause", "resume"]
    await small_in.wait(lambda: small_in.size == 6, within=3)
    assert small_in.received == b"urgent"


# -- reset ---------------------------------------------------------------------------------


async def test_reset_drops_the_queued_bytes(pair: Pair) -> None:
    stream, mine, theirs = await pair.open()
    stream.write(b"x" * 1000)
    stream.reset(ErrorCode.CANCEL, "caller went away")
    await theirs.wait(lambda: bool(theirs.aborts))
    assert theirs.aborts == [(ErrorCode.CANCEL, "caller went away")]
    assert theirs.chunks == []
    assert mine.aborts == []  # our own reset does not call our handler
    assert stream.closed and stream.sid not in pair.relay.streams
    stream.write(b"after")  # a no-op once closed
    await quiet()


async def test_reset_drops_bytes_waiting_for_credit(pair: Pair) -> None:
    pair.agent_hooks.new_handler = _paused_handler
    stream, _mine, theirs = await pair.open()
    stream.write(b"x" * (2 * WINDOW))
    await theirs.wait(lambda: theirs.size == WINDOW)
    stream.reset(ErrorCode.CANCEL, "")
    await theirs.wait(lambda: bool(theirs.aborts))
    assert theirs.abort_at == [WINDOW]
    await settle(pair)
    # The credit the agent held was returned to the session when the stream closed.
    assert pair.agent.conn._recv_session.buffered == 0


async def test_reset_after_queued_sends_the_bytes_then_the_reset(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, mine, theirs = await pair.open()
    sends = spy(monkeypatch, pair.relay_link)
    body = b"y" * (3 * WINDOW)  # more than a window: it waits for credit on the way
    stream.write(body)
    stream.end()
    stream.reset(ErrorCode.TARGET_ERROR, "target failed", after_queued=True)
    stream.write(b"dropped")
    await theirs.wait(lambda: bool(theirs.aborts))
    assert theirs.aborts == [(ErrorCode.TARGET_ERROR, "target failed")]
    assert theirs.abort_at == [len(body)]
    assert theirs.received == body
    assert theirs.ended == []  # the RESET replaced the FIN
    assert mine.aborts == []
    sent = [f for batch in sends for f in frames(batch) if f.stream_id == stream.sid]
    assert sent[-1].type is FrameType.RESET
    assert not any(f.fin for f in sent)
    assert stream.closed


async def test_reset_by_the_peer_aborts_the_handler_once(pair: Pair) -> None:
    stream, mine, theirs = await pair.open(b"hi")
    assert theirs.stream is not None
    theirs.stream.reset(ErrorCode.CONNECT_ERROR, "no target")
    await mine.wait(lambda: bool(mine.aborts))
    theirs.stream.reset(ErrorCode.CANCEL, "twice")  # no-op: closed
    await quiet()
    assert mine.aborts == [(ErrorCode.CONNECT_ERROR, "no target")]
    assert stream.closed and stream.sid not in pair.relay.streams


# -- failures ------------------------------------------------------------------------------


async def test_a_remote_protocol_error_closes_with_goaway_and_1002(pair: Pair) -> None:
    _stream, mine, theirs = await pair.open(b"x")
    pair.agent_link.send([bytes([0x99]) + bytes(7)])  # unknown frame type
    await pair.agent_hooks.wait(lambda: pair.agent_hooks.session_closed > 0)
    assert [c for c, _ in pair.relay_hooks.protocol_errors] == [ErrorCode.FRAME_ERROR]
    assert [g.code for g in pair.agent_hooks.goaways] == [ErrorCode.FRAME_ERROR]
    await asyncio.wait_for(pair.agent_link.closed, 5)
    assert pair.agent_link.close_code == tunnel.WS_PROTOCOL_ERROR
    assert pair.relay.is_closed and pair.agent.is_closed
    assert len(mine.aborts) == 1 and len(theirs.aborts) == 1
    assert pair.relay_hooks.session_closed == 1


async def test_the_link_closing_aborts_every_stream_once(pair: Pair) -> None:
    opened = [await pair.open(b"%d" % i) for i in range(3)]
    pair.agent_link.abort()
    await pair.relay_hooks.wait(lambda: pair.relay_hooks.session_closed > 0)
    await pair.agent_hooks.wait(lambda: pair.agent_hooks.session_closed > 0)
    await asyncio.sleep(0.05)
    for stream, mine, theirs in opened:
        assert len(mine.aborts) == 1 and len(theirs.aborts) == 1
        assert stream.closed
        stream.write(b"late")  # no-ops
        stream.reset()
    assert pair.relay_hooks.session_closed == 1 and pair.agent_hooks.session_closed == 1
    assert not pair.relay.streams and not pair.agent.streams


async def test_a_flood_of_tiny_frames_is_processed_over_several_loop_turns(pair: Pair) -> None:
    stream, _mine, theirs = await pair.open()
    count = 3 * link_module.MAX_MESSAGES_PER_TURN + 10
    ticks: list[int] = []
    loop = asyncio.get_running_loop()

    def first(handler: Recorder, data: bytes) -> None:
        if len(handler.chunks) == 1:  # another callback, scheduled in the first turn
            loop.call_soon(lambda: ticks.append(len(handler.chunks)))

    theirs.on_data = first
    for i in range(count):
        pair.relay.conn.send_data(stream.sid, b"%d" % (i % 10))
    pair.relay.kick()  # all of them in one write
    await theirs.wait(lambda: len(theirs.chunks) == count)
    assert ticks and ticks[0] <= link_module.MAX_MESSAGES_PER_TURN
    assert theirs.received == b"".join(b"%d" % (i % 10) for i in range(count))


async def test_another_connection_is_served_while_a_flood_is_processed(pair: Pair) -> None:
    """Both agent sockets hold data: a flood on one, one small message on the other.
    The second connection's message is handled between two batches of the flood."""
    other = await make_pair()
    try:
        log: list[tuple[str, int]] = []
        _a, _ma, flooded = await pair.open()
        flooded.name, flooded.log = "flood", log
        b, _mb, small = await other.open()
        small.name, small.log = "small", log
        links = [pair.agent_link, other.agent_link]
        for link in links:
            assert link.transport is not None
            link.transport.pause_reading()
        count = 800  # many turns' worth (MAX_MESSAGES_PER_TURN is 64)
        for i in range(count):
            pair.relay.conn.send_data(_a.sid, b"%d" % (i % 10))
        pair.relay.kick()
        b.write(b"!")
        await asyncio.sleep(0.1)  # both are in the agent's socket buffers now
        for link in links:
            assert link.transport is not None
            link.transport.resume_reading()
        await flooded.wait(lambda: len(flooded.chunks) == count)
        await small.wait(lambda: small.size == 1)
        where = log.index(("small", 1))
        assert 0 < where < count, where  # after the flood began, before it ended
    finally:
        await close_pair(other)


def _paused_handler(stream: tunnel.Stream) -> Recorder:
    stream.pause_reading()
    return Recorder(f"agent-{stream.sid}")
