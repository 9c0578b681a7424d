"""The head rules (relay.h1.head): what a request head must be to be forwarded."""

from __future__ import annotations

import pytest

from relay.h1 import BadRequest, Framing, HeadTooLarge, RequestReader
from tests.relay.h1.helpers import GET, feed, head_of


def req(*lines: str, start: str = "GET / HTTP/1.1") -> bytes:
    return "\r\n".join([start, *lines, "", ""]).encode("latin-1")


def test_a_browser_head() -> None:
    raw = req(
        "Host: relay.test",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64)",
        "Accept: */*",
        "Accept-Encoding: gzip, deflate",
        "Connection: keep-alive",
        start="GET /a/demo/x?q=1&r=%20 HTTP/1.1",
    )
    head = head_of(raw)
    assert (head.method, head.target, head.version) == (b"GET", b"/a/demo/x?q=1&r=%20", b"HTTP/1.1")
    assert head.headers == [
        (b"host", b"relay.test"),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64)"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"connection", b"keep-alive"),
    ]
    assert head.raw == raw
    assert (head.framing, head.length, head.keep_alive) == (Framing.NONE, 0, True)
    assert (head.upgrade, head.expect_continue, head.host) == (None, False, b"relay.test")
    assert head.connection == (b"keep-alive",)


def test_names_lowercased_values_raw_order_and_duplicates_kept() -> None:
    head = head_of(req("Host: h", "X-A:  One, Two \t", "x-a: three", "COOKIE: a=B"))
    assert head.headers == [
        (b"host", b"h"),
        (b"x-a", b"One, Two"),
        (b"x-a", b"three"),
        (b"cookie", b"a=B"),
    ]


def test_empty_value_and_obs_text_are_kept() -> None:
    head = head_of(req("Host: h", "X-Empty:", "X-Latin: caf\xe9"))
    assert head.headers[1:] == [(b"x-empty", b""), (b"x-latin", b"caf\xe9")]


