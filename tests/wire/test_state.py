"""The half-stream table, walked exhaustively: on its own, then through both Connections.

For every (state, move) pair the table either names the next state or the move is
illegal. Each pair is tried as a local move (the sending Connection must raise
LocalProtocolError and queue nothing) and as a received frame (the receiving Connection
must raise RemoteProtocolError), the way h11's tests walk its state machine.
"""

from __future__ import annotations

import itertools

import pytest

from tests.wire.helpers import OK, POST, pair, pump, raw
from wire import (
    INITIAL_STREAM_WINDOW,
    MAX_PAYLOAD,
    Connection,
    FrameType,
    LocalProtocolError,
    RemoteProtocolError,
)
from wire.errors import StreamClosedError
from wire.payloads import encode_request_head, encode_response_head
from wire.state import TRANSITIONS, Half, Move, advance, data_move, head_move

ALL_PAIRS = list(itertools.product(Half, Move))


def test_table_is_exactly_the_documented_machine() -> None:
    assert TRANSITIONS == {
        (Half.IDLE, Move.HEAD): Half.BODY,
        (Half.IDLE, Move.HEAD_FIN): Half.DONE,
        (Half.BODY, Move.DATA): Half.BODY,
        (Half.BODY, Move.DATA_FIN): Half.DONE,
    }


@pytest.mark.parametrize(("state", "move"), ALL_PAIRS)
def test_advance_follows_the_table(state: Half, move: Move) -> None:
    if (state, move) in TRANSITIONS:
        assert advance(state, move) is TRANSITIONS[state, move]
    else:
        with pytest.raises(LocalProtocolError):
            advance(state, move)


def test_done_is_terminal() -> None:
    assert not [m for m in Move if (Half.DONE, m) in TRANSITIONS]


def test_move_helpers() -> None:
    assert (head_move(False), head_move(True)) == (Move.HEAD, Move.HEAD_FIN)
    assert (data_move(False), data_move(True)) == (Move.DATA, Move.DATA_FIN)


# -- the response half: agent sends, relay receives -------------------------------------


def response_half_in(state: Half) -> tuple[Connection, Connection, int]:
    """A stream whose response half is in ``state``; the request half stays open."""
    relay, agent = pair()
    sid = relay.open_stream(POST)
    pump(relay, agent)
    if state is not Half.IDLE:
        agent.send_response(sid, OK, end_stream=state is Half.DONE)
        pump(agent, relay)
    assert agent._streams[sid].sending is state
    assert relay._streams[sid].receiving is state
    return relay, agent, sid


def do_response_move(agent: Connection, sid: int, move: Move) -> None:
    if move in (Move.HEAD, Move.HEAD_FIN):
        agent.send_response(sid, OK, end_stream=move is Move.HEAD_FIN)
    else:
        agent.send_data(sid, b"x", end_stream=move is Move.DATA_FIN)


def response_frame(sid: int, move: Move) -> bytes:
    fin = 1 if move in (Move.HEAD_FIN, Move.DATA_FIN) else 0
    if move in (Move.HEAD, Move.HEAD_FIN):
        return raw(FrameType.RESPONSE, sid, encode_response_head(OK), fin)
    return raw(FrameType.DATA, sid, b"x", fin)


@pytest.mark.parametrize(("state", "move"), ALL_PAIRS)
def test_response_half_local_moves(state: Half, move: Move) -> None:
    _relay, agent, sid = response_half_in(state)
    if (state, move) not in TRANSITIONS:
        with pytest.raises(LocalProtocolError) as info:
            do_response_move(agent, sid, move)
        assert not isinstance(info.value, StreamClosedError)
        assert agent.data_to_send() == []
        assert agent._streams[sid].sending is state  # nothing changed
        return
    do_response_move(agent, sid, move)
    assert agent._streams[sid].sending is TRANSITIONS[state, move]
    assert [message[0] for message in agent.data_to_send()] == [
        FrameType.RESPONSE if move in (Move.HEAD, Move.HEAD_FIN) else FrameType.DATA
    ]


@pytest.mark.parametrize(("state", "move"), ALL_PAIRS)
def test_response_half_received_moves(state: Half, move: Move) -> None:
    relay, _agent, sid = response_half_in(state)
    message = response_frame(sid, move)
    if (state, move) not in TRANSITIONS:
        with pytest.raises(RemoteProtocolError):
            relay.receive(message)
        return
    [event] = relay.receive(message)
    assert event.stream_id == sid  # type: ignore[union-attr]
    assert event.end_stream is (move in (Move.HEAD_FIN, Move.DATA_FIN))  # type: ignore[union-attr]
    assert relay._streams[sid].receiving is TRANSITIONS[state, move]


# -- the request half: relay sends, agent receives --------------------------------------
# open_stream is the only way to send a request head, and it always opens a new stream,
# so a local HEAD on an existing request half cannot even be expressed; the received
# form (a second OPEN for the same id) is tried below.


def request_half_in(state: Half) -> tuple[Connection, Connection, int]:
    relay, agent = pair()
    sid = relay.open_stream(POST, end_stream=state is Half.DONE)
    pump(relay, agent)
    assert relay._streams[sid].sending is state
    assert agent._streams[sid].receiving is state
    return relay, agent, sid


