"""ResponseObserver and the Host splice on byte literals, no I/O."""

from __future__ import annotations

import pytest

from edge_agent.errors import TargetFailed
from edge_agent.http_bytes import ResponseObserver, splice_host


def observe(*chunks: bytes, head_only: bool = False) -> ResponseObserver:
    observer = ResponseObserver()
    observer.start(head_only)
    for chunk in chunks:
        observer.feed(chunk)
    return observer


def test_content_length_split_anywhere() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    for cut in range(1, len(raw)):
        observer = observe(raw[:cut])
        assert not observer.complete
        observer.feed(raw[cut:])
        assert observer.complete and observer.keep_alive and observer.status == 200


def test_chunked_ends_after_the_trailers() -> None:
    observer = observe(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n")
    assert not observer.complete
    observer.feed(b"X-Sum: 1\r\n\r\n")
    assert observer.complete


def test_interim_heads_are_skipped() -> None:
    observer = observe(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n")
    assert not observer.complete and observer.status == 0
    observer.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert observer.complete and observer.status == 204


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 9\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\n", False),
    ],
)
def test_head_ends_with_its_head(head: bytes, keep_alive: bool) -> None:
    observer = observe(head, head_only=True)
    assert observer.complete and observer.keep_alive is keep_alive
    observer.start(head_only=False)  # the next exchange gets a fresh parser
    observer.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert observer.complete


def test_close_delimited_and_connection_close() -> None:
    observer = observe(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome body")
    assert observer.ends_at_eof() and not observer.complete and not observer.keep_alive
    observer = observe(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx")
    assert observer.complete and not observer.keep_alive and not observer.ends_at_eof()


def test_switching_protocols_is_an_upgrade() -> None:
    observer = observe(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"\x81\x02hi"
    )
    assert observer.upgrade and observer.complete and observer.status == 101


def test_invalid_bytes_raise_target_failed() -> None:
    with pytest.raises(TargetFailed):
        observe(b"SMTP ready\r\n\r\n")


def test_keep_alive_connection_observes_consecutive_responses() -> None:
    observer = ResponseObserver()
    for _ in range(3):
        observer.start(head_only=False)
        observer.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert observer.complete


def test_splice_host() -> None:
    head = b"GET /p HTTP/1.1\r\nhost: a\r\nX: 1\r\nHOST: b\r\n"
    assert splice_host(head, b"t:1") == b"GET /p HTTP/1.1\r\nHost: t:1\r\nX: 1\r\n"
    assert (
        splice_host(b"GET / HTTP/1.0\r\nX: 1\r\n", b"t") == b"GET / HTTP/1.0\r\nHost: t\r\nX: 1\r\n"
    )
