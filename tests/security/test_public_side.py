"""Hostile public callers: each malformed or misdirected request gets a 4xx from the relay
(or goes to exactly the tunnel the routing rules name), and never reaches another
tunnel's agent: the origins behind ``alpha`` and ``beta`` count what reaches them.

Routing rules under test (``relay.public``): with a wildcard domain, ``Host:
<name>.<domain>`` names the tunnel and the whole path goes to it; otherwise the first
segment after ``/a/`` does, read from the raw path (never percent-decoded) and valid only
as a lowercase DNS label. A Host header that is not exactly one ``<label>.<domain>``
leaves routing to the path.

The relay's health endpoint is probed throughout (see ``conftest.py``); slow-header and
slow-body callers are held open while legitimate requests are timed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from tests.e2e.client import raw_exchange, relay_error, session
from tests.security.conftest import DOMAIN, MAX_BODY, Edge

pytestmark = pytest.mark.timeout(120)  # each test is short: a hang must fail, not wait

ANY = 0  # the origin's own answer, whatever its status (not one made by the relay)


def get(target: str, *headers: str, host: str = "relay.test") -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def post(target: str, head: str, body: str) -> bytes:
    return f"POST {target} HTTP/1.1\r\nHost: relay.test\r\n{head}\r\n\r\n{body}".encode()


SMUGGLED = "GET /a/beta/?smuggled HTTP/1.1\r\nHost: relay.test\r\n\r\n"

# id: (request, status, relay error code or None, origins that must see it once)
CASES: dict[str, tuple[bytes, int, str | None, set[str]]] = {
    # -- header blocks over the limits -------------------------------------------------
    "header block over 32 KiB": (
        get("/a/beta/", "X-Big: " + "b" * 40_000),
        431,
        "headers_too_large",
        set(),
    ),
    "head over the parser's 64 KiB cap": (
        get("/a/beta/", *(f"X-H{i}: {'h' * 1000}" for i in range(70))),
        431,
        "headers_too_large",
        set(),
    ),
    "over 200 header lines": (
        get("/a/beta/", *(f"X-H{i}: v" for i in range(210))),
        431,
        "headers_too_large",
        set(),
    ),
    # -- names -------------------------------------------------------------------------
    "uppercase name": (get("/a/Beta/"), 400, "bad_request", set()),
    "leading hyphen": (get("/a/-beta/"), 400, "bad_request", set()),
    "64-character name": (get(f"/a/{'b' * 64}/"), 400, "bad_request", set()),
    "underscore": (get("/a/be_ta/"), 400, "bad_request", set()),
    "percent-encoded letter": (get("/a/%62eta/"), 400, "bad_request", set()),
    "percent-encoded traversal": (get("/a/..%2fbeta/"), 400, "bad_request", set()),
    "encoded slash after a name": (get("/a/alpha%2f..%2fbeta/"), 400, "bad_request", set()),
    "dot segment as the name": (get("/a/./beta/"), 400, "bad_request", set()),
    "dot-dot as the name": (get("/a/../beta/"), 400, "bad_request", set()),
    "encoded NUL": (get("/a/beta%00/"), 400, "bad_request", set()),
    "double slash first": (get("//a/beta/"), 404, "unknown_tunnel", set()),
    "empty name": (get("/a//beta/"), 404, "unknown_tunnel", set()),
    "prefix in capitals": (get("/A/beta/"), 404, "unknown_tunnel", set()),
    "name without a trailing slash": (get("/a/beta"), 200, None, {"beta"}),
    "traversal after the name stays there": (get("/a/alpha/../beta/"), ANY, None, {"alpha"}),
    # -- Host headers naming another tunnel --------------------------------------------
    "domain mode: the Host names the tunnel": (
        get("/a/alpha/", host=f"beta.{DOMAIN}"),
        ANY,
        None,
        {"beta"},
    ),
    "domain mode: Host with port and capitals": (
        get("/a/alpha/", host=f"BETA.{DOMAIN.upper()}:443"),
        ANY,
        None,
        {"beta"},
    ),
    "domain mode: nested label": (
        get("/a/alpha/", host=f"x.beta.{DOMAIN}"),
        404,
        "unknown_tunnel",
        set(),
    ),
    # A Host that is not one host[:port] is refused before routing (RFC 9112 3.2).
    "domain mode: userinfo": (
        get("/a/alpha/", host=f"alpha.{DOMAIN}@beta.{DOMAIN}"),
        400,
        "bad_request",
        set(),
    ),
    "domain mode: a list": (
        get("/a/alpha/", host=f"beta.{DOMAIN}, alpha.{DOMAIN}"),
        400,
        "bad_request",
        set(),
    ),
    "two Host headers": (
        get("/a/alpha/", f"Host: beta.{DOMAIN}", host=f"beta.{DOMAIN}"),
        400,
        "bad_request",
        set(),
    ),
    "path mode: Host is a bare name": (get("/a/alpha/", host="beta"), 200, None, {"alpha"}),
    "path mode: Host under another domain": (
        get("/a/alpha/", host="beta.other.test"),
        200,
        None,
        {"alpha"},
    ),
    # The relay is an origin server, not a proxy: only origin-form targets.
    "absolute-form target is refused": (
        get(f"http://beta.{DOMAIN}/a/alpha/"),
        400,
        "bad_request",
        set(),
    ),
    # -- Content-Length / Transfer-Encoding conflicts (request smuggling) ----------------
    "CL and TE, with a request smuggled behind": (
        post(
            "/a/alpha/", "Content-Length: 5\r\nTransfer-Encoding: chunked", "0\r\n\r\n" + SMUGGLED
        ),
        400,
        "bad_request",
        set(),
    ),
    "two Transfer-Encoding headers": (
        post("/a/alpha/", "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity", "0\r\n\r\n"),
        400,
        "bad_request",
        set(),
    ),
    "chunked not last": (
        post("/a/alpha/", "Transfer-Encoding: chunked, gzip", "0\r\n\r\n"),
        400,
        "bad_request",
        set(),
    ),
    "a coding before chunked": (
        post("/a/alpha/", "Transfer-Encoding: gzip, chunked", "0\r\n\r\n" + SMUGGLED),
        400,
        "bad_request",
        set(),
    ),
    "unknown transfer coding": (
        post("/a/alpha/", "Transfer-Encoding: xchunked", "0\r\n\r\n" + SMUGGLED),
        400,
        "bad_request",
        set(),
    ),
    "two different Content-Lengths": (
        post("/a/alpha/", "Content-Length: 5\r\nContent-Length: 6", "hello!"),
        400,
        "bad_request",
        set(),
    ),
    "Content-Length list": (post("/a/alpha/", "Content-Length: 5, 5", "hello"), 400, None, set()),
    "Content-Length with a sign": (
        post("/a/alpha/", "Content-Length: +5", "hello"),
        400,
        "bad_request",
        set(),
    ),
    "bad chunk size": (
        post("/a/alpha/", "Transfer-Encoding: chunked", "zz\r\nhello\r\n0\r\n\r\n"),
        400,
        "bad_request",
        set(),
    ),
    "obs-fold before Transfer-Encoding": (
        post("/a/alpha/", "X-A: 1\r\n Transfer-Encoding: chunked", "0\r\n\r\n" + SMUGGLED),
        400,
        "bad_request",
        set(),
    ),
    "space before the colon": (
        post("/a/alpha/", "Transfer-Encoding : chunked", "0\r\n\r\n" + SMUGGLED),
        400,
        "bad_request",
        set(),
    ),
    "bare LF line ends": (
        b"GET /a/alpha/ HTTP/1.1\nHost: relay.test\n\n" + SMUGGLED.encode(),
        400,
        "bad_request",
        set(),
    ),
    "Content-Length with spaces around it (valid)": (
        post("/a/alpha/", "Content-Length:  5 ", "hello"),
        200,
        None,
        {"alpha"},
    ),
    # -- bodies over the limit ----------------------------------------------------------
    "Content-Length over the limit": (
        post("/a/beta/", f"Content-Length: {2 * MAX_BODY}", ""),
        413,
        "body_too_large",
        set(),
    ),
}


#: Framing errors found only in the body: uvicorn hands the request to the relay at the
#: end of its head, so the head may already be on its way to the tunnel the path names
#: (followed by a reset: the target sees a request cut off) when the parser fails.
#: Only that tunnel, and never the request smuggled behind.
HEAD_MAY_REACH = {"bad chunk size": "alpha"}


@pytest.mark.parametrize("case", list(CASES))
async def test_public_request_reaches_only_its_tunnel(edge: Edge, case: str) -> None:
    request, status, code, reaches = CASES[case]
    before = edge.totals()
    response = await raw_exchange(edge.relay.port, request, within=10)
    await asyncio.sleep(0.1)  # a request smuggled behind would arrive now
    seen = {name: n - before[name] for name, n in edge.totals().items()}
    if status == ANY:
        assert response.values("x-edge-error") == [], response
    else:
        assert response.status == status, response
    if code is not None:
        assert response.values("x-edge-error") == [code]
        assert json.loads(response.body)["error"]["code"] == code
    if case in HEAD_MAY_REACH:
        seen[HEAD_MAY_REACH[case]] = 0
    assert seen == {name: int(name in reaches) for name in seen}, seen
    if not reaches:
        assert b"smuggled" not in b"".join(
            p.encode() for o in edge.origins.values() for p in o.paths
        )


async def test_chunked_body_over_the_limit_is_413_and_goes_nowhere_else(edge: Edge) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(2 * MAX_BODY // 65_536 + 1):
            yield b"x" * 65_536

    before = edge.totals()
    async with session() as http, http.post(edge.url("beta", "sink?key=big"), data=body()) as resp:
        assert (resp.status, await relay_error(resp)) == (413, "body_too_large")
    after = edge.totals()
    assert after["alpha"] == before["alpha"] and after["guarded"] == before["guarded"]
    assert "big" not in edge.origins["beta"].uploads  # never handed over complete


async def _slow_head(port: int, stop: asyncio.Event) -> None:
    """Sends a request head one byte every 0.5 s until told to stop."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET /a/alpha/?slowloris HTTP/1.1\r\nHost: relay.test\r\nX-Pad: " + b"p" * 1000
    try:
        for byte in head:
            if stop.is_set() or reader.at_eof():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.5)
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _slow_body(port: int, stop: asyncio.Event) -> None:
    """A 1 MiB upload sent 1 KiB every 0.5 s until told to stop."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /a/beta/sink?key=slowbody HTTP/1.1\r\nHost: relay.test\r\n"
            b"Content-Length: 1048576\r\n\r\n"
        )
        while not stop.is_set():
            writer.write(b"s" * 1024)
            await writer.drain()
            await asyncio.sleep(0.5)
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_slow_header_and_slow_body_callers_do_not_starve_others(edge: Edge) -> None:
    """300 slowloris connections and 30 slow uploads are held open while real requests
    go through; they take a connection each, nothing else (the relay's head timeout,
    30 s, then cuts the slow heads: see tests/relay for the 408)."""
    stop = asyncio.Event()
    port = edge.relay.port
    attackers = [asyncio.create_task(_slow_head(port, stop)) for _ in range(300)]
    attackers += [asyncio.create_task(_slow_body(port, stop)) for _ in range(30)]
    before = edge.totals()
    latencies: list[float] = []
    try:
        await asyncio.sleep(1.0)
        async with session() as http:
            for i in range(20):
                for name in ("alpha", "beta"):
                    start = time.monotonic()
                    async with http.get(edge.url(name, f"echo?n={i}")) as resp:
                        await resp.read()
                        assert resp.status == 200
                    latencies.append(time.monotonic() - start)
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*attackers, return_exceptions=True)
    after = edge.totals()
    print(f"\nbeside 330 slow callers: {len(latencies)} requests, max {max(latencies):.2f} s")
    assert max(latencies) < 2.0
    assert after["alpha"] - before["alpha"] == 20  # no slow head ever became a request
    assert "slowloris" not in "".join(edge.origins["alpha"].paths)
    assert after["guarded"] == before["guarded"]


async def test_websocket_upgrade_reaches_only_its_tunnel(edge: Edge) -> None:
    """An upgrade to a tunnel's URL goes to that tunnel's local server (the origin
    accepts WebSockets), whose 101 the caller gets as it is; no other tunnel sees it."""
    before = edge.totals()
    request = get(
        "/a/alpha/",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    )
    response = await raw_exchange(edge.relay.port, request, within=10)
    assert response.status == 101 and response.values("x-edge-error") == []
    seen = {name: n - before[name] for name, n in edge.totals().items()}
    assert all(n == 0 for name, n in seen.items() if name != "alpha"), seen
