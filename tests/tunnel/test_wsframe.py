"""tunnel.wsframe: the RFC 6455 frame codec of an open tunnel link, sans I/O.

No event loop here. What ours encodes must parse in websockets' own ``Protocol`` and
the other way round; every refusal comes with the close code the RFC names.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side

from tunnel import wsframe
from tunnel.wsframe import (
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Masks,
    Parser,
    WsError,
)

MAX = 1 << 20
LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 256 * 1024]


def payload(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def frame(
    opcode: int,
    data: bytes,
    *,
    fin: bool = True,
    mask: bytes | None = None,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """A frame built by hand (any bits, any declared length)."""
    n = len(data) if length is None else length
    b0 = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((b0, bit | n))
    elif n < 65536:
        head = bytes((b0, bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, bit | 127)) + struct.pack("!Q", n)
    if mask is None:
        return head + data
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return head + mask + masked


def refused(parser: Parser, data: bytes) -> WsError:
    with pytest.raises(WsError) as info:
        parser.feed(data)
    return info.value


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("masked", [False, True])
def test_round_trip_every_length_class(n: int, masked: bool) -> None:
    data = payload(n)
    encoded = wsframe.encode(OP_BINARY, data, Masks() if masked else None)
    extra = (0 if n < 126 else 2 if n < 65536 else 8) + (4 if masked else 0)
    assert len(encoded) == 2 + extra + n
    assert encoded[1] & 0x80 == (0x80 if masked else 0)
    parser = Parser(MAX, masked=masked)
    assert parser.feed(encoded) == [(OP_BINARY, data)]
    # And a byte at a time for the header, then the rest.
    parser = Parser(MAX, masked=masked)
    out: list[tuple[int, bytes]] = []
    for i in range(min(len(encoded), 16)):
        out += parser.feed(encoded[i : i + 1])
    out += parser.feed(encoded[16:])
    assert out == [(OP_BINARY, data)]


def test_header_of_each_length_class() -> None:
    assert wsframe.header(OP_BINARY, 125, None) == b"\x82\x7d"
    assert wsframe.header(OP_BINARY, 126, None) == b"\x82\x7e\x00\x7e"
    assert wsframe.header(OP_BINARY, 65535, None) == b"\x82\x7e\xff\xff"
    assert wsframe.header(OP_BINARY, 65536, None) == b"\x82\x7f" + struct.pack("!Q", 65536)
    assert wsframe.header(OP_PING, 0, b"abcd") == b"\x89\x80abcd"


def test_several_messages_in_one_feed_and_buffered_rest() -> None:
    masks = Masks()
    stream = b"".join(wsframe.encode(OP_BINARY, payload(n), masks) for n in LENGTHS)
    parser = Parser(MAX, masked=True)
    cut = len(stream) - 7
    first = parser.feed(stream[:cut])
    assert [p for _, p in first] == [payload(n) for n in LENGTHS[:-1]]
    assert parser.feed(stream[cut:]) == [(OP_BINARY, payload(LENGTHS[-1]))]
    assert parser.feed(b"") == []


def test_a_limit_parses_that_many_frames_and_keeps_the_rest() -> None:
    masks = Masks()
    stream = b"".join(wsframe.encode(OP_BINARY, bytes([i]), masks) for i in range(10))
    parser = Parser(MAX, masked=True)
    assert [p for _, p in parser.feed(stream[:-1], 4)] == [bytes([i]) for i in range(4)]
    assert parser.more
    assert [p for _, p in parser.feed(b"", 4)] == [bytes([i]) for i in range(4, 8)]
    assert parser.more
    # The last frame is not complete yet: nothing more to parse until bytes arrive.
    assert [p for _, p in parser.feed(b"", 4)] == [bytes([8])]
    assert not parser.more
    assert parser.feed(stream[-1:], 4) == [(OP_BINARY, bytes([9]))]
    assert not parser.more


# -- interop with websockets' sans-I/O Protocol ---------------------------------------------


@pytest.mark.parametrize("n", LENGTHS)
def test_websockets_parses_what_we_encode(n: int) -> None:
    data = payload(n)
    # Ours as a client (masked) to their server, ours as a server to their client.
    for ours_client, their_side in ((True, Side.SERVER), (False, Side.CLIENT)):
        theirs = Protocol(their_side, max_size=MAX)
        masks = Masks() if ours_client else None
        theirs.receive_data(
            wsframe.encode(OP_BINARY, data, masks)
            + wsframe.encode(OP_TEXT, b"text", masks)
            + wsframe.encode(OP_PING, b"hi", masks)
            + wsframe.encode(OP_CLOSE, wsframe.close_payload(1001, "bye"), masks)
        )
        events = theirs.events_received()
        assert [(e.opcode, bytes(e.data)) for e in events[:3]] == [
            (Opcode.BINARY, data),
            (Opcode.TEXT, b"text"),
            (Opcode.PING, b"hi"),
        ]
        assert events[3].opcode is Opcode.CLOSE
        assert theirs.close_rcvd is not None
        assert (theirs.close_rcvd.code, theirs.close_rcvd.reason) == (1001, "bye")


@pytest.mark.parametrize("n", LENGTHS)
def test_a_frame_encoded_in_two_parts_is_one_message_to_websockets(n: int) -> None:
    head, body = b"8 bytes!", payload(n)
    for ours_client, their_side in ((True, Side.SERVER), (False, Side.CLIENT)):
        theirs = Protocol(their_side, max_size=MAX)
        masks = Masks() if ours_client else None
        theirs.receive_data(b"".join(wsframe.encode_split(OP_BINARY, head, body, masks)))
        [event] = theirs.events_received()
        assert (event.opcode, bytes(event.data)) == (Opcode.BINARY, head + body)


@pytest.mark.parametrize("n", LENGTHS)
def test_we_parse_what_websockets_sends(n: int) -> None:
    data = payload(n)
    for their_side, we_expect_mask in ((Side.CLIENT, True), (Side.SERVER, False)):
        theirs = Protocol(their_side, max_size=MAX)
        theirs.send_binary(data)
        theirs.send_text(b"text")
        theirs.send_ping(b"ping")
        theirs.send_binary(b"frag-", fin=False)
        theirs.send_continuation(b"mented", fin=True)
        theirs.send_close(1000, "done")
        parser = Parser(MAX, masked=we_expect_mask)
        out = parser.feed(b"".join(theirs.data_to_send()))
        assert out == [
            (OP_BINARY, data),
            (OP_TEXT, b"text"),
            (OP_PING, b"ping"),
            (OP_BINARY, b"frag-mented"),
            (OP_CLOSE, wsframe.close_payload(1000, "done")),
        ]


# -- fragmentation -------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
def test_fragmented_message_reassembled(masked: bool) -> None:
    mask = b"\x01\x02\x03\x04" if masked else None
    data = (
        frame(OP_BINARY, b"one ", fin=False, mask=mask)
        + frame(OP_CONTINUATION, b"two ", fin=False, mask=mask)
        + frame(OP_CONTINUATION, b"", fin=False, mask=mask)
        + frame(OP_CONTINUATION, b"three", fin=True, mask=mask)
    )
    parser = Parser(MAX, masked=masked)
    assert parser.feed(data) == [(OP_BINARY, b"one two three")]
    # The parser is ready for the next message afterwards.
    assert parser.feed(frame(OP_TEXT, b"next", mask=mask)) == [(OP_TEXT, b"next")]


def test_control_frames_interleaved_in_a_fragmented_message() -> None:
    data = (
        frame(OP_BINARY, b"a", fin=False)
        + frame(OP_PING, b"p1")
        + frame(OP_CONTINUATION, b"b", fin=False)
        + frame(OP_PONG, b"p2")
        + frame(OP_CONTINUATION, b"c", fin=True)
    )
    assert Parser(MAX, masked=False).feed(data) == [
        (OP_PING, b"p1"),
        (OP_PONG, b"p2"),
        (OP_BINARY, b"abc"),
    ]


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
def test_rsv_bits_refused(rsv: int) -> None:
    error = refused(Parser(MAX, masked=False), frame(OP_BINARY, b"x", rsv=rsv))
    assert error.code == CLOSE_PROTOCOL_ERROR


def test_wrong_masking_for_the_side_refused() -> None:
    # A server must get masked frames, a client unmasked ones.
    assert refused(Parser(MAX, masked=True), frame(OP_BINARY, b"x")).code == 1002
    error = refused(Parser(MAX, masked=False), frame(OP_BINARY, b"x", mask=b"abcd"))
    assert error.code == CLOSE_PROTOCOL_ERROR


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_control_frame_too_long_or_fragmented_refused(opcode: int) -> None:
    assert refused(Parser(MAX, masked=False), frame(opcode, b"x" * 126)).code == 1002
    error = refused(Parser(MAX, masked=False), frame(opcode, b"x", fin=False))
    assert error.code == CLOSE_PROTOCOL_ERROR
    assert Parser(MAX, masked=False).feed(frame(opcode, b"x" * 125)) == [(opcode, b"x" * 125)]


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcode_refused(opcode: int) -> None:
    error = refused(Parser(MAX, masked=False), frame(opcode, b"x"))
    assert error.code == CLOSE_PROTOCOL_ERROR


def test_continuation_without_start_refused() -> None:
    error = refused(Parser(MAX, masked=False), frame(OP_CONTINUATION, b"x"))
    assert error.code == CLOSE_PROTOCOL_ERROR


def test_new_message_inside_a_fragmented_one_refused() -> None:
    parser = Parser(MAX, masked=False)
    assert parser.feed(frame(OP_BINARY, b"a", fin=False)) == []
    error = refused(parser, frame(OP_TEXT, b"b"))
    assert error.code == CLOSE_PROTOCOL_ERROR


def test_message_over_max_size_refused_before_the_payload_is_buffered() -> None:
    # Only the header claiming 1 GiB: refused at once, nothing waits for the payload.
    error = refused(Parser(1000, masked=False), frame(OP_BINARY, b"", length=1 << 30))
    assert error.code == CLOSE_TOO_BIG
    # Exactly the limit is fine, one more is not.
    assert Parser(1000, masked=False).feed(frame(OP_BINARY, b"x" * 1000)) == [
        (OP_BINARY, b"x" * 1000)
    ]
    assert refused(Parser(1000, masked=False), frame(OP_BINARY, b"x" * 1001)).code == 1009


def test_fragmented_message_over_max_size_refused_at_the_fragment_that_crosses() -> None:
    parser = Parser(1000, masked=False)
    assert parser.feed(frame(OP_BINARY, b"x" * 600, fin=False)) == []
    assert parser.feed(frame(OP_CONTINUATION, b"x" * 400, fin=False)) == []
    error = refused(parser, frame(OP_CONTINUATION, b"", fin=True, length=1))
    assert error.code == CLOSE_TOO_BIG


def test_a_refused_frame_after_good_ones_refuses_the_whole_feed() -> None:
    parser = Parser(MAX, masked=False)
    error = refused(parser, frame(OP_BINARY, b"ok") + frame(OP_BINARY, b"x", rsv=0x40))
    assert error.code == CLOSE_PROTOCOL_ERROR


# -- any split gives the same messages -----------------------------------------------------

_message = st.tuples(
    st.sampled_from([OP_BINARY, OP_TEXT, OP_PING, OP_PONG]),
    st.binary(max_size=300),
    st.integers(min_value=1, max_value=3),  # fragments of a data message
)


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(_message, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
    masked=st.booleans(),
)
def test_any_split_of_the_byte_stream_gives_the_same_messages(
    messages: list[tuple[int, bytes, int]], cuts: list[int], masked: bool
) -> None:
    mask = b"\x9a\x0b\xfc\x11" if masked else None
    stream = b""
    expected: list[tuple[int, bytes]] = []
    for opcode, data, parts in messages:
        if opcode in (OP_PING, OP_PONG):
            data = data[:125]
            stream += frame(opcode, data, mask=mask)
        else:
            size = -(-len(data) // parts) if data else 0
            pieces = [data[i * size : (i + 1) * size] for i in range(parts)] if size else []
            pieces = pieces or [b""]
            for i, piece in enumerate(pieces):
                op = opcode if i == 0 else OP_CONTINUATION
                stream += frame(op, piece, fin=i == len(pieces) - 1, mask=mask)
        expected.append((opcode, data))
    whole = Parser(MAX, masked=masked).feed(stream)
    assert whole == expected
    parser = Parser(MAX, masked=masked)
    out: list[tuple[int, bytes]] = []
    last = 0
    for cut in [*sorted(c for c in cuts if c <= len(stream)), len(stream)]:
        out += parser.feed(stream[last:cut])
        last = cut
    assert out == expected


# -- masks and close payloads --------------------------------------------------------------


def test_masks_are_4_byte_keys_that_never_repeat_within_a_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    urandom = os.urandom

    def counting_urandom(n: int) -> bytes:
        calls.append(n)
        return urandom(n)

    monkeypatch.setattr(wsframe.os, "urandom", counting_urandom)
    masks = Masks()
    pool = wsframe._MASK_POOL // 4
    keys = [masks.next() for _ in range(pool)]
    assert all(len(k) == 4 for k in keys)
    assert len(calls) == 1  # one fetch for the whole pool
    # Consecutive keys are consecutive, non-overlapping slices of one fetch: no key is
    # handed out twice, and a new pool is fetched only when this one is used up.
    assert masks._pool == b"".join(keys)
    assert len(calls) == 1
    masks.next()
    assert len(calls) == 2


def test_masks_slices_are_distinct_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    # With a pool whose every 4-byte word differs, every key differs.
    words = b"".join(struct.pack("!I", i) for i in range(2 * wsframe._MASK_POOL // 4))
    pools = iter([words[: wsframe._MASK_POOL], words[wsframe._MASK_POOL :]])
    monkeypatch.setattr(wsframe.os, "urandom", lambda n: next(pools))
    masks = Masks()
    keys = [masks.next() for _ in range(2 * wsframe._MASK_POOL // 4)]
    assert len(set(keys)) == len(keys)


def test_masked_frames_use_the_key_they_carry() -> None:
    masks = Masks()
    encoded = wsframe.encode(OP_BINARY, b"hello", masks)
    key = encoded[2:6]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(encoded[6:])) == b"hello"


def test_close_payload_round_trip() -> None:
    assert wsframe.parse_close(wsframe.close_payload(1000, "")) == (1000, "")
    assert wsframe.parse_close(wsframe.close_payload(1009, "too big")) == (1009, "too big")
    assert wsframe.parse_close(b"") == (1005, "")
    long = wsframe.close_payload(1002, "x" * 500)
    assert len(long) == 125  # fits a control frame
    assert Parser(MAX, masked=False).feed(wsframe.encode(OP_CLOSE, long, None)) == [
        (OP_CLOSE, long)
    ]
    # A long non-ASCII reason is cut at a character boundary (valid UTF-8 for the peer).
    cut = wsframe.close_payload(1001, "é" * 100)
    assert len(cut) <= 125
    assert wsframe.parse_close(cut) == (1001, "é" * 61)
    theirs = Protocol(Side.CLIENT, max_size=MAX)
    theirs.receive_data(wsframe.encode(OP_CLOSE, cut, None))
    assert theirs.close_rcvd is not None and theirs.close_rcvd.reason == "é" * 61
    # Invalid UTF-8 in a received reason does not raise.
    assert wsframe.parse_close(b"\x03\xe8\xff")[0] == 1000


@pytest.mark.parametrize("masked", [True, False])
def test_a_large_binary_message_comes_out_split_after_its_header(masked: bool) -> None:
    body = payload(wsframe.SPLIT_AT)
    small = payload(wsframe.SPLIT_AT - 9)
    masks = Masks() if masked else None
    parser = Parser(MAX, masked=masked, split=8)
    wire_bytes = b"".join(
        wsframe.encode(op, data, masks)
        for op, data in ((OP_BINARY, small), (OP_BINARY, b"headers!" + body), (OP_TEXT, body))
    )
    # Fed in pieces too: the split works on the reassembled buffer.
    out = parser.feed(wire_bytes[:100]) + parser.feed(wire_bytes[100:])
    assert out == [(OP_BINARY, small), (OP_BINARY, (b"headers!", body)), (OP_TEXT, body)]


def test_a_fragmented_large_message_is_not_split() -> None:
    parser = Parser(MAX, masked=False, split=8)
    body = payload(2 * wsframe.SPLIT_AT)
    first = bytes((OP_BINARY, 126)) + struct.pack("!H", wsframe.SPLIT_AT) + body[: wsframe.SPLIT_AT]
    last = bytes((0x80 | OP_CONTINUATION, 126)) + struct.pack("!H", wsframe.SPLIT_AT)
    assert parser.feed(first + last + body[wsframe.SPLIT_AT :]) == [(OP_BINARY, body)]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3 * wsframe.LONG_AT), max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=16 * wsframe.LONG_AT), max_size=10),
    masked=st.booleans(),
    split=st.sampled_from([0, 8]),
)
def test_long_frames_across_reads_come_out_as_when_read_whole(
    sizes: list[int], cuts: list[int], masked: bool, split: int
) -> None:
    # Long frames that span reads are kept as the reads and joined once: any cut of
    # the byte stream, a cut inside a header included, gives what one read gives.
    masks = Masks() if masked else None
    stream = b"".join(
        wsframe.encode(OP_TEXT if i % 3 == 2 else OP_BINARY, payload(n)[::-1], masks)
        for i, n in enumerate(sizes)
    )
    whole = Parser(MAX, masked=masked, split=split).feed(stream)
    assert len(whole) == len(sizes)
    parser = Parser(MAX, masked=masked, split=split)
    out: list[tuple[int, wsframe.Payload]] = []
    last = 0
    for cut in [*sorted(c for c in cuts if c <= len(stream)), len(stream)]:
        out += parser.feed(stream[last:cut])
        last = cut
    assert out == whole
    joined = [p if isinstance(p, bytes) else p[0] + p[1] for _, p in out]
    assert joined == [payload(n)[::-1] for n in sizes]


@pytest.mark.parametrize("masked", [True, False])
def test_a_long_frame_whose_first_read_ends_inside_the_split_head(masked: bool) -> None:
    # The first read holds the frame's header and fewer than ``split`` payload bytes:
    # the head still comes out whole (a real upload hit this under load).
    body = b"headers!" + payload(wsframe.LONG_AT * 2)
    frame = wsframe.encode(OP_BINARY, body, Masks() if masked else None)
    header = len(frame) - len(body)
    for extra in range(0, 9):
        parser = Parser(MAX, masked=masked, split=8)
        cut = header + extra
        out = parser.feed(frame[:cut]) + parser.feed(frame[cut:])
        assert out == [(OP_BINARY, (b"headers!", body[8:]))], extra
