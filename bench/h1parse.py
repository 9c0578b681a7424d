"""Micro-benchmark of the relay's request-head path (``relay.h1``), in-process.

``python -m bench.h1parse``: ``RequestReader.feed`` of a 325-byte Firefox-like GET,
``rewrite_head`` of its head, both together, and the head parser beside the same work
done with httptools (llhttp) plus the relay's own rules. Min of 7 x 20,000 runs per
round, best of three rounds (the machines this runs on are shared and noisy).
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

import httptools

from relay.h1 import BadRequest, Forwarding, Head, RequestReader, rewrite_head
from relay.h1 import head as h1head

HEAD = (
    b"GET /a/demo/static/app.js?v=3 HTTP/1.1\r\n"
    b"Host: relay.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    b"Accept: */*\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://relay.example.com/a/demo/\r\n"
    b"Connection: keep-alive\r\n"
    b"Sec-Fetch-Dest: script\r\n"
    b"\r\n"
)


class _Collect:
    __slots__ = ("names", "values")

    def __init__(self) -> None:
        self.names: list[bytes] = []
        self.values: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.names.append(name)
        self.values.append(value)


def httptools_head(head: bytes, max_headers: int) -> Head:
    """The same Head through llhttp: its checks, then the rules it does not have."""
    collect = _Collect()
    try:
        httptools.HttpRequestParser(collect).feed_data(head)
    except httptools.HttpParserError as exc:
        raise BadRequest(str(exc)) from exc
    method, target, version = h1head._request_line(head[: head.index(b"\r\n")])
    headers = [(n.lower(), v) for n, v in zip(collect.names, collect.values, strict=True)]
    return h1head._meaning(method, target, version, headers, head)


def main() -> None:
    reader = RequestReader()
    first = reader.feed(HEAD)[0]
    assert isinstance(first, Head) and httptools_head(HEAD, 100) == first

    forwarding = Forwarding("203.0.113.7", "https", 443)

    def rewrite(head: Head) -> bytes:
        return rewrite_head(
            head,
            target=b"/static/app.js?v=3",
            forwarding=forwarding,
            host=b"relay.example.com",
            prefix=b"/a/demo",
            trusted=False,
        )

    def both() -> bytes:
        head = reader.feed(HEAD)[0]
        assert isinstance(head, Head)
        return rewrite(head)

    cases: dict[str, Callable[[], object]] = {
        "feed": lambda: reader.feed(HEAD),
        "rewrite_head": lambda: rewrite(first),
        "feed + rewrite_head": both,
        "head parser (hand-written)": lambda: h1head.parse_head(HEAD, 100),
        "head parser (httptools + rules)": lambda: httptools_head(HEAD, 100),
    }
    best: dict[str, float] = {}
    for _ in range(3):
        for name, fn in cases.items():
            t = min(timeit.repeat(fn, number=20_000, repeat=7)) / 20_000 * 1e6
            best[name] = min(best.get(name, t), t)
    print(f"{len(HEAD)}-byte GET head")
    for name, t in best.items():
        print(f"  {name:34} {t:6.2f} us")


if __name__ == "__main__":
    main()
