"""Stream lifecycle: RESET from every state, frames for closed vs never-opened streams,
stream ids, and moves a role may not make."""

from __future__ import annotations

import pytest

from tests.wire.helpers import (
    FIN,
    GET,
    HTTP,
    NAME,
    OK,
    POST,
    WELCOME,
    open_frame,
    open_pair,
    pair,
    pump,
    raw,
    u32,
)
from wire import (
    MAX_PAYLOAD,
    SPLIT_AT,
    Connection,
    DataReceived,
    ErrorCode,
    FrameError,
    FrameType,
    Hello,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    StreamClosedError,
    StreamKind,
    StreamOpened,
    StreamReset,
)
from wire.payloads import encode_hello, encode_welcome
from wire.state import Half

# (relay sending, relay receiving) for every open stream state, and how to get there.
# The agent's half has no head: the relay receives in BODY from the start.
OPEN_STATES = [
    (Half.BODY, Half.BODY),
    (Half.BODY, Half.DONE),
    (Half.DONE, Half.BODY),
]


def stream_in(sending: Half, receiving: Half) -> tuple[Connection, Connection, int]:
    relay, agent = pair()
    sid = relay.open_stream(HTTP, POST, end_stream=sending is Half.DONE)
    pump(relay, agent)
    agent.consumed(sid, len(POST))
    if receiving is Half.DONE:
        agent.send_data(sid, OK, end_stream=True)
        pump(agent, relay)
    assert (relay._streams[sid].sending, relay._streams[sid].receiving) == (sending, receiving)
    return relay, agent, sid


@pytest.mark.parametrize(("sending", "receiving"), OPEN_STATES)
@pytest.mark.parametrize("by_relay", [True, False])
def test_reset_from_every_state(sending: Half, receiving: Half, by_relay: bool) -> None:
    relay, agent, sid = stream_in(sending, receiving)
    resetter, peer = (relay, agent) if by_relay else (agent, relay)
    resetter.send_reset(sid, ErrorCode.CANCEL, "caller gone")
    assert not resetter.is_open(sid)
    [message] = resetter.data_to_send()
    assert message == raw(FrameType.RESET, sid, u32(ErrorCode.CANCEL) + b"caller gone")
    assert peer.receive(message) == [StreamReset(sid, ErrorCode.CANCEL, "caller gone")]
    assert not peer.is_open(sid)
    assert relay.open_streams == agent.open_streams == 0
    # Both sides may still reset or send into the race: a reset is a no-op, a send fails
    # with StreamClosedError and queues nothing.
    resetter.send_reset(sid, ErrorCode.CANCEL)
    peer.send_reset(sid, ErrorCode.CANCEL)
    with pytest.raises(StreamClosedError):
        peer.send_data(sid, b"x")
    assert resetter.data_to_send() == peer.data_to_send() == []


@pytest.mark.parametrize(("sending", "receiving"), OPEN_STATES)
def test_frames_in_flight_after_reset_are_dropped(sending: Half, receiving: Half) -> None:
    relay, agent, sid = stream_in(sending, receiving)
    # The agent sends what it still may, not knowing the relay reset the stream.
    if agent._streams[sid].sending is Half.BODY:
        agent.send_data(sid, b"late bytes")
    if relay._streams[sid].sending is Half.BODY:
        relay.send_data(sid, b"abc")
        pump(relay, agent)
        agent.consumed(sid, 3)
    agent.send_reset(sid, ErrorCode.TARGET_ERROR)  # crosses the relay's RESET
    in_flight = agent.data_to_send()
    relay.send_reset(sid, ErrorCode.CANCEL)
    assert [e for m in in_flight for e in relay.receive(m)] == []
    # The agent drops the relay's RESET for the stream it already reset.
    assert pump(relay, agent) == []


def test_dropped_data_returns_session_credit() -> None:
    relay, agent, sid = open_pair(response=True)
    relay.send_reset(sid, ErrorCode.CANCEL)
    relay.data_to_send()
    relay.consumed(sid, len(OK))  # the response head it held is dropped too
    dropped = len(OK)
    while agent.sendable(sid):  # the agent keeps sending until it sees the RESET
        dropped += agent.sendable(sid)
        agent.send_data(sid, bytes(agent.sendable(sid)))
    assert pump(agent, relay) == []
    # Nothing is held for the dead stream; its bytes are owed back to the agent and go
    # out with the next session WINDOW (batched at a quarter of the session window).
    session = relay._recv_session
    assert (session.buffered, session.owed) == (0, dropped)
    assert relay.data_to_send() == []


