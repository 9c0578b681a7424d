"""Limits, on the sending side (LocalProtocolError before anything is queued) and on the
receiving side (RemoteProtocolError), and the idle-frame budget (ENHANCE_YOUR_CALM)."""

from __future__ import annotations

import pytest

from tests.wire.helpers import (
    FIN,
    GET,
    HTTP,
    OK,
    open_frame,
    open_pair,
    pair,
    pump,
    raw,
    settle,
    u32,
)
from wire import (
    IDLE_FRAME_ALLOWANCE,
    IDLE_FRAMES_PER_STREAM,
    INITIAL_STREAM_WINDOW,
    MAX_PAYLOAD,
    MAX_REASON,
    Connection,
    ErrorCode,
    FrameError,
    FrameType,
    LocalProtocolError,
    RemoteProtocolError,
    StreamReset,
)
from wire.frames import decode_frame, decode_reset, encode_reason

# -- frame size --------------------------------------------------------------------------


def test_max_payload_is_256_kib() -> None:
    assert MAX_PAYLOAD == 256 * 1024


def test_largest_payload_is_accepted_and_one_more_byte_is_not() -> None:
    _relay, agent, sid = open_pair()
    agent.receive(raw(FrameType.DATA, sid, bytes(MAX_PAYLOAD)))
    with pytest.raises(FrameError) as info:
        agent.receive(raw(FrameType.DATA, sid, bytes(MAX_PAYLOAD + 1)))
    assert info.value.code is ErrorCode.FRAME_ERROR


# -- stream limit ---------------------------------------------------------------------------


def test_stream_limit_on_both_sides() -> None:
    relay, agent = pair(max_streams=2)
    first, second = relay.open_stream(HTTP, GET), relay.open_stream(HTTP, GET)
    assert not relay.can_open()
    with pytest.raises(LocalProtocolError):
        relay.open_stream(HTTP, GET)
    pump(relay, agent)
    with pytest.raises(RemoteProtocolError):  # a relay that ignores its own limit
        agent.receive(open_frame(second + 2, GET))
    relay.send_reset(first, ErrorCode.CANCEL)
    assert relay.can_open()
    third = relay.open_stream(HTTP)
    assert pump(relay, agent)[0] == StreamReset(first, ErrorCode.CANCEL, "")
    assert agent.is_open(third)


# -- reasons -----------------------------------------------------------------------------


