"""The half-stream table, walked exhaustively: on its own, then through both Connections.

For every (state, move) pair the table either names the next state or the move is
illegal. Each pair is tried as a local move (the sending Connection must raise
LocalProtocolError and queue nothing) and as a received frame (the receiving Connection
must raise RemoteProtocolError), the way h11's tests walk its state machine.

In v2 only the relay's half has a head (OPEN); the agent's half starts in BODY, so its
first frame is DATA and a HEAD move on it cannot even be expressed by the agent.
"""

from __future__ import annotations

import itertools

import pytest

from tests.wire.helpers import HTTP, OK, POST, open_frame, pair, pump, raw
from wire import (
    INITIAL_STREAM_WINDOW,
    MAX_PAYLOAD,
    Connection,
    DataReceived,
    FrameType,
    LocalProtocolError,
    RemoteProtocolError,
)
from wire.errors import StreamClosedError
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
# The agent's half has no head: it is in BODY as soon as the stream exists.

DATA_MOVES = [Move.DATA, Move.DATA_FIN]


def response_half_in(state: Half) -> tuple[Connection, Connection, int]:
    """A stream whose response half is in ``state`` (BODY or DONE); the request half
    stays open."""
    relay, agent = pair()
    sid = relay.open_stream(HTTP, POST)
    pump(relay, agent)
    if state is Half.DONE:
        agent.send_data(sid, OK, end_stream=True)
        pump(agent, relay)
    assert agent._streams[sid].sending is state
    assert relay._streams[sid].receiving is state
    return relay, agent, sid


def test_the_agents_half_starts_in_body() -> None:
    relay, agent, sid = response_half_in(Half.BODY)
    assert agent._streams[sid].sending is Half.BODY
    assert relay._streams[sid].receiving is Half.BODY
    agent.send_data(sid, OK)  # its first frame is DATA
    assert agent.data_to_send() == [raw(FrameType.DATA, sid, OK)]


@pytest.mark.parametrize("state", [Half.BODY, Half.DONE])
@pytest.mark.parametrize("move", DATA_MOVES)
def test_response_half_local_moves(state: Half, move: Move) -> None:
    _relay, agent, sid = response_half_in(state)
    if (state, move) not in TRANSITIONS:
        # The agent's half is DONE but the relay's is not: the stream is still open.
        with pytest.raises(LocalProtocolError) as info:
            agent.send_data(sid, b"x", end_stream=move is Move.DATA_FIN)
        assert not isinstance(info.value, StreamClosedError)
        assert agent.data_to_send() == []
        assert agent._streams[sid].sending is state  # nothing changed
        return
    agent.send_data(sid, b"x", end_stream=move is Move.DATA_FIN)
    assert agent._streams[sid].sending is TRANSITIONS[state, move]
    assert [message[0] for message in agent.data_to_send()] == [FrameType.DATA]


@pytest.mark.parametrize("state", [Half.BODY, Half.DONE])
@pytest.mark.parametrize("move", DATA_MOVES)
def test_response_half_received_moves(state: Half, move: Move) -> None:
    relay, _agent, sid = response_half_in(state)
    message = raw(FrameType.DATA, sid, b"x", 1 if move is Move.DATA_FIN else 0)
    if (state, move) not in TRANSITIONS:
        with pytest.raises(RemoteProtocolError):
            relay.receive(message)
        return
    [event] = relay.receive(message)
    assert event == DataReceived(sid, b"x", move is Move.DATA_FIN)
    assert relay._streams[sid].receiving is TRANSITIONS[state, move]


@pytest.mark.parametrize("fin", [0, 1])
def test_a_head_on_the_response_half_is_an_open_the_relay_refuses(fin: int) -> None:
    relay, _agent, sid = response_half_in(Half.BODY)
    with pytest.raises(RemoteProtocolError):
        relay.receive(open_frame(sid, OK, fin))


