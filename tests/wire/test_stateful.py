"""A relay and an agent driven by hypothesis with random opens (with first bytes), data,
consumes, resets and partial deliveries (frames stay in flight), checking flow control
after each step:

* no side ever holds more than it granted (per stream and per session);
* credit is conserved: what the sender may still send, plus the DATA and WINDOW frames
  in flight, equals what the receiver has left to grant; once everything is delivered
  and drained, the sender's session credit is back to the initial window minus at most
  one batch the receiver has not granted yet.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.wire.helpers import GET, HTTP, STATEFUL, pair
from wire import (
    INITIAL_SESSION_WINDOW,
    MAX_PAYLOAD,
    DataReceived,
    ErrorCode,
    FrameType,
    StreamOpened,
)
from wire.frames import decode_frame, decode_window
from wire.state import Half

SIDES = st.sampled_from(["relay", "agent"])
PICK = st.integers(0, 2**16)
SIZES = st.sampled_from([0, 1, MAX_PAYLOAD]) | st.integers(0, MAX_PAYLOAD)


class TunnelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.relay, self.agent = pair(max_streams=4)
        self.conns = {"relay": self.relay, "agent": self.agent}
        self.wire: dict[str, list[bytes]] = {"relay": [], "agent": []}  # to this side
        self.held: dict[str, defaultdict[int, int]] = {
            "relay": defaultdict(int),
            "agent": defaultdict(int),
        }

    # -- helpers -------------------------------------------------------------------------

    def peer(self, side: str) -> str:
        return "agent" if side == "relay" else "relay"

    def flush(self, side: str) -> None:
        self.wire[self.peer(side)] += self.conns[side].data_to_send()

    def streams(self, side: str, sending: Half | None = None) -> list[int]:
        conn = self.conns[side]
        return sorted(
            sid for sid, s in conn._streams.items() if sending is None or s.sending is sending
        )

    # -- rules ---------------------------------------------------------------------------

    @precondition(lambda self: self.relay.can_open())
    @rule(fin=st.booleans(), size=SIZES)
    def open_stream(self, fin: bool, size: int) -> None:
        """OPEN with first bytes: they spend credit like DATA."""
        first = (GET * (size // len(GET) + 1))[: min(size, self.relay.sendable(0))]
        self.relay.open_stream(HTTP, first, end_stream=fin)
        self.flush("relay")

    @rule(side=SIDES, pick=PICK, size=SIZES, fin=st.booleans())
    def send_data(self, side: str, pick: int, size: int, fin: bool) -> None:
        candidates = self.streams(side, Half.BODY)
        if not candidates:
            return
        sid = candidates[pick % len(candidates)]
        conn = self.conns[side]
        conn.send_data(sid, bytes(min(size, conn.sendable(sid))), end_stream=fin)
        self.flush(side)

    @rule(side=SIDES, pick=PICK)
    def send_until_blocked(self, side: str, pick: int) -> None:
        """Use up a stream's credit (or the session's), as a fast sender does."""
        candidates = self.streams(side, Half.BODY)
        if not candidates:
            return
        sid = candidates[pick % len(candidates)]
        conn = self.conns[side]
        while n := conn.sendable(sid):
            conn.send_data(sid, bytes(n))
        self.flush(side)

    @rule(side=SIDES, pick=PICK, fraction=st.sampled_from([1, 1, 2, 3]))
    def consume(self, side: str, pick: int, fraction: int) -> None:
        held = self.held[side]
        candidates = sorted(sid for sid, n in held.items() if n)
        if not candidates:
            return
        sid = candidates[pick % len(candidates)]
        n = max(held[sid] // fraction, 1)
        self.conns[side].consumed(sid, n)
        held[sid] -= n
        self.flush(side)

    @rule(side=SIDES, pick=PICK, code=st.sampled_from([ErrorCode.CANCEL, ErrorCode.TARGET_ERROR]))
    def reset(self, side: str, pick: int, code: ErrorCode) -> None:
        candidates = self.streams(side)
        if candidates:
            self.conns[side].send_reset(candidates[pick % len(candidates)], code)
            self.flush(side)

    @rule(side=SIDES, count=st.sampled_from([1, 2, 1000]))
    def deliver(self, side: str, count: int) -> None:
        """Deliver up to ``count`` in-flight messages to ``side``."""
        queue, conn = self.wire[side], self.conns[side]
        for message in queue[:count]:
            for event in conn.receive(message):
                if isinstance(event, DataReceived | StreamOpened):
                    self.held[side][event.stream_id] += len(event.data)
        del queue[:count]
        self.flush(side)

    # -- invariants ----------------------------------------------------------------------

    def in_flight(self, to: str, ftype: FrameType, sid: int | None) -> int:
        """Bytes of DATA (and OPEN), or credit of WINDOW frames, travelling to ``to``."""
        total = 0
        for message in self.wire[to]:
            frame = decode_frame(message)
            if sid is not None and frame.stream_id != sid:
                continue
            if frame.type is FrameType.WINDOW and ftype is FrameType.WINDOW:
                total += decode_window(frame.payload)
            elif ftype is FrameType.DATA and frame.type in (FrameType.DATA, FrameType.OPEN):
                # An OPEN's first bytes (after the kind byte) are flow-controlled data too.
                total += len(frame.payload) - (frame.type is FrameType.OPEN)
        return total

    @invariant()
    def receivers_hold_no_more_than_they_granted(self) -> None:
        for side, conn in self.conns.items():
            session = conn._recv_session
            assert session.buffered == sum(self.held[side].values())
            assert 0 <= session.remaining
            assert session.remaining + session.buffered <= session.target == INITIAL_SESSION_WINDOW
            for stream in conn._streams.values():
                window = stream.recv_window
                assert 0 <= window.remaining and window.remaining + window.buffered <= window.target

    @invariant()
    def session_credit_is_conserved(self) -> None:
        for sender, receiver in (("relay", "agent"), ("agent", "relay")):
            available = self.conns[sender]._send_session.available
            data = self.in_flight(receiver, FrameType.DATA, None)
            grants = self.in_flight(sender, FrameType.WINDOW, 0)
            assert available + data + grants == self.conns[receiver]._recv_session.remaining

    @invariant()
    def stream_credit_is_conserved(self) -> None:
        for sender, receiver in (("relay", "agent"), ("agent", "relay")):
            s, r = self.conns[sender], self.conns[receiver]
            for sid in set(s._streams) & set(r._streams):
                available = s._streams[sid].send_window.available
                data = self.in_flight(receiver, FrameType.DATA, sid)
                grants = self.in_flight(sender, FrameType.WINDOW, sid)
                assert available + data + grants == r._streams[sid].recv_window.remaining

    def teardown(self) -> None:
        # Deliver everything and drain everything: no credit may have leaked.
        for _ in range(3):
            for side in ("relay", "agent"):
                self.deliver(side, len(self.wire[side]))
                for sid, n in list(self.held[side].items()):
                    if n:
                        self.conns[side].consumed(sid, n)
                        self.held[side][sid] = 0
                self.flush(side)
        for sender, receiver in (("relay", "agent"), ("agent", "relay")):
            s, r = self.conns[sender], self.conns[receiver]
            assert not self.wire[receiver]
            assert r._recv_session.buffered == 0
            assert s._send_session.available == r._recv_session.remaining
            assert r._recv_session.owed < INITIAL_SESSION_WINDOW // 4  # one batch at most


TunnelMachine.TestCase.settings = STATEFUL
test_tunnel_flow_control = TunnelMachine.TestCase


def test_model_notices_a_leak() -> None:
    """The conservation check is not vacuous: a receiver that drops credit fails it."""
    machine = TunnelMachine()
    machine.open_stream(fin=False, size=0)
    machine.deliver("agent", 8)
    machine.relay.send_data(1, b"abc")
    machine.flush("relay")
    machine.deliver("agent", 8)
    machine.agent._recv_session.remaining -= 1  # a bug: one byte of credit vanishes
    try:
        machine.session_credit_is_conserved()
    except AssertionError:
        return
    raise AssertionError("a lost byte of credit went unnoticed")
