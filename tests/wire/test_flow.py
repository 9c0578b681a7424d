"""Flow control: window exhaustion and credit, growth, the shared session window."""

from __future__ import annotations

import pytest

from tests.wire.helpers import (
    GET,
    HTTP,
    open_frame,
    open_pair,
    pair,
    pump,
    raw,
    u32,
)
from wire import (
    INITIAL_SESSION_WINDOW,
    INITIAL_STREAM_WINDOW,
    MAX_PAYLOAD,
    MAX_STREAM_WINDOW,
    MAX_WINDOW,
    Connection,
    DataReceived,
    ErrorCode,
    FlowControlError,
    FrameError,
    FrameType,
    LocalProtocolError,
    StreamKind,
    StreamOpened,
    WindowUpdated,
)
from wire.flow import RecvWindow, SendWindow

CHUNK = bytes(MAX_PAYLOAD)


def fill(sender: Connection, sid: int) -> int:
    """Send DATA until the stream's credit is gone; return the bytes sent."""
    sent = 0
    while n := sender.sendable(sid):
        sender.send_data(sid, CHUNK[:n])
        sent += n
    return sent


def test_sendable_drops_to_zero_and_a_window_restores_it() -> None:
    relay, _agent, sid = open_pair()
    assert relay.sendable(sid) == MAX_PAYLOAD  # capped at the largest frame
    assert fill(relay, sid) == INITIAL_STREAM_WINDOW
    assert relay.sendable(sid) == 0
    with pytest.raises(LocalProtocolError):
        relay.send_data(sid, b"x")  # no credit: refused, nothing queued, nothing spent
    assert len(relay.data_to_send()) == INITIAL_STREAM_WINDOW // MAX_PAYLOAD
    assert relay._streams[sid].send_window.available == 0
    assert relay.receive(raw(FrameType.WINDOW, sid, u32(1000))) == [WindowUpdated(sid, 1000)]
    assert relay.sendable(sid) == 1000


