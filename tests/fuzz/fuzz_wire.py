#!/usr/bin/env python3
"""Coverage-guided fuzzing of the tunnel protocol: the frame decoder and both Connections.

Run it with ``scripts/fuzz [SECONDS]`` (atheris, i.e. libFuzzer for Python). Each input
is read as a little program: which target to drive, then a sequence of steps. A step is
either a message for the Connection (raw bytes, or a frame assembled from fuzzed parts
so the fuzzer gets past the header checks and into the state machine quickly) or a legal
local move (open a stream with first bytes, send data within credit, with FIN or CLOSE,
consume, reset, GOAWAY, re-send HELLO), a "pour" that fills a stream's window and
drains it, or a flood of one message repeated past the idle-frame allowance.

What counts as a crash:

* anything but :class:`wire.RemoteProtocolError` escaping ``decode_frame``, the payload
  decoders or ``Connection.receive`` (a KeyError, a TypeError, an OverflowError...);
* any exception from a *legal* local move;
* a broken flow-control invariant: the connection holds more than it granted, a window
  over its limit, or a disagreement between what the consumer holds and what the
  connection thinks it holds.

``one_input`` needs no atheris, so ``tests/fuzz/test_fuzz_harness.py`` runs it in CI on
seeds and on every input that ever crashed it.
"""

from __future__ import annotations

import json
import struct
import sys

if __name__ == "__main__":  # instrument ``wire`` before anything imports it
    import atheris

    with atheris.instrument_imports(include=["wire"]):
        import wire

import wire
from wire import (
    IDLE_FRAME_ALLOWANCE,
    INITIAL_SESSION_WINDOW,
    MAX_PAYLOAD,
    MAX_STREAM_WINDOW,
    MAX_WINDOW,
    CallerCredential,
    Connection,
    DataReceived,
    ErrorCode,
    FrameType,
    Hello,
    RemoteProtocolError,
    Role,
    StreamKind,
    StreamOpened,
    Welcome,
)
from wire import frames as f
from wire.state import Half