def test_reset_reason_and_unknown_code() -> None:
    _relay, agent, sid = open_pair()
    assert agent.receive(raw(FrameType.RESET, sid, u32(999) + "é".encode())) == [
        StreamReset(sid, ErrorCode.INTERNAL_ERROR, "é")
    ]


# -- closed vs never-opened --------------------------------------------------------------


def closed_stream() -> tuple[Connection, Connection, int]:
    relay, agent, sid = open_pair()
    relay.send_reset(sid, ErrorCode.CANCEL)
    pump(relay, agent)
    return relay, agent, sid


def frames_for(sid: int) -> dict[str, bytes]:
    return {
        "DATA": raw(FrameType.DATA, sid, b"x"),
        "DATA+FIN": raw(FrameType.DATA, sid, b"", 1),
        "RESET": raw(FrameType.RESET, sid, u32(ErrorCode.CANCEL)),
        "WINDOW": raw(FrameType.WINDOW, sid, u32(1024)),
    }


@pytest.mark.parametrize("kind", ["DATA", "DATA+FIN", "RESET", "WINDOW"])
@pytest.mark.parametrize("side", ["relay", "agent"])
def test_frames_for_a_closed_stream_are_dropped(kind: str, side: str) -> None:
    relay, agent, sid = closed_stream()
    conn = relay if side == "relay" else agent
    assert conn.receive(frames_for(sid)[kind]) == []


def test_open_for_a_closed_stream_is_a_protocol_error() -> None:
    """Ids are never reused: an OPEN for a closed id is a broken relay, not a race."""
    _relay, agent, sid = closed_stream()
    with pytest.raises(RemoteProtocolError):
        agent.receive(open_frame(sid, GET))


@pytest.mark.parametrize("kind", ["DATA", "DATA+FIN", "RESET", "WINDOW"])
@pytest.mark.parametrize("side", ["relay", "agent"])
@pytest.mark.parametrize("sid", [3, 2, 4, 2**32 - 1])
def test_frames_for_a_never_opened_stream_break_the_session(kind: str, side: str, sid: int) -> None:
    relay, agent, opened = open_pair()
    assert opened == 1
    conn = relay if side == "relay" else agent
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive(frames_for(sid)[kind])
    assert info.value.code is ErrorCode.PROTOCOL_ERROR


def test_sending_on_a_never_opened_stream_is_a_bug_not_a_race() -> None:
    relay, agent, sid = open_pair()
    for conn in (relay, agent):
        with pytest.raises(LocalProtocolError) as info:
            conn.send_data(sid + 2, b"x")
        assert not isinstance(info.value, StreamClosedError)
    relay.send_reset(sid + 2, ErrorCode.CANCEL)  # a no-op, like any reset of a non-stream
    assert relay.data_to_send() == []


def test_send_data_on_a_reset_stream_raises_stream_closed() -> None:
    _relay, agent, sid = closed_stream()
    with pytest.raises(StreamClosedError) as info:
        agent.send_data(sid, OK, end_stream=True, close=True)
    assert info.value.stream_id == sid
    assert agent.data_to_send() == []


# -- stream ids ---------------------------------------------------------------------------


def test_relay_opens_odd_increasing_ids() -> None:
    relay, agent = pair()
    ids = [relay.open_stream(HTTP, GET, end_stream=True) for _ in range(3)]
    assert ids == [1, 3, 5]
    events = pump(relay, agent)
    assert [e.stream_id for e in events] == ids  # type: ignore[union-attr]


@pytest.mark.parametrize("sid", [2, 1, 0])
def test_agent_rejects_even_reused_or_zero_open_ids(sid: int) -> None:
    _relay, agent, first = open_pair()
    assert first == 1
    with pytest.raises(RemoteProtocolError):
        agent.receive(open_frame(sid, GET))