def test_receiver_grants_credit_as_it_drains_not_as_bytes_arrive() -> None:
    relay, agent, sid = open_pair()
    fill(relay, sid)
    events = pump(relay, agent)
    assert sum(len(e.data) for e in events if isinstance(e, DataReceived)) == INITIAL_STREAM_WINDOW
    assert agent.data_to_send() == []  # nothing drained yet: no credit
    agent.consumed(sid, INITIAL_STREAM_WINDOW // 2 - 1)
    assert agent.data_to_send() == []  # batched: below half a window
    agent.consumed(sid, 1)
    [window] = agent.data_to_send()
    assert window == raw(FrameType.WINDOW, sid, u32(INITIAL_STREAM_WINDOW // 2))
    assert relay.receive(window) == [WindowUpdated(sid, INITIAL_STREAM_WINDOW // 2)]
    assert relay.sendable(sid) == INITIAL_STREAM_WINDOW // 2


def test_data_beyond_the_stream_window_is_a_flow_control_error() -> None:
    relay, agent, sid = open_pair()
    fill(relay, sid)
    pump(relay, agent)
    with pytest.raises(FlowControlError) as info:
        agent.receive(raw(FrameType.DATA, sid, b"x"))
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


def test_data_beyond_the_session_window_is_a_flow_control_error() -> None:
    _relay, agent, sid = open_pair()
    agent._recv_session.remaining = 10  # as if the rest of the session were in flight
    with pytest.raises(FlowControlError) as info:
        agent.receive(raw(FrameType.DATA, sid, bytes(11)))
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


@pytest.mark.parametrize("sid", [0, 1])
def test_window_overflow_past_2_31_minus_1(sid: int) -> None:
    relay, _agent, opened = open_pair()
    window = relay._send_session if sid == 0 else relay._streams[opened].send_window
    headroom = MAX_WINDOW - window.available
    assert relay.receive(raw(FrameType.WINDOW, sid, u32(headroom))) == [
        WindowUpdated(sid, headroom)
    ]
    with pytest.raises(FlowControlError) as info:
        relay.receive(raw(FrameType.WINDOW, sid, u32(1)))
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


@pytest.mark.parametrize("increment", [0, 2**31, 2**32 - 1])
def test_window_increment_out_of_range(increment: int) -> None:
    relay, _, sid = open_pair()
    with pytest.raises(FrameError) as info:
        relay.receive(raw(FrameType.WINDOW, sid, u32(increment)))
    assert info.value.code is ErrorCode.FRAME_ERROR


@pytest.mark.parametrize("payload", [b"", b"\0\0\0", b"\0\0\0\1\0"])
def test_window_payload_must_be_four_bytes(payload: bytes) -> None:
    relay, _, sid = open_pair()
    with pytest.raises(FrameError):
        relay.receive(raw(FrameType.WINDOW, sid, payload))


def test_window_for_a_stream_whose_sending_half_is_done_is_harmless() -> None:
    relay, _agent, sid = open_pair(request_fin=True)
    assert relay.receive(raw(FrameType.WINDOW, sid, u32(5))) == [WindowUpdated(sid, 5)]
    assert relay.sendable(sid) == 0


def test_session_window_is_shared_by_streams() -> None:
    relay, agent = pair(max_streams=100)
    streams = INITIAL_SESSION_WINDOW // INITIAL_STREAM_WINDOW
    for _ in range(streams):
        fill(relay, relay.open_stream(HTTP))
    assert relay._send_session.available == 0
    last = relay.open_stream(HTTP)
    assert relay._streams[last].send_window.available == INITIAL_STREAM_WINDOW
    assert relay.sendable(last) == 0  # its own window is full; the session's is empty
    events = pump(relay, agent)
    first = 1
    # Draining a quarter of the session on one stream refunds the session for all.
    agent.consumed(first, INITIAL_STREAM_WINDOW)
    for sid in range(3, 2 * (INITIAL_SESSION_WINDOW // 4 // INITIAL_STREAM_WINDOW), 2):
        agent.consumed(sid, INITIAL_STREAM_WINDOW)
    assert len(events) > streams
    events = pump(agent, relay)
    assert WindowUpdated(0, INITIAL_SESSION_WINDOW // 4) in events
    assert relay.sendable(last) == MAX_PAYLOAD


def test_consuming_more_than_was_received_is_a_local_error() -> None:
    relay, agent, sid = open_pair()
    relay.send_data(sid, b"abc")
    pump(relay, agent)
    with pytest.raises(LocalProtocolError):
        agent.consumed(sid, 4)
    assert agent._recv_session.buffered == 3  # unchanged
    agent.consumed(sid, 3)


def test_consumed_after_the_stream_closed_still_refunds_the_session() -> None:
    relay, agent, sid = open_pair()
    relay.send_data(sid, b"abc")
    relay.send_reset(sid, ErrorCode.CANCEL)
    pump(relay, agent)
    assert not agent.is_open(sid)
    agent.consumed(sid, 3)
    assert (agent._recv_session.buffered, agent._recv_session.owed) == (0, 3)


def test_data_with_fin_ends_stream_credit_tracking() -> None:
    relay, agent, sid = open_pair()
    relay.send_data(sid, b"abc", end_stream=True)
    pump(relay, agent)
    agent.consumed(sid, 3)  # the request half is done: no stream WINDOW for it
    assert agent.data_to_send() == []


# -- window growth -------------------------------------------------------------------------


def stream_through(relay: Connection, agent: Connection, sid: int, total: int) -> None:
    """Move ``total`` bytes relay -> agent, the agent draining each frame at once."""
    while total > 0:
        n = min(relay.sendable(sid), total)
        assert n, "sender starved although the receiver drained everything"
        relay.send_data(sid, CHUNK[:n])
        for event in pump(relay, agent):
            agent.consumed(sid, len(event.data))  # type: ignore[union-attr]
        pump(agent, relay)
        total -= n


def test_window_grows_for_a_consumer_that_keeps_up() -> None:
    relay, agent, sid = open_pair()
    stream_through(relay, agent, sid, 64 * 1024 * 1024)
    recv = agent._streams[sid].recv_window
    assert recv.target == MAX_STREAM_WINDOW
    assert relay._streams[sid].send_window.available == recv.remaining


def test_window_does_not_grow_for_a_slow_consumer() -> None:
    relay, agent, sid = open_pair()
    recv = agent._streams[sid].recv_window
    for _ in range(64):  # 16 MiB in all, but the consumer always lags a window behind
        fill(relay, sid)
        pump(relay, agent)
        agent.consumed(sid, INITIAL_STREAM_WINDOW // 2)
        pump(agent, relay)
        assert recv.buffered >= INITIAL_STREAM_WINDOW // 2
    assert recv.target == INITIAL_STREAM_WINDOW
    assert recv.buffered <= INITIAL_STREAM_WINDOW


def test_recv_window_unit_behaviour() -> None:
    window = RecvWindow(100, divisor=2)
    window.receive(100)
    with pytest.raises(FlowControlError):
        window.receive(1)
    assert window.consume(49) == 0
    assert window.owed == 49
    assert window.consume(1) == 50
    assert (window.remaining, window.buffered, window.owed) == (50, 50, 0)
    with pytest.raises(LocalProtocolError):
        window.consume(51)
    with pytest.raises(LocalProtocolError):
        window.consume(-1)


def test_recv_window_growth_stops_at_the_maximum() -> None:
    window = RecvWindow(MAX_STREAM_WINDOW // 2)
    for _ in range(8):
        window.receive(window.remaining)
        window.consume(window.buffered)
    assert window.target == MAX_STREAM_WINDOW
    assert window.remaining == MAX_STREAM_WINDOW


def test_send_window_unit_behaviour() -> None:
    window = SendWindow(10)
    window.spend(10)
    with pytest.raises(LocalProtocolError):
        window.spend(1)
    window.grow(MAX_WINDOW)
    with pytest.raises(FlowControlError):
        window.grow(1)


def test_send_data_over_max_payload_is_refused_even_with_credit() -> None:
    relay, _agent, sid = open_pair()
    relay._streams[sid].send_window.available = 10 * MAX_PAYLOAD
    with pytest.raises(LocalProtocolError):
        relay.send_data(sid, bytes(MAX_PAYLOAD + 1))
    assert relay.data_to_send() == []
    assert relay._streams[sid].send_window.available == 10 * MAX_PAYLOAD


def test_both_directions_have_their_own_windows() -> None:
    relay, agent, sid = open_pair()
    assert fill(agent, sid) == INITIAL_STREAM_WINDOW
    assert relay.sendable(sid) == MAX_PAYLOAD
    assert relay.open_stream(HTTP, GET, end_stream=True) == sid + 2


# -- OPEN's first bytes count against the windows ----------------------------------------


def test_open_first_bytes_spend_stream_and_session_credit() -> None:
    relay, agent = pair()
    first = GET + b"x" * 1000
    sid = relay.open_stream(HTTP, first)
    assert relay._streams[sid].send_window.available == INITIAL_STREAM_WINDOW - len(first)
    assert relay._send_session.available == INITIAL_SESSION_WINDOW - len(first)
    assert relay.sendable(sid) == INITIAL_STREAM_WINDOW - len(first)
    [event] = pump(relay, agent)
    assert event == StreamOpened(sid, StreamKind.HTTP, first, False)
    recv = agent._streams[sid].recv_window
    assert (recv.remaining, recv.buffered) == (INITIAL_STREAM_WINDOW - len(first), len(first))
    assert agent._recv_session.buffered == len(first)


def test_open_first_bytes_are_consumed_like_data() -> None:
    relay, agent = pair()
    half = INITIAL_STREAM_WINDOW // 2
    sid = relay.open_stream(HTTP, bytes(half))
    pump(relay, agent)
    agent.consumed(sid, half - 1)
    assert agent.data_to_send() == []  # batched like any DATA
    agent.consumed(sid, 1)
    [window] = agent.data_to_send()
    assert window == raw(FrameType.WINDOW, sid, u32(half))
    assert relay.receive(window) == [WindowUpdated(sid, half)]
    assert relay._streams[sid].send_window.available == INITIAL_STREAM_WINDOW
    with pytest.raises(LocalProtocolError):
        agent.consumed(sid, 1)  # nothing more is held


def test_open_with_fin_holds_session_credit_until_consumed() -> None:
    relay, agent = pair()
    sid = relay.open_stream(HTTP, GET, end_stream=True)
    pump(relay, agent)
    assert agent._recv_session.buffered == len(GET)
    agent.consumed(sid, len(GET))  # the request half is done: no stream WINDOW
    assert agent.data_to_send() == []
    assert (agent._recv_session.buffered, agent._recv_session.owed) == (0, len(GET))


def test_sendable_zero_is_the_largest_first_payload() -> None:
    relay, agent = pair()
    largest = relay.sendable(0)
    assert largest == MAX_PAYLOAD - 1  # the kind byte takes one byte of the frame
    sid = relay.open_stream(HTTP, bytes(largest))
    [message] = relay.data_to_send()
    assert len(message) == 8 + MAX_PAYLOAD
    assert agent.receive(message)[0] == StreamOpened(sid, StreamKind.HTTP, bytes(largest), False)
    with pytest.raises(LocalProtocolError, match="exceed"):
        relay.open_stream(HTTP, bytes(largest + 1))
    assert relay.data_to_send() == []
    assert relay.open_stream(HTTP) == sid + 2  # the refused OPEN used up no stream id


def test_sendable_zero_follows_the_session_window() -> None:
    relay, _agent = pair()
    relay._send_session.available = 10
    assert relay.sendable(0) == 10
    with pytest.raises(LocalProtocolError):
        relay.open_stream(HTTP, bytes(11))
    sid = relay.open_stream(HTTP, bytes(10))
    assert relay.sendable(0) == relay.sendable(sid) == 0


def test_open_beyond_the_session_window_is_a_flow_control_error() -> None:
    _relay, agent = pair()
    agent._recv_session.remaining = 10  # as if the rest of the session were in flight
    with pytest.raises(FlowControlError) as info:
        agent.receive(open_frame(1, bytes(11)))
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


def test_open_bytes_and_data_share_the_stream_window() -> None:
    relay, agent = pair()
    sid = relay.open_stream(HTTP, bytes(1000))
    pump(relay, agent)
    # A relay that forgot the OPEN's bytes sends a whole window more: one byte too many.
    with pytest.raises(FlowControlError):
        agent.receive(raw(FrameType.DATA, sid, bytes(INITIAL_STREAM_WINDOW - 999)))


def test_credit_is_the_acknowledged_offset() -> None:
    """What the receiver granted back, plus the initial window, is how far the sender may
    write; minus the window, it is how much the consumer took: the resumption basis."""
    relay, agent = pair()
    sid = relay.open_stream(HTTP, bytes(1000))
    relay.send_data(sid, bytes(INITIAL_STREAM_WINDOW - 1000))
    pump(relay, agent)
    granted = 0
    for taken in (100_000, 50_000, INITIAL_STREAM_WINDOW - 150_000):
        agent.consumed(sid, taken)
        for event in pump(agent, relay):
            if isinstance(event, WindowUpdated) and event.stream_id == sid:
                granted += event.increment
        recv = agent._streams[sid].recv_window
        acked = granted  # bytes the consumer took and the sender has heard of
        assert acked + recv.owed == INITIAL_STREAM_WINDOW - recv.buffered
        assert relay._streams[sid].send_window.available == granted