def test_http10_without_host_closes_by_default() -> None:
    head = head_of(b"GET / HTTP/1.0\r\n\r\n")
    assert (head.host, head.keep_alive) == (b"", False)
    assert head_of(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive


def test_connection_close_and_tokens() -> None:
    head = head_of(req("Host: h", "Connection: X-Foo, close", "Connection: ,te"))
    assert not head.keep_alive
    assert head.connection == (b"x-foo", b"close", b"te")


def test_upgrade_is_reported_only_with_connection_upgrade_in_http11() -> None:
    ws = ("Host: h", "Connection: keep-alive, Upgrade", "Upgrade: WebSocket")
    assert head_of(req(*ws)).upgrade == b"websocket"
    assert head_of(req("Host: h", "Upgrade: websocket")).upgrade is None
    assert head_of(req(*ws, start="GET / HTTP/1.0")).upgrade is None


def test_expect_continue() -> None:
    head = head_of(req("Host: h", "Expect: 100-Continue", "Content-Length: 3"))
    assert head.expect_continue and head.framing is Framing.LENGTH and head.length == 3
    assert not head_of(
        req("Host: h", "Expect: 100-continue", start="POST / HTTP/1.0")
    ).expect_continue


def test_framing() -> None:
    assert head_of(req("Host: h", "Transfer-Encoding: Chunked")).framing is Framing.CHUNKED
    assert head_of(req("Host: h", "Content-Length: 0012")).length == 12
    same = head_of(req("Host: h", "Content-Length: 7", "Content-Length: 7"))
    assert (same.framing, same.length) == (Framing.LENGTH, 7)


def test_one_empty_line_before_a_request_is_ignored() -> None:
    events = feed(b"\r\n" + GET)
    assert events[0].raw == GET  # type: ignore[union-attr]
    with pytest.raises(BadRequest):
        feed(b"\r\n\r\n" + GET)


def test_ipv6_host_with_port() -> None:
    assert head_of(req("Host: [2001:db8::1]:8080")).host == b"[2001:db8::1]:8080"


REFUSED: dict[str, bytes] = {
    # the request line
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "HTTP/0.9 style": b"GET /\r\n\r\n",
    "HTTP/1.2": req("Host: h", start="GET / HTTP/1.2"),
    "lowercase version": req("Host: h", start="GET / http/1.1"),
    "two spaces": req("Host: h", start="GET  / HTTP/1.1"),
    "tab separator": req("Host: h", start="GET\t/ HTTP/1.1"),
    "method not a token": req("Host: h", start="G(T / HTTP/1.1"),
    "empty method": req("Host: h", start=" / HTTP/1.1"),
    "absolute form": req("Host: h", start="GET http://beta.relay.test/a/alpha/ HTTP/1.1"),
    "authority form (CONNECT)": req("Host: h", start="CONNECT beta.relay.test:443 HTTP/1.1"),
    "asterisk form (OPTIONS *)": req("Host: h", start="OPTIONS * HTTP/1.1"),
    "space in target": req("Host: h", start="GET /a b HTTP/1.1"),
    "NUL in target": req("Host: h", start="GET /a\x00 HTTP/1.1"),
    "DEL in target": req("Host: h", start="GET /a\x7f HTTP/1.1"),
    # line ends and control bytes
    "bare LF line ends": b"GET / HTTP/1.1\nHost: h\n\n" + GET,
    "bare LF in one line": b"GET / HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n",
    "bare CR in a value": req("Host: h", "X-A: a\rb"),
    "NUL in a value": req("Host: h", "X-A: a\x00b"),
    "ESC in a value": req("Host: h", "X-A: a\x1bb"),
    "DEL in a value": req("Host: h", "X-A: a\x7fb"),
    "control byte in a name": req("Host: h", "X-\x01A: b"),
    # header lines
    "obs-fold": req("Host: h", "X-A: 1", " Transfer-Encoding: chunked"),
    "obs-fold with tab": req("Host: h", "X-A: 1", "\tmore"),
    "space before the colon": req("Host: h", "Transfer-Encoding : chunked"),
    "no colon": req("Host: h", "X-A"),
    "empty name": req("Host: h", ": v"),
    "name not a token": req("Host: h", "X(A): v"),
    "non-ASCII name": req("Host: h", "X-\xe9: v"),
    # Host
    "HTTP/1.1 without Host": req("X-A: b"),
    "two Host headers": req("Host: a", "Host: b"),
    "two Host headers in HTTP/1.0": req("Host: a", "Host: a", start="GET / HTTP/1.0"),
    "Host with userinfo": req("Host: alpha.relay.test@beta.relay.test"),
    "Host as a list": req("Host: beta.relay.test, alpha.relay.test"),
    "Host with a path": req("Host: beta/x"),
    "Host with a space": req("Host: a b"),
    # framing (request smuggling)
    "CL and TE": req("Host: h", "Content-Length: 5", "Transfer-Encoding: chunked"),
    "TE and CL": req("Host: h", "Transfer-Encoding: chunked", "Content-Length: 5"),
    "two TE headers": req("Host: h", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
    "TE list": req("Host: h", "Transfer-Encoding: gzip, chunked"),
    "chunked not last": req("Host: h", "Transfer-Encoding: chunked, gzip"),
    "unknown coding": req("Host: h", "Transfer-Encoding: xchunked"),
    "identity": req("Host: h", "Transfer-Encoding: identity"),
    "TE with a parameter": req("Host: h", "Transfer-Encoding: chunked;q=1"),
    "TE in HTTP/1.0": req("Transfer-Encoding: chunked", start="POST / HTTP/1.0"),
    "two different CLs": req("Host: h", "Content-Length: 5", "Content-Length: 6"),
    "CL list": req("Host: h", "Content-Length: 5, 5"),
    "CL with a sign": req("Host: h", "Content-Length: +5"),
    "negative CL": req("Host: h", "Content-Length: -1"),
    "CL in hex": req("Host: h", "Content-Length: 0x5"),
    "empty CL": req("Host: h", "Content-Length:"),
    "CL with 20 digits": req("Host: h", "Content-Length: " + "1" * 20),
    "CL 5 and 05": req("Host: h", "Content-Length: 5", "Content-Length: 05"),
    "CL with inner space": req("Host: h", "Content-Length: 1 2"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_with_400(case: str) -> None:
    reader = RequestReader()
    with pytest.raises(BadRequest) as info:
        reader.feed(REFUSED[case])
    assert (info.value.status, info.value.code) == (400, "bad_request")
    with pytest.raises(BadRequest):  # the reader is dead
        reader.feed(GET)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("absolute form", "origin form"),
        ("asterisk form (OPTIONS *)", "origin form"),
        ("HTTP/1.2", "version"),
        ("bare LF line ends", "bare CR or LF"),
        ("bare CR in a value", "bare CR or LF"),
        ("NUL in a value", "NUL"),
        ("obs-fold", "obs-fold"),
        ("space before the colon", "header name"),
        ("HTTP/1.1 without Host", "Host"),
        ("two Host headers", "Host"),
        ("CL and TE", "Transfer-Encoding"),
        ("CL list", "Content-Length"),
    ],
)
def test_the_reason_names_the_rule(case: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        RequestReader().feed(REFUSED[case])


def test_too_many_header_lines_is_431() -> None:
    lines = [f"X-H{i}: v" for i in range(100)]
    assert len(head_of(req("Host: h", *lines[:99])).headers) == 100
    with pytest.raises(HeadTooLarge) as info:
        RequestReader().feed(req("Host: h", *lines))
    assert (info.value.status, info.value.code) == (431, "headers_too_large")


def test_too_many_lines_refused_before_the_head_ends() -> None:
    reader = RequestReader(max_headers=10)
    reader.feed(b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * 10)
    with pytest.raises(HeadTooLarge):
        reader.feed(b"a: b\r\n" * 2)


def test_garbage_is_refused_before_the_head_ends() -> None:
    """A NUL, a bare LF or a bare CR is refused as it arrives, not at the limit."""
    for bad in (b"\x00", b"\n", b"\rX"):
        reader = RequestReader()
        reader.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: ")
        with pytest.raises(BadRequest):
            reader.feed(b"abc" + bad)
