"""Properties over generated requests: the reader never changes a byte, however the
input is split, and arbitrary input raises only the reader's own errors."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.h1 import Body, End, Event, Forwarding, H1Error, Head, RequestReader, rewrite_head
from tests.relay.h1.helpers import H1, feed, head_of, merged

TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SPECIAL = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "expect"}
SPECIAL |= {"te", "trailer", "keep-alive", "proxy-connection", "proxy-authorization", "x-real-ip"}
names = st.text(TCHARS, min_size=1, max_size=12).filter(lambda n: n.lower() not in SPECIAL)
values = st.binary(max_size=20).map(
    lambda b: bytes(c for c in b if c == 9 or 0x20 <= c != 0x7F).strip(b" \t")
)
fields = st.lists(st.tuples(names.map(str.encode), values), max_size=6)
targets = st.text("abcxyz/%?=&.-_~09", max_size=20).map(lambda t: b"/" + t.encode())
chunks = st.lists(st.binary(min_size=1, max_size=40), max_size=4)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(whole request, its body as sent); the body is framed by length, chunks or none."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"PATCH", b"X-CUSTOM"]))
    lines = [method + b" " + draw(targets) + b" HTTP/1.1", b"Host: relay.test"]
    lines += [n + b": " + v for n, v in draw(fields)]
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b""
    if framing == "length":
        body = draw(st.binary(max_size=60))
        lines.append(b"Content-Length: " + str(len(body)).encode())
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        parts = [b"%x\r\n%s\r\n" % (len(c), c) for c in draw(chunks)]
        trailers = b"".join(n + b": " + v + b"\r\n" for n, v in draw(fields))
        body = b"".join(parts) + b"0\r\n" + trailers + b"\r\n"
    lines = [lines[0], *draw(st.permutations(lines[1:]))]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body, body


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def rebuilt(events: list[Event]) -> bytes:
    return b"".join(
        e.raw if isinstance(e, Head) else e.data if isinstance(e, Body) else b"" for e in events
    )


@H1
@given(st.lists(requests(), min_size=1, max_size=4), st.lists(st.integers(0, 10_000), max_size=8))
def test_any_split_of_a_pipeline_gives_the_same_events_and_every_byte(
    pipeline: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(r for r, _ in pipeline)
    whole = feed(stream)
    assert merged(feed(*splits(stream, cuts))) == merged(whole)
    assert rebuilt(whole) == stream  # nothing added, dropped or changed
    assert sum(isinstance(e, End) for e in whole) == len(pipeline)
    bodies = [b"".join(e.data for e in m if isinstance(e, Body)) for m in _messages(whole)]
    assert bodies == [b for _, b in pipeline]


def _messages(events: list[Event]) -> list[list[Event]]:
    out: list[list[Event]] = [[]]
    for e in events:
        if isinstance(e, End):
            out.append([])
        else:
            out[-1].append(e)
    return out[:-1]


@H1
@given(requests())
def test_decoded_counts_the_payload(request: tuple[bytes, bytes]) -> None:
    data, body = request
    events = feed(data)
    decoded = sum(e.decoded for e in events if isinstance(e, Body))
    head = next(e for e in events if isinstance(e, Head))
    if head.framing.value == "chunked":
        assert decoded < len(body) or not body
    else:
        assert decoded == len(body)


@H1
@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=6))
def test_arbitrary_bytes_raise_only_reader_errors(data: bytes, cuts: list[int]) -> None:
    reader = RequestReader(max_head=256, max_trailers=64)
    events: list[Event] = []
    try:
        for part in splits(data, cuts):
            events += reader.feed(part)
        reader.eof()
    except H1Error:
        return
    assert data.startswith(rebuilt(events)) or data.startswith(b"\r\n")


@H1
@given(requests(), st.integers(0, 10_000), st.integers(0, 255))
def test_a_corrupted_request_is_refused_or_consistent(
    request: tuple[bytes, bytes], where: int, byte: int
) -> None:
    data = bytearray(request[0])
    data[where % len(data)] = byte
    try:
        events = feed(bytes(data))
    except H1Error:
        return
    assert bytes(data).startswith(rebuilt(events).removeprefix(b"\r\n")) or data[:2] == b"\r\n"


@H1
@given(requests(), st.booleans())
def test_the_rewritten_head_parses_and_keeps_the_framing(
    request: tuple[bytes, bytes], trusted: bool
) -> None:
    head = next(e for e in feed(request[0]) if isinstance(e, Head))
    out = rewrite_head(
        head,
        target=b"/new",
        forwarding=Forwarding("192.0.2.1", "http", 80),
        host=b"relay.test",
        prefix=b"/a/x",
        trusted=trusted,
    )
    again = head_of(out)
    assert (again.target, again.framing, again.length) == (b"/new", head.framing, head.length)
    kept = [h for h in again.headers if not h[0].startswith((b"x-forwarded-", b"forwarded"))]
    assert kept == [h for h in head.headers if not h[0].startswith((b"x-forwarded-", b"forwarded"))]