@pytest.mark.parametrize("state", [Half.BODY, Half.DONE])
@pytest.mark.parametrize("move", [Move.DATA, Move.DATA_FIN])
def test_request_half_local_data(state: Half, move: Move) -> None:
    relay, _, sid = request_half_in(state)
    if (state, move) not in TRANSITIONS:
        with pytest.raises(LocalProtocolError):
            relay.send_data(sid, b"x", end_stream=move is Move.DATA_FIN)
        assert relay.data_to_send() == []
        return
    relay.send_data(sid, b"x", end_stream=move is Move.DATA_FIN)
    assert relay._streams[sid].sending is TRANSITIONS[state, move]


@pytest.mark.parametrize(("state", "move"), [p for p in ALL_PAIRS if p[0] is not Half.IDLE])
def test_request_half_received_moves(state: Half, move: Move) -> None:
    _, agent, sid = request_half_in(state)
    fin = 1 if move in (Move.HEAD_FIN, Move.DATA_FIN) else 0
    if move in (Move.HEAD, Move.HEAD_FIN):
        message = raw(FrameType.OPEN, sid, encode_request_head(POST), fin)
    else:
        message = raw(FrameType.DATA, sid, b"x", fin)
    if (state, move) not in TRANSITIONS:
        with pytest.raises(RemoteProtocolError):
            agent.receive(message)
        return
    agent.receive(message)
    assert agent._streams[sid].receiving is TRANSITIONS[state, move]


# -- closing ----------------------------------------------------------------------------


@pytest.mark.parametrize("request_fin_first", [True, False])
def test_stream_closes_when_both_halves_are_done(request_fin_first: bool) -> None:
    relay, agent = pair()
    sid = relay.open_stream(POST)
    pump(relay, agent)
    if request_fin_first:
        relay.send_data(sid, b"", end_stream=True)
        pump(relay, agent)
        agent.send_response(sid, OK, end_stream=True)
        assert not agent.is_open(sid)  # closed the moment its last half is sent
        assert relay.is_open(sid)
        pump(agent, relay)
    else:
        agent.send_response(sid, OK, end_stream=True)
        pump(agent, relay)
        relay.send_data(sid, b"", end_stream=True)
        assert not relay.is_open(sid)
        assert agent.is_open(sid)
        pump(relay, agent)
    assert not relay.is_open(sid) and not agent.is_open(sid)
    assert relay.open_streams == agent.open_streams == 0


def test_empty_data_with_fin_is_an_end() -> None:
    relay, _agent = pair()
    sid = relay.open_stream(POST)
    relay.data_to_send()  # the OPEN left: the END needs a frame of its own
    relay.send_data(sid, b"", end_stream=True)
    [end] = relay.data_to_send()
    assert end == raw(FrameType.DATA, sid, b"", 1)


def test_end_rides_on_the_streams_last_queued_data() -> None:
    relay, agent = pair()
    sid = relay.open_stream(POST)
    pump(relay, agent)
    agent.send_response(sid, OK)
    agent.send_data(sid, b"hi")
    agent.send_data(sid, b"", end_stream=True)
    head, data = agent.data_to_send()
    assert head == raw(FrameType.RESPONSE, sid, encode_response_head(OK), 0)
    assert data == raw(FrameType.DATA, sid, b"hi", 1)


def test_end_rides_on_an_unsent_head() -> None:
    relay, agent = pair()
    sid = relay.open_stream(POST)
    relay.send_data(sid, b"", end_stream=True)
    [opened] = relay.data_to_send()
    assert opened == raw(FrameType.OPEN, sid, encode_request_head(POST), 1)
    agent.receive(opened)
    agent.send_response(sid, OK)
    agent.send_data(sid, b"", end_stream=True)
    assert agent.data_to_send() == [raw(FrameType.RESPONSE, sid, encode_response_head(OK), 1)]


def test_end_never_rides_on_another_streams_frame() -> None:
    relay, agent = pair()
    one, two = relay.open_stream(POST), relay.open_stream(POST)
    pump(relay, agent)
    agent.send_response(one, OK)
    agent.send_response(two, OK)
    agent.send_data(one, b"", end_stream=True)
    [*_, end] = agent.data_to_send()
    assert end == raw(FrameType.DATA, one, b"", 1)


def test_end_does_not_ride_on_a_control_frame() -> None:
    relay, agent = pair()
    sid = relay.open_stream(POST)
    for _ in range(INITIAL_STREAM_WINDOW // 2 // MAX_PAYLOAD):
        relay.send_data(sid, bytes(MAX_PAYLOAD))
    pump(relay, agent)
    agent.send_response(sid, OK)
    pump(agent, relay)
    agent.consumed(sid, INITIAL_STREAM_WINDOW // 2)  # queues a WINDOW for the stream
    agent.send_data(sid, b"", end_stream=True)
    window, end = agent.data_to_send()
    assert window[0] == FrameType.WINDOW
    assert end == raw(FrameType.DATA, sid, b"", 1)
