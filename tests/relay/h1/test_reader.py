"""RequestReader: message boundaries, limits, pipelining, upgrades and the end of input."""

from __future__ import annotations

import time

import pytest

from relay.h1 import (
    END,
    BadRequest,
    Body,
    ClosedMidRequest,
    End,
    Framing,
    HeadTooLarge,
    RequestReader,
)
from tests.relay.h1.helpers import GET, body_of, bytewise, ends, feed, heads, merged

POST = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"


def test_a_request_without_framing_has_no_body() -> None:
    events = feed(GET)
    assert events[1:] == [END]
    assert events[0].raw == GET  # type: ignore[union-attr]


def test_content_length_body_passes_as_received() -> None:
    events = feed(POST + b"hel", b"lo")
    assert heads(events)[0].framing is Framing.LENGTH
    assert events[1:] == [Body(b"hel", 3), Body(b"lo", 2), END]


def test_content_length_zero_ends_at_once() -> None:
    events = feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    assert events[1:] == [END]


def test_a_whole_read_of_body_is_passed_without_a_copy() -> None:
    reader = RequestReader()
    reader.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n")
    chunk = bytes(65536)
    (event,) = reader.feed(chunk)
    assert isinstance(event, Body) and event.data is chunk


def test_pipelined_requests_come_out_in_order() -> None:
    second = b"GET /two HTTP/1.1\r\nHost: h\r\n\r\n"
    events = feed(POST + b"hello" + GET + second)
    assert [h.target for h in heads(events)] == [b"/up", b"/a/demo/", b"/two"]
    assert ends(events) == 3
    assert body_of(events) == b"hello"


def test_the_next_head_waits_until_it_is_complete() -> None:
    reader = RequestReader()
    assert ends(reader.feed(GET + GET[:10])) == 1
    assert heads(reader.feed(GET[10:]))[0].raw == GET


def test_bytes_after_the_body_are_the_next_request_not_body() -> None:
    events = feed(POST + b"hello" + b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert body_of(events) == b"hello"
    assert heads(events)[1].target == b"/x"


def test_any_split_gives_the_same_events() -> None:
    stream = POST + b"hello" + GET
    assert merged(bytewise(stream)) == merged(feed(stream))


# -- the head limit (issue 18 item 1) ------------------------------------------------------


def test_a_head_of_exactly_the_limit_passes_one_more_byte_is_431() -> None:
    base = b"GET / HTTP/1.1\r\nHost: h\r\nX: "
    pad = 200 - len(base) - 4
    exact = base + b"a" * pad + b"\r\n\r\n"
    assert len(exact) == 200
    assert heads(feed(exact, reader=RequestReader(max_head=200)))
    with pytest.raises(HeadTooLarge):
        feed(base + b"a" * (pad + 1) + b"\r\n\r\n", reader=RequestReader(max_head=200))


@pytest.mark.parametrize(
    "start",
    [
        b"GET /a/alice/ HTTP/1.1\r\nHost: x\r\nX-Big: ",  # a value that never ends
        b"GET /a/alice/ HTTP/1.1\r\nHost: x\r\nX-Big",  # a name that never ends
        b"GET /a/alice/",  # a request line that never ends
        b"",  # nothing but a name
    ],
)
def test_an_endless_line_is_refused_at_the_limit(start: bytes) -> None:
    """Bytes count from the start of the request, whatever has been parsed: 431 once
    16 KiB have arrived without the end of the head, fed one byte or 1 KiB at a time."""
    for size in (1, 1024):
        reader = RequestReader()
        received = len(start)
        reader.feed(start)
        with pytest.raises(HeadTooLarge):
            while True:
                reader.feed(b"a" * size)
                received += size
                assert received < 16384
        assert 16384 <= received + size < 16384 + size


def test_the_limit_counts_the_bytes_of_one_request_only() -> None:
    """After a complete request, the count starts again for the next one."""
    reader = RequestReader(max_head=100)
    for _ in range(50):
        assert ends(reader.feed(GET)) == 1


def test_an_unfinished_head_is_searched_once() -> None:
    """White-box: each read of an unfinished head is searched from where the last search
    stopped (less 3 bytes, for a CRLF CRLF cut by the read), and nothing beyond the head
    limit plus one read is ever held (issue 18.1: 138 MiB were)."""
    reader = RequestReader()
    start = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: "
    assert reader.feed(start) == []
    for i in range(1, 100):
        assert reader.feed(b"a" * 100) == []
        assert reader._scanned == len(reader._buf) == len(start) + 100 * i


def test_head_limit_is_linear_in_the_bytes_fed() -> None:
    """Byte-at-a-time feeding of a 64 KiB head limit costs about what one read costs
    (the search resumes where it stopped): never quadratic."""
    limit = 65536
    start = time.perf_counter()
    with pytest.raises(HeadTooLarge):
        bytewise(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * limit, RequestReader(limit))
    assert time.perf_counter() - start < 2.0  # quadratic would be ~100x that


# -- errors and the end of input -----------------------------------------------------------


def test_a_dead_reader_raises_on_every_call() -> None:
    reader = RequestReader()
    with pytest.raises(BadRequest, match="Host"):
        reader.feed(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(BadRequest, match="Host"):
        reader.feed(GET)
    for call in (reader.eof, reader.switch_to_raw, reader.resume):
        with pytest.raises(BadRequest, match="Host"):
            call()


def test_eof_between_requests_is_clean() -> None:
    reader = RequestReader()
    assert reader.eof() == []
    reader.feed(GET)
    assert reader.eof() == []


@pytest.mark.parametrize("cut", [b"G", GET[:-1], POST + b"hel", b"\r"])
def test_eof_inside_a_request_is_an_error(cut: bytes) -> None:
    reader = RequestReader()
    reader.feed(cut)
    with pytest.raises(ClosedMidRequest):
        reader.eof()


# -- upgrades --------------------------------------------------------------------------------

WS = (
    b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


def test_upgrade_pauses_then_switches_to_raw_forever() -> None:
    reader = RequestReader()
    events = reader.feed(WS + b"\x81\x02hi")
    assert heads(events)[0].upgrade == b"websocket"
    assert events[-1] == END and reader.paused
    assert reader.feed(b"GET / HTTP/1.1\r\n") == []  # held, not parsed
    assert reader.switch_to_raw() == [Body(b"\x81\x02hiGET / HTTP/1.1\r\n", 20)]
    assert reader.feed(b"\x00\xff\r\n") == [Body(b"\x00\xff\r\n", 4)]
    assert reader.feed(b"") == []
    assert reader.eof() == []


def test_a_declined_upgrade_resumes_http() -> None:
    reader = RequestReader()
    reader.feed(WS + GET[:5])
    assert reader.feed(GET[5:]) == []
    events = reader.resume()
    assert heads(events)[0].raw == GET and events[-1] == END
    assert not reader.paused


def test_resume_without_a_pause_does_nothing() -> None:
    reader = RequestReader()
    reader.feed(GET[:5])
    assert reader.resume() == []
    assert heads(reader.feed(GET[5:]))[0].raw == GET


def test_bytes_held_while_paused_are_bounded() -> None:
    reader = RequestReader(max_head=1000)
    reader.feed(WS)
    reader.feed(b"x" * 1000)
    with pytest.raises(HeadTooLarge):
        reader.feed(b"x")


def test_events_are_frozen() -> None:
    import dataclasses

    head = heads(feed(GET))[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.target = b"/other"  # type: ignore[misc]
    assert End() == END
