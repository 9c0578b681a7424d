"""Session resumption's bookkeeping (:mod:`wire.resume`), with no I/O.

The property: a relay and an agent exchange random streams (opens with first bytes,
data both ways, FINs, consumers that drain late), and the "connection" under them drops
at random moments, each direction's receiver having processed a random prefix of what
was in flight. After each drop both sides re-send from the count the other reports.
Whatever the interleaving of loss points, every stream's bytes arrive whole, once and in
order, and what a side keeps for re-sending stays within the session window.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.wire.helpers import NAME, WELCOME, WIRE
from wire import (
    INITIAL_SESSION_WINDOW,
    MAX_PAYLOAD,
    Connection,
    DataReceived,
    ErrorCode,
    FrameError,
    Hello,
    Role,
    StreamKind,
    StreamOpened,
    StreamReset,
    Welcome,
    WindowUpdated,
)
from wire.frames import decode_hello, decode_welcome, encode_hello, encode_welcome
from wire.resume import (
    ResendLog,
    ResumeError,
    ResumeOffer,
    ResumeTicket,
    stream_bytes,
)

Message = bytes | tuple[bytes, bytes]


class Side:
    """One end: its connection, its resend log, what it received and still holds."""

    def __init__(self, conn: Connection, rng: random.Random) -> None:
        self.conn = conn
        self.log = ResendLog()
        self.received = 0  # messages processed
        self.in_flight: list[Message] = []  # sent to the peer, not yet processed by it
        self.got: dict[int, bytearray] = defaultdict(bytearray)
        self.held: dict[int, int] = defaultdict(int)  # received, not consumed yet
        self.fin: set[int] = set()
        self.reset: set[int] = set()  # streams the peer reset
        self.rng = rng

    def flush(self) -> None:
        out = self.conn.messages_to_send()
        if out:
            self.log.record(out)
            self.in_flight.extend(out)

    def process(self, message: Message) -> None:
        self.received += 1
        for event in self.conn.receive(message):
            if isinstance(event, StreamOpened | DataReceived):
                sid = event.stream_id
                self.got[sid] += event.data
                self.held[sid] += len(event.data)
                if event.end_stream:
                    self.fin.add(sid)
            elif isinstance(event, StreamReset):
                self.reset.add(event.stream_id)
            elif isinstance(event, WindowUpdated) and event.stream_id == 0:
                self.log.ack(event.increment)
        self.flush()

    def consume(self, everything: bool = False) -> None:
        for sid, held in list(self.held.items()):
            n = held if everything else self.rng.randint(0, held)
            if n:
                self.held[sid] -= n
                self.conn.consumed(sid, n)
        self.flush()


def deliver(sender: Side, receiver: Side, count: int) -> None:
    for _ in range(min(count, len(sender.in_flight))):
        receiver.process(sender.in_flight.pop(0))


def drop_and_resume(a: Side, b: Side, rng: random.Random) -> None:
    """The connection dies: each receiver got a random prefix of what was in flight;
    the rest is gone. Then each side re-sends from the count the other reports."""
    for sender, receiver in ((a, b), (b, a)):
        deliver(sender, receiver, rng.randint(0, len(sender.in_flight)))
        lost = len(sender.in_flight)
        sender.in_flight = []
        replay = sender.log.replay(receiver.received)
        assert len(replay) == lost  # exactly what did not arrive
        sender.in_flight = replay


def payload(rng: random.Random, sid: int, size: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(min(size, 64))) * (size // 64 + 1)


def established(rng: random.Random) -> tuple[Side, Side]:
    relay, agent = Side(Connection(Role.RELAY), rng), Side(Connection(Role.AGENT), rng)
    agent.conn.send_hello(Hello(NAME, resume=ResumeTicket()))
    agent.flush()
    deliver(agent, relay, 1)
    relay.conn.send_welcome(Welcome(NAME, WELCOME.urls, 6, 1 << 20))
    relay.flush()
    deliver(relay, agent, 1)
    return relay, agent


def run_session(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    relay, agent = established(rng)
    sides = {"relay": relay, "agent": agent}
    sent: dict[tuple[str, int], bytearray] = defaultdict(bytearray)
    ended: set[tuple[str, int]] = set()
    streams: list[int] = []
    for _ in range(steps):
        action = rng.random()
        if action < 0.1 and relay.conn.can_open():
            first = payload(rng, 0, rng.randint(0, 2000))[: relay.conn.sendable(0)]
            sid = relay.conn.open_stream(StreamKind.HTTP, first)
            sent["relay", sid] += first
            streams.append(sid)
            relay.flush()
        elif action < 0.45 and streams:
            name = rng.choice(("relay", "agent"))
            side, sid = sides[name], rng.choice(streams)
            room = side.conn.sendable(sid)
            if room and (name, sid) not in ended:
                data = payload(rng, sid, rng.choice((1, 100, 5000, MAX_PAYLOAD)))[:room]
                fin = rng.random() < 0.1
                side.conn.send_data(sid, data, end_stream=fin)
                sent[name, sid] += data
                if fin:
                    ended.add((name, sid))
                side.flush()
        elif action < 0.75:
            sender, receiver = (relay, agent) if rng.random() < 0.5 else (agent, relay)
            deliver(sender, receiver, rng.randint(1, 8))
        elif action < 0.93:
            rng.choice((relay, agent)).consume()
        elif action < 0.95 and streams:
            side = rng.choice((relay, agent))
            sid = rng.choice(streams)
            if side.conn.is_open(sid):
                side.conn.send_reset(sid, ErrorCode.CANCEL, "a caller left")
                side.reset.add(sid)  # no more bytes either way: compare prefixes only
                side.flush()
        else:
            drop_and_resume(relay, agent, rng)
        for side in (relay, agent):
            assert side.log.kept_bytes <= INITIAL_SESSION_WINDOW
    # Quiesce: deliver and drain until nothing moves.
    while (
        relay.in_flight or agent.in_flight or any(relay.held.values()) or any(agent.held.values())
    ):
        deliver(relay, agent, len(relay.in_flight))
        deliver(agent, relay, len(agent.in_flight))
        relay.consume(everything=True)
        agent.consume(everything=True)
    for (name, sid), data in sent.items():
        receiver = agent if name == "relay" else relay
        if sid in relay.reset or sid in agent.reset:  # cut short: what came is a prefix
            assert data.startswith(receiver.got[sid]), f"stream {sid} from the {name} differs"
            continue
        assert receiver.got[sid] == data, f"stream {sid} from the {name} differs"
        assert ((name, sid) in ended) == (sid in receiver.fin)


@WIRE
@given(st.integers(0, 2**32 - 1))
def test_any_interleaving_of_loss_points_resumes_to_the_same_bytes(seed: int) -> None:
    run_session(seed, steps=120)


def test_a_long_session_with_many_drops() -> None:
    for seed in range(5):
        run_session(seed, steps=2000)


def test_acknowledged_messages_are_dropped_and_only_they() -> None:
    log = ResendLog()
    data = [b"\x05\x00\x00\x00\x00\x00\x00\x01" + b"x" * n for n in (10, 0, 20)]
    window = b"\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
    log.record([data[0], window, data[1], data[2]])
    assert log.kept == 4 and log.kept_bytes == 30
    log.ack(5)  # part of the first DATA was taken: it arrived, nothing after it is known
    assert log.kept == 3
    log.ack(5)  # all of it: the byte-less frames after it may still be in flight
    assert log.kept == 3
    log.ack(1)  # a byte of the third: the two byte-less frames before it arrived
    assert log.kept == 0
    assert log.replay(4) == []
    with pytest.raises(ResumeError):
        log.replay(3)  # the peer took bytes of message 4, so it processed 4
    with pytest.raises(ResumeError):
        log.replay(5)


def test_too_many_byteless_frames_make_the_session_unresumable() -> None:
    log = ResendLog(max_frames=3)
    window = b"\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
    log.record([window] * 3)
    assert log.can_replay(0)
    log.record([window])
    assert log.overflowed and not log.can_replay(4)
    with pytest.raises(ResumeError):
        log.replay(4)


def test_stream_bytes_counts_payloads_only() -> None:
    assert stream_bytes(b"\x03\x00\x00\x00\x00\x00\x00\x01\x01abc") == 3  # OPEN: kind byte
    assert stream_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x01abc") == 3
    assert stream_bytes((b"\x05\x00\x00\x00\x00\x00\x00\x01", b"x" * 99)) == 99
    assert stream_bytes(b"\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01") == 0


SESSION = "0123456789abcdef0123456789abcdef"
SECRET = "A" * 43


def test_hello_and_welcome_keys_round_trip() -> None:
    for ticket in (ResumeTicket(), ResumeTicket(SESSION, SECRET, 7)):
        hello = Hello(NAME, resume=ticket)
        assert decode_hello(encode_hello(hello)) == hello
    assert b"resume" not in encode_hello(Hello(NAME))  # left out: the bytes of before
    for offer in (ResumeOffer(SESSION, SECRET, 60), ResumeOffer(SESSION, "", 60, 12)):
        welcome = Welcome(NAME, WELCOME.urls, 8, 10, resume=offer)
        assert decode_welcome(encode_welcome(welcome)) == welcome


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name":"demo","resume":[]}',
        b'{"name":"demo","resume":{"session":"x","secret":"' + SECRET.encode() + b'"}}',
        b'{"name":"demo","resume":{"session":"' + SESSION.encode() + b'","secret":"short",'
        b'"received":1}}',
        b'{"name":"demo","resume":{"session":"'
        + SESSION.encode()
        + b'","secret":"'
        + SECRET.encode()
        + b'","received":-1}}',
    ],
)
def test_bad_hello_resume_is_a_frame_error(raw: bytes) -> None:
    with pytest.raises(FrameError, match="resume"):
        decode_hello(raw)


@pytest.mark.parametrize(
    "resume",
    [
        '{"session":"' + SESSION + '","grace":0,"secret":"' + SECRET + '"}',
        '{"session":"' + SESSION + '","grace":60}',  # neither secret nor received
        '{"session":"' + SESSION + '","grace":60,"secret":"' + SECRET + '","received":1}',
        '{"session":"' + SESSION + '","grace":60.5,"secret":"' + SECRET + '"}',
    ],
)
def test_bad_welcome_resume_is_a_frame_error(resume: str) -> None:
    raw = '{"name":"demo","urls":[],"max_streams":1,"max_request_body":0,"resume":' + resume
    with pytest.raises(FrameError, match="resume"):
        decode_welcome((raw + "}").encode())