def test_reason_is_cut_at_the_limit_on_a_character_boundary() -> None:
    payload = encode_reason(ErrorCode.CANCEL, "é" * MAX_REASON)
    assert len(payload) == 4 + MAX_REASON
    assert decode_reset(payload) == (ErrorCode.CANCEL, "é" * (MAX_REASON // 2))
    odd = encode_reason(ErrorCode.CANCEL, "x" + "é" * MAX_REASON)
    assert len(odd) == 4 + MAX_REASON - 1  # the split "é" is dropped, not mangled
    assert decode_reset(odd)[1] == "x" + "é" * (MAX_REASON // 2 - 1)


def test_reset_reason_over_the_limit_is_a_frame_error() -> None:
    relay, agent, sid = open_pair()
    agent.receive(raw(FrameType.RESET, sid, u32(6) + b"x" * MAX_REASON))
    with pytest.raises(FrameError):
        relay.receive(raw(FrameType.RESET, sid, u32(6) + b"x" * (MAX_REASON + 1)))


def test_send_reset_cuts_a_long_reason() -> None:
    relay, _, sid = open_pair()
    relay.send_reset(sid, ErrorCode.CANCEL, "x" * 5000)
    [message] = relay.data_to_send()
    assert decode_reset(decode_frame(message).payload) == (ErrorCode.CANCEL, "x" * MAX_REASON)


@pytest.mark.parametrize("payload", [b"", b"\0\0\0"])
def test_reset_without_a_code(payload: bytes) -> None:
    _, agent, sid = open_pair()
    with pytest.raises(FrameError):
        agent.receive(raw(FrameType.RESET, sid, payload))


# -- the idle-frame budget ----------------------------------------------------------------


def calm(conn: object, messages: list[bytes]) -> int:
    """Feed ``messages`` until ENHANCE_YOUR_CALM; return how many were accepted."""
    for accepted, message in enumerate(messages):
        try:
            conn.receive(message)  # type: ignore[attr-defined]
        except RemoteProtocolError as exc:
            assert exc.code is ErrorCode.ENHANCE_YOUR_CALM
            return accepted
    raise AssertionError("the flood was not cut")


def test_window_flood_is_cut_at_the_allowance() -> None:
    relay, _agent, sid = open_pair()
    # The open stream earned the allowance of one stream opened.
    budget = IDLE_FRAME_ALLOWANCE + IDLE_FRAMES_PER_STREAM
    flood = [raw(FrameType.WINDOW, sid, u32(1))] * (budget + 10)
    assert calm(relay, flood) == budget


def test_session_window_flood_is_cut() -> None:
    relay, _ = pair()
    assert calm(relay, [raw(FrameType.WINDOW, 0, u32(1))] * 2000) == IDLE_FRAME_ALLOWANCE


def test_empty_data_without_fin_flood_is_cut() -> None:
    _relay, agent, sid = open_pair()
    flood = [raw(FrameType.DATA, sid)] * 2000
    assert calm(agent, flood) == IDLE_FRAME_ALLOWANCE + IDLE_FRAMES_PER_STREAM


@pytest.mark.parametrize("ftype", ["DATA", "RESET", "WINDOW"])
def test_frames_for_closed_streams_flood_is_cut(ftype: str) -> None:
    relay, agent, sid = open_pair()
    agent.send_reset(sid, ErrorCode.CANCEL)
    pump(agent, relay)  # opened and closed: two useful events on each side
    message = {
        "DATA": raw(FrameType.DATA, sid, b"x"),
        "RESET": raw(FrameType.RESET, sid, u32(ErrorCode.CANCEL)),
        "WINDOW": raw(FrameType.WINDOW, sid, u32(1)),
    }[ftype]
    accepted = calm(relay, [message] * 2000)
    assert accepted == IDLE_FRAME_ALLOWANCE + 2 * IDLE_FRAMES_PER_STREAM


def test_useful_frames_earn_allowance_both_ways() -> None:
    relay, agent, sid = open_pair()
    relay.send_data(sid, b"a")  # a DATA frame with bytes, sent: +1
    relay.data_to_send()
    agent.send_data(sid, b"b")  # one received: +1
    pump(agent, relay)
    relay.consumed(sid, 1)
    budget = IDLE_FRAME_ALLOWANCE + 3 * IDLE_FRAMES_PER_STREAM  # opened, sent, received
    assert calm(relay, [raw(FrameType.WINDOW, 0, u32(1))] * 2000) == budget


def test_empty_data_with_fin_and_data_with_bytes_are_progress() -> None:
    relay, agent = pair(max_streams=1000)
    # Thousands of honest, tiny exchanges: none of their frames is idle.
    for _ in range(3 * IDLE_FRAME_ALLOWANCE):
        sid = relay.open_stream(HTTP, GET, end_stream=True)
        pump(relay, agent)
        agent.consumed(sid, len(GET))
        agent.send_data(sid, OK)
        agent.send_data(sid, b"", end_stream=True)
        pump(agent, relay)
        relay.consumed(sid, len(OK))
        settle(relay, agent)
    assert relay._idle_frames == 0 and agent._idle_frames < IDLE_FRAME_ALLOWANCE


def test_the_code_is_enhance_your_calm() -> None:
    assert int(ErrorCode.ENHANCE_YOUR_CALM) == 14
    relay, _ = pair()
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(IDLE_FRAME_ALLOWANCE + 1):
            relay.receive(raw(FrameType.WINDOW, 0, u32(1)))
    assert info.value.code is ErrorCode.ENHANCE_YOUR_CALM
    assert "no progress" in str(info.value)


def test_a_long_bulk_download_never_trips_the_budget() -> None:
    relay, agent, sid = open_pair()
    left = 64 * INITIAL_STREAM_WINDOW  # 16 MiB, with every WINDOW the agent is owed
    while left:
        n = min(agent.sendable(sid), left, 1000)  # small frames: more WINDOWs per byte
        assert n
        agent.send_data(sid, bytes(n))
        for event in pump(agent, relay):
            relay.consumed(sid, len(event.data))  # type: ignore[union-attr]
        pump(relay, agent)
        left -= n


# -- DATA crossing our RESET -------------------------------------------------------------


def reset_with_frames_in_flight(count: int, size: int = 1) -> tuple[Connection, list[bytes]]:
    """The agent streams ``count`` small frames; the relay resets before they arrive."""
    relay, agent, sid = open_pair()
    for _ in range(count):
        agent.send_data(sid, bytes(size))
    in_flight = agent.data_to_send()
    relay.send_reset(sid, ErrorCode.CANCEL)
    relay.data_to_send()
    return relay, in_flight


def test_many_small_frames_crossing_a_reset_are_not_a_flood() -> None:
    """An honest agent streaming tiny events may have far more frames in flight than the
    allowance when the caller goes away: they fit the credit it had, so they count as
    progress, and the session survives."""
    relay, in_flight = reset_with_frames_in_flight(3 * IDLE_FRAME_ALLOWANCE)
    for message in in_flight:
        assert relay.receive(message) == []
    assert relay._idle_frames == 0
    assert relay._recv_session.buffered == 0  # every dropped byte was refunded


def test_crossing_data_beyond_the_credit_the_peer_had_is_idle() -> None:
    relay, agent, sid = open_pair()
    agent.send_data(sid, bytes(INITIAL_STREAM_WINDOW - 10))
    pump(agent, relay)  # held, not consumed: the agent has 10 bytes of credit left
    relay.send_reset(sid, ErrorCode.CANCEL)
    assert relay._reset_credit == {sid: 10}
    accepted = calm(relay, [raw(FrameType.DATA, sid, b"x")] * 2000)
    assert accepted == 10 + IDLE_FRAME_ALLOWANCE + 3 * IDLE_FRAMES_PER_STREAM
    relay.consumed(sid, INITIAL_STREAM_WINDOW - 10)


def test_crossing_fin_ends_the_credit() -> None:
    relay, in_flight = reset_with_frames_in_flight(2)
    relay.receive(in_flight[0])
    assert relay.receive(raw(FrameType.DATA, 1, b"", FIN)) == []
    assert relay._reset_credit == {} and relay._idle_frames == 0
    relay.receive(in_flight[1])  # after the END: idle
    assert relay._idle_frames == 1


def test_crossing_frames_that_make_no_progress_are_idle() -> None:
    relay, _ = reset_with_frames_in_flight(0)
    relay.receive(raw(FrameType.DATA, 1))  # empty, no FIN
    relay.receive(raw(FrameType.WINDOW, 1, u32(1)))
    assert relay._idle_frames == 2 and relay._reset_credit == {1: INITIAL_STREAM_WINDOW}


def test_credit_spent_exactly_ends_it() -> None:
    relay, in_flight = reset_with_frames_in_flight(2, INITIAL_STREAM_WINDOW // 2)
    for message in in_flight:
        relay.receive(message)
    assert relay._reset_credit == {} and relay._idle_frames == 0


def test_the_peers_crossing_reset_ends_the_credit() -> None:
    relay, agent, sid = open_pair()
    agent.send_reset(sid, ErrorCode.TARGET_ERROR)
    relay.send_reset(sid, ErrorCode.CANCEL)
    assert sid in relay._reset_credit
    pump(agent, relay)
    assert relay._reset_credit == {}


def test_no_credit_is_kept_when_the_peers_half_was_done() -> None:
    relay, agent, sid = open_pair()
    agent.send_data(sid, OK, end_stream=True)
    pump(agent, relay)
    relay.consumed(sid, len(OK))
    relay.send_reset(sid, ErrorCode.CANCEL)
    assert relay._reset_credit == {}


def test_only_the_newest_resets_keep_their_credit() -> None:
    relay, agent = pair(max_streams=4)
    for _ in range(1025):
        sid = relay.open_stream(HTTP)
        relay.send_reset(sid, ErrorCode.CANCEL)
    assert len(relay._reset_credit) == 1024
    assert 1 not in relay._reset_credit and sid in relay._reset_credit
    del agent