_HEADER = struct.Struct("!BBHI")
_SHA = "0123456789abcdef" * 4
_FIRST = (b"", b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", b"\x16\x03\x01\x00\x05", b"SSH-2.0-x\r\n")
_NAMES = ("demo", "other", None, "", "x" * 300, 5)
_SCHEMES = ("bearer", "basic", "digest", 5)
_DIGESTS = (_SHA, _SHA.upper(), "x", 7)


class Input:
    """Reads fuzzer bytes as small integers and strings; zeros once exhausted."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def pick(self, n: int) -> int:
        return self.byte() % n

    def u32(self) -> int:
        return int.from_bytes(self.take(4).ljust(4, b"\0"), "big")

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk

    def text(self) -> str:
        return self.take(self.pick(24)).decode("latin-1")


# -- messages ---------------------------------------------------------------------------


def _json(inp: Input, obj: object) -> bytes:
    if inp.pick(16) == 0:
        return inp.take(inp.pick(64))  # not JSON at all
    return json.dumps(obj).encode()


def _payload(inp: Input, ftype: int) -> bytes:
    match ftype:
        case 1:
            auth = [_credential(inp) for _ in range(inp.pick(10))]
            name = _NAMES[inp.pick(len(_NAMES))]
            agent = inp.text() if inp.pick(8) else "x" * 201
            return _json(inp, {"name": name, "caller_auth": auth, "agent": agent})
        case 2:
            streams = (0, 1, 2, 1024, -1, "1")[inp.pick(6)]
            urls = (["u"], [], "u", [1])[inp.pick(4)]
            name = _NAMES[inp.pick(len(_NAMES))]
            obj = {"name": name, "urls": urls, "max_streams": streams, "max_request_body": 9}
            return _json(inp, obj)
        case 3:
            kind = inp.pick(5)  # 0 and 4 are not stream kinds
            if inp.pick(8) == 0:
                return b"" if inp.byte() & 1 else bytes((kind,)) + bytes(MAX_PAYLOAD)
            return bytes((kind,)) + _FIRST[inp.pick(len(_FIRST))] + inp.take(inp.pick(32))
        case 5:
            size = (0, 1, 100, 16384, MAX_PAYLOAD, MAX_PAYLOAD + 1)[inp.pick(6)]
            return bytes(size) if inp.byte() & 1 else inp.take(size)
        case 6 | 8:
            prefix = struct.pack("!I", inp.u32()) if ftype == 8 else b""
            reason = inp.take(inp.pick(8)) if inp.byte() else bytes(1025)
            return prefix + struct.pack("!I", inp.pick(16)) + reason
        case 7:
            choices = (1, 65536, 2**31 - 1, 2**31, 0, inp.u32())
            return struct.pack("!I", choices[inp.pick(len(choices))])
    return inp.take(inp.pick(32))


def _credential(inp: Input) -> object:
    if inp.pick(8) == 0:
        return "bearer"
    return {"scheme": _SCHEMES[inp.pick(4) // 3], "sha256": _DIGESTS[inp.pick(8) // 5]}


def _stream_id(inp: Input, conn: Connection) -> int:
    last = conn._last_stream_id
    open_ids = sorted(conn._streams) or [1]
    choices = (1, 3, last, last + 2, last + 1, 0, inp.u32(), max(last - 2, 1))
    if inp.pick(2):
        return open_ids[inp.pick(len(open_ids))]
    return choices[inp.pick(len(choices))]


def message(inp: Input, conn: Connection) -> bytes:
    """A raw message (1 in 8), or a frame with a fuzzed type, flags, stream id, payload."""
    if inp.pick(8) == 0:
        return inp.take(inp.pick(40))
    ftype = inp.pick(10)  # 0, 4 (v1's RESPONSE) and 9 are not frame types
    flags = inp.pick(4) if inp.pick(4) else inp.byte()
    reserved = 0 if inp.pick(16) else 1
    return _HEADER.pack(ftype, flags, reserved, _stream_id(inp, conn)) + _payload(inp, ftype)


def decode_everything(data: bytes) -> None:
    """The decoder and every payload decoder on raw bytes: only FrameError may escape;
    a message received in two parts (8-byte header, rest) decodes as the whole does."""
    try:
        frame = f.decode_frame(data)
    except RemoteProtocolError:
        frame = None
    if len(data) >= _HEADER.size:
        try:
            split: f.Frame | None = f.decode_split(data[: _HEADER.size], data[_HEADER.size :])
        except RemoteProtocolError:
            split = None
        if split != frame:
            raise AssertionError(f"decode_split gave {split!r}, decode_frame {frame!r}")
    if frame is None:
        return
    decoders = (
        f.decode_hello,
        f.decode_welcome,
        f.decode_open,
        f.decode_shared_open,
        f.decode_reset,
        f.decode_window,
        f.decode_goaway,
    )
    for decode in decoders:
        try:
            decode(frame.payload)
        except RemoteProtocolError:
            pass


# -- the session driver -----------------------------------------------------------------


class Driver:
    """One Connection, its honest local user, and the bookkeeping to check invariants."""

    def __init__(self, role: Role, inp: Input) -> None:
        self.conn = Connection(role)
        self.inp = inp
        self.held: dict[int, int] = {}  # stream id -> received bytes not yet consumed

    def handshake(self) -> None:
        """Make the session established the honest way, unless the input says not to."""
        if self.inp.pick(4) == 0:
            return
        peer = Connection(Role.AGENT if self.conn.role is Role.RELAY else Role.RELAY)
        if self.conn.role is Role.RELAY:
            peer.send_hello(Hello("demo"))
            self.receive_all(peer.data_to_send())
            self.conn.send_welcome(Welcome("demo", ("u",), 1 + self.inp.pick(8), 10))
        else:
            self.conn.send_hello(Hello("demo"))
            peer.receive(self.conn.data_to_send()[0])
            peer.send_welcome(Welcome("demo", ("u",), 1 + self.inp.pick(8), 10))
            self.receive_all(peer.data_to_send())
        self.conn.data_to_send()

    def receive_all(self, messages: list[bytes]) -> None:
        for m in messages:
            self.receive(m)

    def receive(self, data: bytes) -> None:
        # Odd-sized messages go in as (header, rest), as the link passes bulk frames.
        message: wire.Message = data
        if len(data) % 2 and len(data) >= _HEADER.size:
            message = (data[: _HEADER.size], data[_HEADER.size :])
        for event in self.conn.receive(message):
            if isinstance(event, DataReceived | StreamOpened) and event.data:
                self.held[event.stream_id] = self.held.get(event.stream_id, 0) + len(event.data)

    def step(self) -> bool:
        """One step; False once the session is over."""
        action = self.inp.pick(13)
        try:
            if action < 7:
                self.receive(message(self.inp, self.conn))
            elif action == 12:
                self.pour() if self.inp.pick(4) else self.flood()
            else:
                self.local_move(action)
        except RemoteProtocolError:
            return False
        self.conn.data_to_send()
        self.check()
        return True

    def local_move(self, action: int) -> None:
        conn, inp = self.conn, self.inp
        sid = sorted(conn._streams)[inp.pick(len(conn._streams))] if conn._streams else 0
        if action == 7 and self.held:
            held_sid = sorted(self.held)[inp.pick(len(self.held))]
            n = min(self.held[held_sid], 1 + inp.u32() % (2 * MAX_PAYLOAD))
            conn.consumed(held_sid, n)
            self.held[held_sid] -= n
            if not self.held[held_sid]:
                del self.held[held_sid]
        elif action == 8 and conn.can_open():
            kind = StreamKind(1 + inp.pick(3))
            first = _FIRST[inp.pick(len(_FIRST))] + bytes(inp.u32() % (MAX_PAYLOAD + 1))
            conn.open_stream(kind, first[: conn.sendable(0)], bool(inp.pick(2)))
        elif action == 9 and sid:
            self.send_on(sid)
        elif action == 10 and sid:
            conn.send_reset(sid, ErrorCode(inp.pick(len(ErrorCode))), inp.text())
        elif action == 11:
            self.session_move()

    def pour(self) -> None:
        """The peer fills a stream's window with full DATA frames, and we drain it all:
        the quick way to window growth and session grants."""
        conn = self.conn
        if not conn._streams:
            return
        sid = sorted(conn._streams)[self.inp.pick(len(conn._streams))]
        for _ in range(1 + self.inp.pick(16)):
            stream = conn._streams.get(sid)
            if stream is None or stream.receiving is not Half.BODY:
                return
            size = min(MAX_PAYLOAD, stream.recv_window.remaining, conn._recv_session.remaining)
            self.receive(_HEADER.pack(FrameType.DATA, 0, 0, sid) + bytes(size))
            conn.consumed(sid, self.held.pop(sid, 0))

    def flood(self) -> None:
        """The same message many times over: frames that make no progress must end the
        session with ENHANCE_YOUR_CALM after a bounded number, and nothing else."""
        repeated = message(self.inp, self.conn)
        for _ in range(IDLE_FRAME_ALLOWANCE + 64 * (1 + self.inp.pick(8))):
            self.receive(repeated)

    def send_on(self, sid: int) -> None:
        conn, inp = self.conn, self.inp
        if conn._streams[sid].sending is Half.BODY:
            n = min(conn.sendable(sid), inp.u32() % (MAX_PAYLOAD + 1))
            fin = bool(inp.pick(2))
            close = fin and conn.role is Role.AGENT and bool(inp.pick(2))
            conn.send_data(sid, bytes(n), fin, close)

    def session_move(self) -> None:
        conn = self.conn
        if self.inp.pick(2):
            conn.send_goaway(ErrorCode(self.inp.pick(3)), self.inp.text())
        elif conn.role is Role.AGENT and conn.established:
            auth = (CallerCredential("basic", _SHA),) * self.inp.pick(3)
            conn.send_hello(Hello("demo", auth))

    def check(self) -> None:
        """Flow-control invariants that must hold after every step."""
        conn = self.conn
        session = conn._recv_session
        assert session.buffered == sum(self.held.values()), "held bytes disagree"
        assert 0 <= session.remaining and session.remaining + session.buffered <= session.target
        assert session.target == INITIAL_SESSION_WINDOW
        assert conn._send_session.available <= MAX_WINDOW
        assert conn.open_streams <= conn.max_streams
        for stream in conn._streams.values():
            recv = stream.recv_window
            assert 0 <= recv.remaining and recv.remaining + recv.buffered <= recv.target
            assert recv.target <= MAX_STREAM_WINDOW
            assert 0 <= stream.send_window.available <= MAX_WINDOW


def one_input(data: bytes) -> None:
    inp = Input(data)
    target = inp.pick(3)
    if target == 0:
        decode_everything(inp.take(len(data)))
        return
    driver = Driver(Role.RELAY if target == 1 else Role.AGENT, inp)
    try:
        driver.handshake()
    except RemoteProtocolError:
        return
    while not inp.done:
        if not driver.step():
            return  # the session is over; its state no longer matters
    # Events for reset streams still get consumed: the session window must come back.
    for sid, n in list(driver.held.items()):
        driver.conn.consumed(sid, n)
        del driver.held[sid]
    driver.check()


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
