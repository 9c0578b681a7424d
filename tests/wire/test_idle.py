"""The idle-frame budget as a property: an honest session, however long, with many
streams, small frames, WINDOWs, resets and frames crossing them, never trips
ENHANCE_YOUR_CALM; a flood of frames that make no progress always does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.wire.helpers import WIRE, pair, raw, u32
from wire import (
    IDLE_FRAME_ALLOWANCE,
    IDLE_FRAMES_PER_STREAM,
    Connection,
    DataReceived,
    ErrorCode,
    FrameType,
    RemoteProtocolError,
    StreamKind,
    StreamOpened,
    StreamReset,
)
from wire.state import Half

STEPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["open", "relay", "agent", "trickle", "consume", "deliver", "reset", "end"]
        ),
        st.integers(0, 2**16),
        st.sampled_from([1, 7, 100, 1000, 16_384]),
    ),
    min_size=50,
    max_size=400,
)


class Honest:
    """A relay and an agent that only make legal moves, with messages in flight."""

    def __init__(self) -> None:
        self.relay, self.agent = pair(max_streams=16)
        self.conns = {"relay": self.relay, "agent": self.agent}
        self.wire: dict[str, list[bytes]] = {"relay": [], "agent": []}  # to this side
        self.held: dict[str, dict[int, int]] = {"relay": {}, "agent": {}}

    def flush(self, side: str) -> None:
        other = "agent" if side == "relay" else "relay"
        self.wire[other] += self.conns[side].data_to_send()

    def sending(self, side: str, pick: int) -> int | None:
        conn = self.conns[side]
        sids = sorted(s for s, st_ in conn._streams.items() if st_.sending is Half.BODY)
        return sids[pick % len(sids)] if sids else None

    def step(self, action: str, pick: int, size: int) -> None:
        side = "relay" if pick % 2 else "agent"
        conn = self.conns[side]
        if action == "open" and self.relay.can_open():
            first = bytes(min(size, self.relay.sendable(0)))
            self.relay.open_stream(StreamKind(1 + pick % 3), first, end_stream=pick % 5 == 0)
            self.flush("relay")
        elif action in ("relay", "agent"):
            sid = self.sending(action, pick)
            sender = self.conns[action]
            if sid is not None and (n := min(size, sender.sendable(sid))):
                sender.send_data(sid, bytes(n))  # honest: never an empty DATA without FIN
                self.flush(action)
        elif action == "trickle":
            # A chatty stream: many tiny frames at once, which a RESET may then cross.
            sid = self.sending(side, pick)
            for _ in range(min(size, 1200) if sid is not None else 0):
                if not conn.sendable(sid):  # type: ignore[arg-type]
                    break
                conn.send_data(sid, b"e")  # type: ignore[arg-type]
            self.flush(side)
        elif action == "end":
            sid = self.sending(side, pick)
            if sid is not None:
                close = side == "agent" and pick % 3 == 0
                conn.send_data(sid, b"", end_stream=True, close=close)
                self.flush(side)
        elif action == "reset":
            sids = sorted(conn._streams)
            if sids:
                conn.send_reset(sids[pick % len(sids)], ErrorCode.CANCEL)
                self.flush(side)
        elif action == "consume":
            self.consume(side, size)
        else:
            self.deliver(side, 1 + pick % 8)

    def consume(self, side: str, size: int) -> None:
        for sid, n in list(self.held[side].items()):
            take = min(n, size)
            self.conns[side].consumed(sid, take)
            self.held[side][sid] -= take
        self.flush(side)

    def deliver(self, side: str, count: int) -> None:
        queue, conn = self.wire[side], self.conns[side]
        for message in queue[:count]:
            for event in conn.receive(message):
                if isinstance(event, DataReceived | StreamOpened):
                    held = self.held[side]
                    held[event.stream_id] = held.get(event.stream_id, 0) + len(event.data)
                elif isinstance(event, StreamReset):
                    pass  # its held bytes are still consumed (dropped) later
        del queue[:count]
        self.flush(side)


@settings(WIRE, max_examples=max(WIRE.max_examples // 3, 1))
@given(STEPS, st.integers(1, 8))
def test_an_honest_session_never_trips_the_budget(
    steps: list[tuple[str, int, int]], rounds: int
) -> None:
    session = Honest()
    for _ in range(rounds):  # the same traffic again and again: a long session
        for action, pick, size in steps:
            session.step(action, pick, size)
        # Finish what is open, drain everything: streams come and go for hours.
        for side in ("relay", "agent"):
            for sid in sorted(session.conns[side]._streams):
                session.conns[side].send_reset(sid, ErrorCode.CANCEL)
            session.flush(side)
        for _ in range(3):
            for side in ("relay", "agent"):
                session.deliver(side, len(session.wire[side]))
                session.consume(side, 2**31)
    for conn in session.conns.values():
        assert conn._idle_frames <= IDLE_FRAME_ALLOWANCE + IDLE_FRAMES_PER_STREAM * conn._useful


def flood(conn: Connection, message: bytes) -> int:
    for count in range(1, 10 * IDLE_FRAME_ALLOWANCE):
        try:
            conn.receive(message)
        except RemoteProtocolError as exc:
            assert exc.code is ErrorCode.ENHANCE_YOUR_CALM
            return count
    raise AssertionError("a flood went on")


@WIRE
@given(
    st.integers(0, 40),
    st.sampled_from(["window0", "window", "empty", "closed-data", "closed-reset"]),
)
def test_a_flood_is_always_cut(streams: int, kind: str) -> None:
    relay, agent = pair(max_streams=64)
    for _ in range(streams):  # some honest history first: it earns allowance
        sid = relay.open_stream(StreamKind.HTTP, b"x", end_stream=True)
        agent.receive(relay.data_to_send()[0])
        agent.consumed(sid, 1)
        agent.send_reset(sid, ErrorCode.CANCEL)
        relay.receive(agent.data_to_send()[0])
    last = relay.open_stream(StreamKind.TCP)
    agent.receive(relay.data_to_send()[0])
    messages = {
        "window0": raw(FrameType.WINDOW, 0, u32(1)),
        "window": raw(FrameType.WINDOW, last, u32(1)),
        "empty": raw(FrameType.DATA, last),
        "closed-data": raw(FrameType.DATA, max(last - 2, 1), b"x"),
        "closed-reset": raw(FrameType.RESET, max(last - 2, 1), u32(6)),
    }
    target = agent if kind == "empty" else relay
    if kind.startswith("closed") and not streams:
        return
    cut = flood(target, messages[kind])
    assert cut <= IDLE_FRAME_ALLOWANCE + IDLE_FRAMES_PER_STREAM * target._useful + 1