# -- the request half: relay sends, agent receives --------------------------------------
# open_stream is the only way to send a head, and it always opens a new stream, so a
# local HEAD on an existing request half cannot even be expressed; the received form (a
# second OPEN for the same id) is tried below.


def request_half_in(state: Half) -> tuple[Connection, Connection, int]:
    relay, agent = pair()
    sid = relay.open_stream(HTTP, POST, end_stream=state is Half.DONE)
    pump(relay, agent)
    assert relay._streams[sid].sending is state
    assert agent._streams[sid].receiving is state
    return relay, agent, sid


@pytest.mark.parametrize("state", [Half.BODY, Half.DONE])
@pytest.mark.parametrize("move", DATA_MOVES)
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
        message = open_frame(sid, POST, fin)
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
    sid = relay.open_stream(HTTP, POST)
    pump(relay, agent)
    if request_fin_first:
        relay.send_data(sid, b"", end_stream=True)
        pump(relay, agent)
        agent.send_data(sid, OK, end_stream=True)
        assert not agent.is_open(sid)  # closed the moment its last half is sent
        assert relay.is_open(sid)
        pump(agent, relay)
    else:
        agent.send_data(sid, OK, end_stream=True)
        pump(agent, relay)
        relay.send_data(sid, b"", end_stream=True)
        assert not relay.is_open(sid)
        assert agent.is_open(sid)
        pump(relay, agent)
    assert not relay.is_open(sid) and not agent.is_open(sid)
    assert relay.open_streams == agent.open_streams == 0


def test_open_with_fin_and_one_data_with_fin_is_a_whole_exchange() -> None:
    relay, agent = pair()
    sid = relay.open_stream(HTTP, b"GET / HTTP/1.1\r\n\r\n", end_stream=True)
    [opened] = relay.data_to_send()
    assert opened == open_frame(sid, b"GET / HTTP/1.1\r\n\r\n", 1)
    agent.receive(opened)
    agent.send_data(sid, OK + b"hello", end_stream=True)
    assert not agent.is_open(sid)
    assert pump(agent, relay) == [DataReceived(sid, OK + b"hello", True)]
    assert relay.open_streams == agent.open_streams == 0


def test_empty_data_with_fin_is_an_end() -> None:
    relay, _agent = pair()
    sid = relay.open_stream(HTTP)
    relay.data_to_send()
    relay.send_data(sid, b"", end_stream=True)
    [end] = relay.data_to_send()
    assert end == raw(FrameType.DATA, sid, b"", 1)


def test_each_send_is_its_own_frame() -> None:
    """v2 queues every DATA as it is sent: an END is a frame of its own, never merged
    into an earlier frame (the bytes are the peer's to parse, not ours to re-frame)."""
    relay, agent = pair()
    sid = relay.open_stream(HTTP, POST)
    relay.send_data(sid, b"", end_stream=True)
    assert relay.data_to_send() == [open_frame(sid, POST), raw(FrameType.DATA, sid, b"", 1)]
    agent.receive(open_frame(sid, POST))
    agent.send_data(sid, OK)
    agent.send_data(sid, b"hi")
    agent.send_data(sid, b"", end_stream=True)
    assert agent.data_to_send() == [
        raw(FrameType.DATA, sid, OK),
        raw(FrameType.DATA, sid, b"hi"),
        raw(FrameType.DATA, sid, b"", 1),
    ]


def test_end_does_not_ride_on_a_control_frame() -> None:
    relay, agent = pair()
    sid = relay.open_stream(HTTP)
    relay.send_data(sid, bytes(INITIAL_STREAM_WINDOW // 2))
    pump(relay, agent)
    agent.consumed(sid, INITIAL_STREAM_WINDOW // 2)  # queues a WINDOW for the stream
    agent.send_data(sid, b"", end_stream=True)
    window, end = agent.data_to_send()
    assert window[0] == FrameType.WINDOW
    assert end == raw(FrameType.DATA, sid, b"", 1)
    assert MAX_PAYLOAD >= INITIAL_STREAM_WINDOW // 2
