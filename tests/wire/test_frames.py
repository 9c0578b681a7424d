"""The frame codec: byte literals for the header rules, and hypothesis properties."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.wire import strategies as s
from tests.wire.helpers import WIRE, raw, u32
from wire import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    MAX_PAYLOAD,
    ErrorCode,
    Flag,
    FrameError,
    FrameType,
    RemoteProtocolError,
    StreamKind,
)
from wire import frames as f
from wire.frames import Frame, decode_frame, encode_frame, encode_parts


def test_header_layout() -> None:
    frame = Frame(FrameType.DATA, 0x01020304, b"body", Flag.FIN)
    assert encode_frame(frame) == bytes.fromhex("05 01 0000 01020304") + b"body"
    assert encode_parts(FrameType.DATA, 0x01020304, b"body", Flag.FIN) == encode_frame(frame)
    assert decode_frame(encode_frame(frame)) == frame
    assert frame.fin and not frame.close and not Frame(FrameType.DATA, 1).fin
    closing = Frame(FrameType.DATA, 1, b"", Flag.FIN | Flag.CLOSE)
    assert encode_frame(closing) == bytes.fromhex("05 03 0000 00000001")
    assert decode_frame(encode_frame(closing)) == closing and closing.close and closing.fin
    assert HEADER_SIZE == 8 and MAX_FRAME_SIZE == HEADER_SIZE + MAX_PAYLOAD


@pytest.mark.parametrize("message", [b"", b"\x05", bytes.fromhex("05 00 0000 000000")])
def test_short_messages(message: bytes) -> None:
    with pytest.raises(FrameError, match="shorter than the header"):
        decode_frame(message)


@pytest.mark.parametrize("ftype", [0x00, 0x04, 0x09, 0x7F, 0xFF])
def test_unknown_frame_types(ftype: int) -> None:
    with pytest.raises(FrameError, match="unknown frame type"):
        decode_frame(raw(ftype, 1))


def test_reserved_bits_must_be_zero() -> None:
    with pytest.raises(FrameError, match="reserved"):
        decode_frame(bytes.fromhex("05 00 0001 00000001"))
    with pytest.raises(FrameError, match="reserved"):
        decode_frame(bytes.fromhex("05 00 8000 00000001"))


@pytest.mark.parametrize("ftype", list(FrameType))
@pytest.mark.parametrize("flags", [0x01, 0x02, 0x03, 0x04, 0x80, 0xFF])
def test_flags_each_type_allows(ftype: FrameType, flags: int) -> None:
    sid = 0 if ftype in (FrameType.HELLO, FrameType.WELCOME, FrameType.GOAWAY) else 1
    allowed = (ftype is FrameType.OPEN and flags == 0x01) or (
        ftype is FrameType.DATA and flags in (0x01, 0x03)
    )
    if allowed:
        frame = decode_frame(raw(ftype, sid, b"\x01", flags))
        assert frame.fin and frame.close is (flags == 0x03)
    else:
        with pytest.raises(FrameError, match="flags"):
            decode_frame(raw(ftype, sid, b"\x01", flags))


def test_close_only_with_fin_and_only_on_data() -> None:
    assert decode_frame(bytes.fromhex("05 03 0000 00000001")).close
    with pytest.raises(FrameError, match="flags 0x02 not allowed on DATA"):
        decode_frame(bytes.fromhex("05 02 0000 00000001"))
    with pytest.raises(FrameError, match="flags 0x03 not allowed on OPEN"):
        decode_frame(bytes.fromhex("03 03 0000 00000001 01"))


def test_type_0x04_was_response_and_is_gone() -> None:
    assert 0x04 not in set(FrameType)
    with pytest.raises(FrameError, match="unknown frame type 0x04"):
        decode_frame(bytes.fromhex("04 00 0000 00000001") + b"{}")


@pytest.mark.parametrize("ftype", [FrameType.HELLO, FrameType.WELCOME, FrameType.GOAWAY])
def test_session_frames_need_stream_zero(ftype: FrameType) -> None:
    with pytest.raises(FrameError, match="stream 0"):
        decode_frame(raw(ftype, 1))


@pytest.mark.parametrize("ftype", [FrameType.OPEN, FrameType.DATA, FrameType.RESET])
def test_stream_frames_need_a_stream_id(ftype: FrameType) -> None:
    with pytest.raises(FrameError, match="needs a stream id"):
        decode_frame(raw(ftype, 0))


def test_window_takes_any_stream_id() -> None:
    assert decode_frame(raw(FrameType.WINDOW, 0, u32(1))).stream_id == 0
    assert decode_frame(raw(FrameType.WINDOW, 2**32 - 1, u32(1))).stream_id == 2**32 - 1


def test_payload_limit() -> None:
    assert len(decode_frame(raw(FrameType.DATA, 1, bytes(MAX_PAYLOAD))).payload) == MAX_PAYLOAD
    with pytest.raises(FrameError, match="payload over"):
        decode_frame(raw(FrameType.DATA, 1, bytes(MAX_PAYLOAD + 1)))


def test_binary_message_types() -> None:
    message = raw(FrameType.DATA, 1, b"abc")
    expected = Frame(FrameType.DATA, 1, b"abc")
    assert decode_frame(bytearray(message)) == expected  # type: ignore[arg-type]
    assert decode_frame(memoryview(message)) == expected  # type: ignore[arg-type]
    assert type(decode_frame(memoryview(message)).payload) is bytes  # type: ignore[arg-type]
    with pytest.raises(FrameError, match="binary message"):
        decode_frame(message.decode("latin-1"))  # type: ignore[arg-type]


def test_unknown_error_codes_read_as_internal_error() -> None:
    assert f.decode_reset(u32(0xFFFF) + b"why") == (ErrorCode.INTERNAL_ERROR, "why")
    assert f.decode_reset(u32(0) + b"\xff") == (ErrorCode.NO_ERROR, "\ufffd")


# -- properties ----------------------------------------------------------------------------


@WIRE
@given(s.frames())
def test_decode_inverts_encode_for_every_frame_kind(frame: Frame) -> None:
    message = encode_frame(frame)
    assert decode_frame(message) == frame
    assert encode_parts(frame.type, frame.stream_id, frame.payload, frame.flags) == message


HEADERISH = st.builds(
    struct.Struct("!BBHI").pack,
    st.integers(0, 10),
    st.sampled_from([0, 1, 2, 255]),
    st.sampled_from([0, 0, 0, 1]),
    st.sampled_from([0, 1, 2**32 - 1]) | st.integers(0, 2**32 - 1),
)
MESSAGES = st.binary(max_size=200) | st.builds(bytes.__add__, HEADERISH, st.binary(max_size=200))


@WIRE
@given(MESSAGES)
def test_decoder_returns_a_frame_or_raises_frame_error(message: bytes) -> None:
    try:
        frame = decode_frame(message)
    except FrameError:
        return
    assert encode_frame(frame) == message


@WIRE
@given(st.sampled_from(FrameType), st.binary(max_size=300))
def test_payload_decoders_raise_only_protocol_errors(ftype: FrameType, payload: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(payload)
        except RemoteProtocolError:
            pass


@WIRE
@given(s.JSON)
def test_json_decoders_raise_only_frame_errors(value: object) -> None:
    payload = json.dumps(value).encode()
    for decode in (f.decode_hello, f.decode_welcome):
        try:
            decode(payload)
        except FrameError:
            pass


DECODERS = (
    f.decode_hello,
    f.decode_welcome,
    f.decode_open,
    f.decode_reset,
    f.decode_goaway,
    f.decode_window,
)


@WIRE
@given(s.KINDS, s.FIRST_BYTES)
def test_open_payloads_round_trip(kind: StreamKind, data: bytes) -> None:
    payload = f.encode_open(kind, data)
    assert payload[0] == kind and payload[1:] == data
    assert f.decode_open(payload) == (kind, data)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x01", (StreamKind.HTTP, b"")),
        (b"\x01GET / HTTP/1.1\r\n\r\n", (StreamKind.HTTP, b"GET / HTTP/1.1\r\n\r\n")),
        (b"\x02\x00\xff", (StreamKind.TCP, b"\x00\xff")),
        (b"\x03\x16\x03\x01", (StreamKind.TLS, b"\x16\x03\x01")),
    ],
)
def test_open_payload_literals(payload: bytes, expected: tuple[StreamKind, bytes]) -> None:
    assert f.decode_open(payload) == expected
    assert f.encode_open(*expected) == payload


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "without a stream kind"),
        (b"\x00", "kind 0"),
        (b"\x04x", "kind 4"),
        (b"\xff", "kind 255"),
    ],
)
def test_open_payload_needs_a_known_kind(payload: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match) as info:
        f.decode_open(payload)
    assert info.value.code is ErrorCode.FRAME_ERROR


def test_stream_kinds_are_the_documented_bytes() -> None:
    assert {k.name: int(k) for k in StreamKind} == {"HTTP": 1, "TCP": 2, "TLS": 3}


@WIRE
@given(s.HELLOS)
def test_hello_round_trips(hello: f.Hello) -> None:
    assert f.decode_hello(f.checked_hello(hello)) == hello


@WIRE
@given(s.WELCOMES)
def test_welcome_round_trips(welcome: f.Welcome) -> None:
    assert f.decode_welcome(f.checked_welcome(welcome)) == welcome


@WIRE
@given(s.CODES, s.REASONS)
def test_reset_round_trips(code: ErrorCode, reason: str) -> None:
    assert f.decode_reset(f.encode_reason(code, reason)) == (code, reason)


@WIRE
@given(st.integers(0, 2**32 - 1), s.CODES, s.REASONS)
def test_goaway_round_trips(last: int, code: ErrorCode, reason: str) -> None:
    assert f.decode_goaway(f.encode_goaway(last, code, reason)) == (last, code, reason)


@WIRE
@given(s.INCREMENTS)
def test_window_round_trips(increment: int) -> None:
    assert f.decode_window(f.encode_window(increment)) == increment


def test_payload_codecs_emit_compact_ascii_json() -> None:
    hello = f.Hello("d\u00e9mo", (), "x")
    assert f.encode_hello(hello) == rb'{"name":"d\u00e9mo","caller_auth":[],"agent":"x"}'
    assert struct.unpack("!I", f.encode_window(7)) == (7,)


def test_session_payloads_ignore_unknown_keys() -> None:
    """A later revision may add keys (session resumption did); receivers ignore them."""
    hello = b'{"name":"demo","future":{"session":"abc","acked":{"1":5}},"agent":"a"}'
    assert f.decode_hello(hello) == f.Hello("demo", (), "a")
    welcome = b'{"name":"d","urls":[],"max_streams":1,"max_request_body":0,"future":"s"}'
    assert f.decode_welcome(welcome) == f.Welcome("d", (), 1, 0)


def test_welcome_replaced_is_sent_only_when_set() -> None:
    plain = f.Welcome("d", ("u",), 1, 0)
    assert (
        f.encode_welcome(plain) == b'{"name":"d","urls":["u"],"max_streams":1,"max_request_body":0}'
    )
    took = f.Welcome("d", ("u",), 1, 0, "192.0.2.7")
    assert f.encode_welcome(took).endswith(b',"replaced":"192.0.2.7"}')
    assert f.decode_welcome(f.checked_welcome(took)) == took
    with pytest.raises(FrameError, match="replaced"):
        f.checked_welcome(f.Welcome("d", ("u",), 1, 0, "x" * 201))


def test_session_payload_size_cap() -> None:
    with pytest.raises(FrameError, match="over"):
        f.decode_hello(b" " * (64 * 1024 + 1))


@given(s.frames())
def test_a_frame_received_in_two_parts_decodes_as_the_whole(frame: Frame) -> None:
    message = encode_frame(frame)
    head, rest = message[:HEADER_SIZE], message[HEADER_SIZE:]
    assert f.decode_split(head, rest) == decode_frame(message)


def test_a_split_frame_is_checked_like_a_whole_one() -> None:
    with pytest.raises(FrameError, match="header must be 8 bytes"):
        f.decode_split(b"\x02\x00\x00", b"x" * 20)
    with pytest.raises(FrameError, match="payload over"):
        f.decode_split(raw(FrameType.DATA, 1)[:HEADER_SIZE], b"x" * (MAX_PAYLOAD + 1))
    with pytest.raises(FrameError, match="unknown frame type"):
        f.decode_split(b"\x7f" + bytes(7), b"x")