def test_agent_rejects_an_id_below_the_last_even_if_skipped() -> None:
    _, agent = pair()
    agent.receive(open_frame(5, GET))
    with pytest.raises(RemoteProtocolError):
        agent.receive(open_frame(3, GET))
    # Skipped ids count as closed: their frames are dropped, not protocol errors.
    assert agent.receive(raw(FrameType.DATA, 3, b"x")) == []


def test_relay_stops_before_the_stream_id_space_runs_out() -> None:
    relay, _ = pair()
    relay._last_stream_id = 2**32 - 1  # the last odd id was used
    assert not relay.can_open()
    with pytest.raises(LocalProtocolError):
        relay.open_stream(HTTP, GET)


# -- roles --------------------------------------------------------------------------------


def test_agent_may_not_open_streams() -> None:
    _, agent = pair()
    assert not agent.can_open()
    with pytest.raises(LocalProtocolError):
        agent.open_stream(HTTP, GET)
    assert agent.data_to_send() == []


def test_relay_receiving_open_is_a_protocol_error() -> None:
    relay, _ = pair()
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive(open_frame(1, GET))
    assert info.value.code is ErrorCode.PROTOCOL_ERROR


def test_close_is_the_agents_flag() -> None:
    relay, agent, sid = open_pair()
    with pytest.raises(LocalProtocolError, match="CLOSE"):
        relay.send_data(sid, b"x", end_stream=True, close=True)
    assert relay.data_to_send() == []
    with pytest.raises(RemoteProtocolError, match="CLOSE"):
        agent.receive(raw(FrameType.DATA, sid, b"x", 0x03))


def test_close_from_the_relay_on_a_closed_stream_is_still_a_protocol_error() -> None:
    """CLOSE from the relay is a role violation, never a race after a RESET: the agent
    refuses it even on a stream it already closed, instead of dropping it."""
    relay, agent, sid = open_pair()
    agent.send_reset(sid, ErrorCode.CANCEL)
    pump(agent, relay)
    assert agent.receive(raw(FrameType.DATA, sid, b"x", 0x01)) == []  # a race: dropped
    with pytest.raises(RemoteProtocolError, match="CLOSE") as info:
        agent.receive(raw(FrameType.DATA, sid, b"x", 0x03))
    assert info.value.code is ErrorCode.PROTOCOL_ERROR


def test_close_needs_fin_both_ways() -> None:
    relay, agent, sid = open_pair()
    with pytest.raises(LocalProtocolError, match="CLOSE"):
        agent.send_data(sid, OK, close=True)
    assert agent.data_to_send() == [] and agent.sendable(sid) == MAX_PAYLOAD
    with pytest.raises(FrameError, match="flags 0x02"):
        relay.receive(raw(FrameType.DATA, sid, OK, 0x02))


@pytest.mark.parametrize("body", [b"", b"bye"])
def test_close_with_fin_reaches_the_relay(body: bytes) -> None:
    relay, agent, sid = open_pair(response=True)
    relay.consumed(sid, len(OK))
    agent.send_data(sid, body, end_stream=True, close=True)
    [message] = agent.data_to_send()
    assert message == raw(FrameType.DATA, sid, body, 0x03)
    assert relay.receive(message) == [DataReceived(sid, body, True, True)]
    assert relay._streams[sid].receiving is Half.DONE


def test_fin_without_close_keeps_the_public_connection() -> None:
    relay, agent, sid = open_pair()
    agent.send_data(sid, OK + b"hello", end_stream=True)
    assert pump(agent, relay) == [DataReceived(sid, OK + b"hello", True, False)]


def test_session_frames_in_the_wrong_direction() -> None:
    relay, agent = Connection(Role.RELAY), Connection(Role.AGENT)
    with pytest.raises(LocalProtocolError):
        relay.send_hello(Hello(NAME))
    with pytest.raises(LocalProtocolError):
        agent.send_welcome(WELCOME)
    with pytest.raises(RemoteProtocolError):
        agent.receive(raw(FrameType.HELLO, 0, encode_hello(Hello(NAME))))
    with pytest.raises(RemoteProtocolError):
        relay.receive(raw(FrameType.WELCOME, 0, encode_welcome(WELCOME)))


