"""Stream lifecycle: RESET from every state, frames for closed vs never-opened streams,
stream ids, and moves a role may not make."""

from __future__ import annotations

import pytest

from tests.wire.helpers import GET, NAME, OK, POST, WELCOME, open_pair, pair, pump, raw, u32
from wire import (
    Connection,
    DataReceived,
    ErrorCode,
    FrameType,
    Hello,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    StreamClosedError,
    StreamReset,
)
from wire.payloads import encode_hello, encode_request_head, encode_response_head, encode_welcome
from wire.state import Half

# (relay sending, relay receiving) for every open stream state, and how to get there.
OPEN_STATES = [
    (Half.BODY, Half.IDLE),
    (Half.BODY, Half.BODY),
    (Half.BODY, Half.DONE),
    (Half.DONE, Half.IDLE),
    (Half.DONE, Half.BODY),
]


def stream_in(sending: Half, receiving: Half) -> tuple[Connection, Connection, int]:
    relay, agent = pair()
    sid = relay.open_stream(POST, end_stream=sending is Half.DONE)
    pump(relay, agent)
    if receiving is not Half.IDLE:
        agent.send_response(sid, OK, end_stream=receiving is Half.DONE)
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
    if receiving is Half.IDLE:
        agent.send_response(sid, OK)
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
    dropped = 0
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


def test_response_for_a_closed_stream_is_dropped() -> None:
    relay, _, sid = closed_stream()
    assert relay.receive(raw(FrameType.RESPONSE, sid, encode_response_head(OK))) == []


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


@pytest.mark.parametrize("sid", [3, 2])
def test_response_for_a_never_opened_stream(sid: int) -> None:
    relay, _, _ = open_pair()
    with pytest.raises(RemoteProtocolError):
        relay.receive(raw(FrameType.RESPONSE, sid, encode_response_head(OK)))


def test_sending_on_a_never_opened_stream_is_a_bug_not_a_race() -> None:
    relay, agent, sid = open_pair()
    for conn in (relay, agent):
        with pytest.raises(LocalProtocolError) as info:
            conn.send_data(sid + 2, b"x")
        assert not isinstance(info.value, StreamClosedError)
    with pytest.raises(LocalProtocolError) as info:
        agent.send_response(sid + 2, OK)
    assert not isinstance(info.value, StreamClosedError)
    relay.send_reset(sid + 2, ErrorCode.CANCEL)  # a no-op, like any reset of a non-stream
    assert relay.data_to_send() == []


def test_send_response_on_a_reset_stream_raises_stream_closed() -> None:
    _relay, agent, sid = closed_stream()
    with pytest.raises(StreamClosedError) as info:
        agent.send_response(sid, OK)
    assert info.value.stream_id == sid
    assert agent.data_to_send() == []


# -- stream ids ---------------------------------------------------------------------------


def test_relay_opens_odd_increasing_ids() -> None:
    relay, agent = pair()
    ids = [relay.open_stream(GET, end_stream=True) for _ in range(3)]
    assert ids == [1, 3, 5]
    events = pump(relay, agent)
    assert [e.stream_id for e in events] == ids  # type: ignore[union-attr]


@pytest.mark.parametrize("sid", [2, 1, 0])
def test_agent_rejects_even_reused_or_zero_open_ids(sid: int) -> None:
    _relay, agent, first = open_pair()
    assert first == 1
    with pytest.raises(RemoteProtocolError):
        agent.receive(raw(FrameType.OPEN, sid, encode_request_head(GET)))


def test_agent_rejects_an_id_below_the_last_even_if_skipped() -> None:
    _, agent = pair()
    agent.receive(raw(FrameType.OPEN, 5, encode_request_head(GET)))
    with pytest.raises(RemoteProtocolError):
        agent.receive(raw(FrameType.OPEN, 3, encode_request_head(GET)))
    # Skipped ids count as closed: their frames are dropped, not protocol errors.
    assert agent.receive(raw(FrameType.DATA, 3, b"x")) == []


def test_relay_stops_before_the_stream_id_space_runs_out() -> None:
    relay, _ = pair()
    relay._last_stream_id = 2**32 - 1  # the last odd id was used
    assert not relay.can_open()
    with pytest.raises(LocalProtocolError):
        relay.open_stream(GET)


# -- roles --------------------------------------------------------------------------------


def test_agent_may_not_open_streams() -> None:
    _, agent = pair()
    assert not agent.can_open()
    with pytest.raises(LocalProtocolError):
        agent.open_stream(GET)
    assert agent.data_to_send() == []


def test_relay_receiving_open_is_a_protocol_error() -> None:
    relay, _ = pair()
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive(raw(FrameType.OPEN, 1, encode_request_head(GET)))
    assert info.value.code is ErrorCode.PROTOCOL_ERROR


def test_relay_may_not_send_a_response_and_agent_may_not_receive_one() -> None:
    relay, agent, sid = open_pair()
    with pytest.raises(LocalProtocolError):
        relay.send_response(sid, OK)
    with pytest.raises(RemoteProtocolError):
        agent.receive(raw(FrameType.RESPONSE, sid, encode_response_head(OK)))


def test_response_twice_on_an_open_stream() -> None:
    relay, agent, sid = open_pair(response=True)
    with pytest.raises(LocalProtocolError):
        agent.send_response(sid, OK)
    with pytest.raises(RemoteProtocolError):
        relay.receive(raw(FrameType.RESPONSE, sid, encode_response_head(OK)))


def test_data_before_response() -> None:
    relay, agent, sid = open_pair()
    with pytest.raises(LocalProtocolError):
        agent.send_data(sid, b"x")
    with pytest.raises(RemoteProtocolError):
        relay.receive(raw(FrameType.DATA, sid, b"x"))


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
        agent.receive(raw(FrameType.OPEN, 1, encode_request_head(GET)))
    for conn in (relay, agent):
        with pytest.raises(RemoteProtocolError):
            conn.receive(raw(FrameType.DATA, 1, b"x"))
        with pytest.raises(RemoteProtocolError):
            conn.receive(raw(FrameType.RESET, 1, u32(0)))
    assert not relay.can_open()
    with pytest.raises(LocalProtocolError):
        relay.open_stream(GET)


def test_data_events_carry_the_bytes_and_fin() -> None:
    relay, agent, sid = open_pair()
    relay.send_data(sid, b"hello ")
    relay.send_data(sid, b"world", end_stream=True)
    assert pump(relay, agent) == [
        DataReceived(sid, b"hello ", False),
        DataReceived(sid, b"world", True),
    ]
