"""The chunked body: raw bytes through, strict framing, trailers never in the head."""

from __future__ import annotations

import pytest

from relay.h1 import END, BadRequest, Body, Event, HeadTooLarge, RequestReader
from tests.relay.h1.helpers import body_of, bytewise, ends, feed, heads, merged

HEAD = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
SMUGGLED = b"GET /a/beta/?smuggled HTTP/1.1\r\nHost: h\r\n\r\n"


def decoded(events: list[Event]) -> int:
    return sum(e.decoded for e in events if isinstance(e, Body))


def test_chunks_pass_raw_with_their_framing() -> None:
    body = b"5\r\nhello\r\n6;name=val\r\n world\r\n0\r\n\r\n"
    events = feed(HEAD + body)
    assert events[1:] == [Body(body, 11), END]


def test_trailers_are_body_bytes_never_headers() -> None:
    """Issue 18.5: a trailer never becomes a header, and never routes."""
    body = b"3\r\nabc\r\n0\r\nX-From-Trailer: yes\r\nX-Other: 1\r\n\r\n"
    events = feed(HEAD + body + SMUGGLED)
    (head, smuggled) = heads(events)
    assert all(name != b"x-from-trailer" for name, _ in head.headers)
    assert body_of(events) == body and decoded(events) == 3
    assert smuggled.target == b"/a/beta/?smuggled"  # parsed as the next request, on its own


@pytest.mark.parametrize("field", [b"Host: beta.t.test", b"Content-Length: 5", b"Authorization: x"])
def test_trailers_that_belong_in_a_head_are_refused(field: bytes) -> None:
    with pytest.raises(BadRequest, match="trailer"):
        feed(HEAD + b"0\r\n" + field + b"\r\n\r\n")


def test_a_long_body_split_anywhere_gives_the_same_bytes() -> None:
    body = b"a\r\n0123456789\r\n1\r\nx\r\n0\r\nT: v\r\n\r\n"
    assert merged(bytewise(HEAD + body + HEAD + body)) == merged(feed(HEAD + body + HEAD + body))
    assert body_of(bytewise(HEAD + body)) == body


def test_chunk_size_upper_and_lower_case_hex_and_16_digits() -> None:
    events = feed(HEAD + b"A\r\n0123456789\r\n0000000000000001\r\nx\r\n0\r\n\r\n")
    assert decoded(events) == 11 and ends(events) == 1


def test_chunk_extension_at_the_limit_passes_one_byte_more_is_refused() -> None:
    ext = b";" + b"e" * 9
    feed(HEAD + b"1" + ext + b"\r\nx\r\n0\r\n\r\n", reader=RequestReader(max_chunk_ext=10))
    with pytest.raises(BadRequest, match="extension"):
        feed(HEAD + b"1" + ext + b"e\r\nx\r\n0\r\n\r\n", reader=RequestReader(max_chunk_ext=10))


def test_an_endless_chunk_line_is_refused_at_its_cap() -> None:
    reader = RequestReader()
    reader.feed(HEAD + b"1;e")
    with pytest.raises(BadRequest, match="too long"):
        for _ in range(300):
            reader.feed(b"e")


BAD_CHUNKS: dict[str, bytes] = {
    "not hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "0x prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "sign": b"+5\r\nhello\r\n0\r\n\r\n",
    "negative": b"-5\r\nhello\r\n0\r\n\r\n",
    "space after size": b"5 \r\nhello\r\n0\r\n\r\n",
    "space before size": b" 5\r\nhello\r\n0\r\n\r\n",
    "tab before extension": b"5\t;a\r\nhello\r\n0\r\n\r\n",
    "17 digits": b"00000000000000005\r\nhello\r\n0\r\n\r\n",
    "empty size": b"\r\nhello\r\n0\r\n\r\n",
    "bare LF after size": b"5\nhello\r\n0\r\n\r\n",
    "no CRLF after data": b"5\r\nhelloX\r\n0\r\n\r\n",
    "LF only after data": b"5\r\nhello\n0\r\n\r\n",
    "extension not a token": b"5;a b\r\nhello\r\n0\r\n\r\n",
    "unterminated quoted extension": b'5;a="b\r\nhello\r\n0\r\n\r\n',
    "bare LF in trailers": b"0\r\nX: a\n\r\n",
    "obs-fold in trailers": b"0\r\nX: a\r\n b\r\n\r\n",
    "space before colon in a trailer": b"0\r\nX : a\r\n\r\n",
    "NUL in a trailer": b"0\r\nX: a\x00\r\n\r\n",
}


@pytest.mark.parametrize("case", list(BAD_CHUNKS))
def test_bad_chunked_framing_is_400(case: str) -> None:
    for split in (False, True):
        reader = RequestReader()
        reader.feed(HEAD)
        with pytest.raises(BadRequest):
            data = BAD_CHUNKS[case] + SMUGGLED
            if split:
                bytewise(data, reader)
            else:
                reader.feed(data)


def test_quoted_extension_with_escapes_passes() -> None:
    events = feed(HEAD + b'3;a="x \\" y";b=c\r\nabc\r\n0\r\n\r\n')
    assert decoded(events) == 3 and ends(events) == 1


def test_trailer_section_at_the_limit_passes_one_byte_more_is_431() -> None:
    section = b"X: " + b"a" * 93 + b"\r\n\r\n"  # 100 bytes
    assert len(section) == 100
    feed(HEAD + b"0\r\n" + section, reader=RequestReader(max_trailers=100))
    reader = RequestReader(max_trailers=100)
    with pytest.raises(HeadTooLarge, match="trailer"):
        bytewise(HEAD + b"0\r\nX: " + b"a" * 94 + b"\r\n\r\n", reader)


def test_an_endless_trailer_is_refused_at_the_limit() -> None:
    reader = RequestReader()
    reader.feed(HEAD + b"0\r\nX-T: ")
    with pytest.raises(HeadTooLarge):
        for _ in range(10):
            reader.feed(b"a" * 1024)


def test_decoded_counts_payload_only_across_splits() -> None:
    body = b"10\r\n" + b"p" * 16 + b"\r\n0\r\n\r\n"
    events = bytewise(HEAD + body)
    assert decoded(events) == 16 and body_of(events) == body