def test_stream_frames_before_the_handshake() -> None:
    relay, agent = Connection(Role.RELAY), Connection(Role.AGENT)
    with pytest.raises(RemoteProtocolError):
        agent.receive(open_frame(1, GET))
    for conn in (relay, agent):
        with pytest.raises(RemoteProtocolError):
            conn.receive(raw(FrameType.DATA, 1, b"x"))
        with pytest.raises(RemoteProtocolError):
            conn.receive(raw(FrameType.RESET, 1, u32(0)))
    assert not relay.can_open()
    with pytest.raises(LocalProtocolError):
        relay.open_stream(HTTP, GET)


def test_data_events_carry_the_bytes_and_fin() -> None:
    relay, agent, sid = open_pair()
    relay.send_data(sid, b"hello ")
    relay.send_data(sid, b"world", end_stream=True)
    assert pump(relay, agent) == [
        DataReceived(sid, b"hello ", False),
        DataReceived(sid, b"world", True),
    ]


# -- OPEN: kind and first bytes -----------------------------------------------------------


@pytest.mark.parametrize("kind", list(StreamKind))
@pytest.mark.parametrize("fin", [False, True])
def test_open_carries_the_kind_and_first_bytes(kind: StreamKind, fin: bool) -> None:
    relay, agent = pair()
    first = b"\x16\x03\x01 client hello" if kind is StreamKind.TLS else GET
    sid = relay.open_stream(kind, first, end_stream=fin)
    [message] = relay.data_to_send()
    assert message == open_frame(sid, first, int(fin), kind)
    assert agent.receive(message) == [StreamOpened(sid, kind, first, fin)]


def test_open_without_first_bytes() -> None:
    relay, agent = pair()
    sid = relay.open_stream(StreamKind.TCP)
    [message] = relay.data_to_send()
    assert message == bytes.fromhex("03 00 0000 00000001 02")
    assert agent.receive(message) == [StreamOpened(sid, StreamKind.TCP, b"", False)]


@pytest.mark.parametrize("payload", [b"", b"\x00GET", b"\x04", b"\xff\xff"])
def test_open_with_no_or_an_unknown_kind_is_a_frame_error(payload: bytes) -> None:
    _, agent = pair()
    with pytest.raises(FrameError) as info:
        agent.receive(raw(FrameType.OPEN, 1, payload))
    assert info.value.code is ErrorCode.FRAME_ERROR
    assert agent.open_streams == 0


@pytest.mark.parametrize("kind", [StreamKind.TCP, StreamKind.TLS])
def test_raw_pipe_kinds_flow_both_ways(kind: StreamKind) -> None:
    relay, agent = pair()
    sid = relay.open_stream(kind, b"\x00ping")
    pump(relay, agent)
    agent.send_data(sid, b"\x00pong")
    relay.send_data(sid, b"", end_stream=True)
    assert pump(agent, relay) == [DataReceived(sid, b"\x00pong", False)]
    assert pump(relay, agent) == [DataReceived(sid, b"", True)]
    agent.send_data(sid, b"", end_stream=True)
    pump(agent, relay)
    assert relay.open_streams == agent.open_streams == 0


def test_a_large_data_frame_is_queued_beside_its_header_and_joins_to_the_same_bytes() -> None:
    relay, agent, sid = open_pair()
    small, large = b"s" * (SPLIT_AT - 1), b"L" * SPLIT_AT
    agent.send_data(sid, small)
    agent.send_data(sid, large, end_stream=True)
    queued = agent.messages_to_send()
    assert queued[0] == raw(FrameType.DATA, sid, small)
    assert queued[1] == (raw(FrameType.DATA, sid, b"", FIN), large)
    assert queued[1][1] is large  # the payload itself: not copied
    # The joined form is what data_to_send gives, byte for byte.
    _relay2, agent2, sid2 = open_pair()
    agent2.send_data(sid2, small)
    agent2.send_data(sid2, large, end_stream=True)
    joined = agent2.data_to_send()
    assert joined == [queued[0], queued[1][0] + queued[1][1]]
    events = [e for m in joined for e in relay.receive(m)]
    assert [e.data for e in events if isinstance(e, DataReceived)] == [small, large]
