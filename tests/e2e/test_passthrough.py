"""What goes through the tunnel arrives unchanged: methods, statuses, headers (minus
hop-by-hop, plus X-Forwarded-*), raw paths and queries, bodies, encoded bytes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

import pytest

from tests.e2e.client import raw_exchange, session
from tests.e2e.conftest import Tunnel
from tests.e2e.origin import GZIPPED, Origin, pattern, pattern_digest

SIZES = [0, 1, 65_535, 65_536, 65_537, 300_001, 2 * 1024 * 1024 + 3]


@pytest.mark.parametrize(
    ("method", "status"),
    [
        ("GET", 200),
        ("POST", 201),
        ("PUT", 202),
        ("PATCH", 200),
        ("DELETE", 204),
        ("OPTIONS", 200),
        ("HEAD", 200),
        ("PROPFIND", 207),
        ("GET", 301),
        ("GET", 404),
        ("POST", 418),
        ("GET", 500),
        ("GET", 503),
    ],
)
async def test_method_and_status_pass_through(
    tunnel: Tunnel, origin: Origin, method: str, status: int
) -> None:
    key = f"ms-{method}-{status}"
    async with session() as http:
        async with http.request(
            method, tunnel.at(f"echo?status={status}&key={key}"), allow_redirects=False
        ) as resp:
            body = await resp.read()
    assert resp.status == status
    assert "x-edge-error" not in resp.headers  # the origin's answer, not the relay's
    assert origin.requests[key][-1]["method"] == method
    if method != "HEAD" and status != 204:
        assert json.loads(body)["method"] == method
    else:
        assert body == b""


async def test_request_headers_hop_by_hop_dropped_forwarded_added(
    tunnel: Tunnel, origin: Origin
) -> None:
    host = f"127.0.0.1:{tunnel.relay.port}"
    request = (
        "GET /a/demo/echo?key=headers HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "X-Dup: one\r\n"
        "X-Other: between\r\n"
        "X-Dup: two\r\n"
        "Cookie: a=1\r\n"
        "Cookie: b=2\r\n"
        "Connection: keep-alive, X-Hop\r\n"
        "X-Hop: listed in Connection\r\n"
        "Keep-Alive: timeout=5\r\n"
        "TE: trailers\r\n"
        "Trailer: X-Checksum\r\n"
        "Proxy-Connection: keep-alive\r\n"
        "Proxy-Authorization: Basic cHJveHk6c2VjcmV0\r\n"
        "X-Forwarded-For: 203.0.113.7\r\n"
        "X-Forwarded-Host: spoofed.example\r\n"
        "X-Forwarded-Proto: https\r\n"
        "X-Forwarded-Prefix: /spoofed\r\n"
        "Authorization: Bearer for-the-origin\r\n"
        "\r\n"
    ).encode()
    resp = await raw_exchange(tunnel.relay.port, request)
    assert resp.status == 200 and resp.complete
    seen = origin.requests["headers"][-1]["headers"]
    # Hop-by-hop headers are the relay's business and stop there; the caller's own
    # forwarding headers are not believed (no trusted proxy in front); the relay's are
    # added, and the public Host goes through as it came (as with ngrok).
    assert [[n, v] for n, v in seen] == [
        ["host", host],
        ["x-dup", "one"],
        ["x-other", "between"],
        ["x-dup", "two"],
        ["cookie", "a=1"],
        ["cookie", "b=2"],
        ["authorization", "Bearer for-the-origin"],
        ["x-forwarded-for", "127.0.0.1"],
        ["x-forwarded-proto", "http"],
        ["x-forwarded-host", host],
        ["x-forwarded-port", str(tunnel.relay.port)],
        ["x-forwarded-prefix", "/a/demo"],
        ["forwarded", f'for=127.0.0.1;host="{host}";proto=http'],
    ]


async def test_response_bytes_pass_through_as_the_origin_wrote_them(tunnel: Tunnel) -> None:
    request = (f"GET /a/demo/echo HTTP/1.1\r\nHost: 127.0.0.1:{tunnel.relay.port}\r\n\r\n").encode()
    resp = await raw_exchange(tunnel.relay.port, request)
    assert resp.status == 200 and resp.complete
    assert resp.values("set-cookie") == [
        "first=1; Path=/",
        "second=2; Path=/; HttpOnly",
        "third=3",
    ]
    assert resp.values("x-order") == ["a", "b"]
    # A tunnel passes the response on unchanged, as ssh -R does; the relay checks only
    # that it is one well-formed response and honours its framing.
    names = {n for n, _ in resp.headers}
    assert {"x-resp-hop", "keep-alive", "proxy-connection"} <= names
    assert resp.values("content-length") == [str(len(resp.body))]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/echo/p%2Fq/%7Euser/../x;y/./z//w", "b=2&a=%20&a=1&=x&e=&utf=%C3%A9&plus=a+b"),
        ("/echo/%2e%2e/%252F/sp%20ace", "q=%2F%3F%23&&x"),
        ("/echo/%ZZ/%/a'b(c)*!$,@:~", "k=%zz&k=%&semi;colon=1"),
        ("/", "root=1"),
    ],
)
async def test_raw_path_and_query_untouched(
    tunnel: Tunnel, origin: Origin, path: str, query: str
) -> None:
    key = f"raw-{len(origin.requests)}"
    target = f"/a/demo{path}?{query}&key={key}"
    request = f"GET {target} HTTP/1.1\r\nHost: relay\r\n\r\n".encode("latin-1")
    resp = await raw_exchange(tunnel.relay.port, request)
    assert resp.status == 200, resp.body
    record = origin.requests[key][-1]
    assert record["raw_path"] == path
    assert record["query_string"] == f"{query}&key={key}"


async def test_prefix_alone_is_the_root(tunnel: Tunnel, origin: Origin) -> None:
    request = f"GET /a/demo?key=bare HTTP/1.1\r\nHost: h:{tunnel.relay.port}\r\n\r\n".encode()
    resp = await raw_exchange(tunnel.relay.port, request)
    assert resp.status == 200
    assert origin.requests["bare"][-1]["raw_path"] == "/"


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for piece in pattern(total, chunk=50_000):  # not aligned with the tunnel's frames
        yield piece


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_request_body_sizes(tunnel: Tunnel, origin: Origin, size: int, framing: str) -> None:
    key = f"up-{framing}-{size}"
    body = b"".join(pattern(size, chunk=50_000))
    data = body if framing == "length" else _chunks(size)
    async with session() as http, http.post(tunnel.at(f"echo?key={key}"), data=data) as resp:
        answer = json.loads(await resp.read())
    assert resp.status == 200
    assert (answer["size"], answer["sha256"]) == (size, hashlib.sha256(body).hexdigest())
    sent = dict(origin.requests[key][-1]["headers"])
    if framing == "length":
        assert sent.get("content-length") == str(size)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_response_body_sizes(tunnel: Tunnel, size: int, framing: str) -> None:
    chunked = "&chunked=1" if framing == "chunked" else ""
    async with session() as http, http.get(tunnel.at(f"bytes?n={size}{chunked}")) as resp:
        body = await resp.read()
        encoding = resp.headers.get("transfer-encoding")
        length = resp.headers.get("content-length")
    assert resp.status == 200
    assert len(body) == size
    assert hashlib.sha256(body).hexdigest() == pattern_digest(size)
    if framing == "length":
        assert length == str(size)
    else:
        assert encoding == "chunked"


async def test_content_encoding_bytes_untouched(tunnel: Tunnel, origin: Origin) -> None:
    async with session() as http:
        async with http.get(tunnel.at("gzip"), headers={"Accept-Encoding": "gzip"}) as resp:
            body = await resp.read()
            assert resp.headers["content-encoding"] == "gzip"
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain"}
        url = tunnel.at("echo?key=gzip-up")
        async with http.post(url, data=GZIPPED, headers=headers) as resp:
            answer = json.loads(await resp.read())
    assert body == GZIPPED
    assert answer["sha256"] == hashlib.sha256(GZIPPED).hexdigest()
    assert ["content-encoding", "gzip"] in origin.requests["gzip-up"][-1]["headers"]
