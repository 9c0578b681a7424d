"""SSE and chunked responses arrive incrementally, over GET and POST, and a stream that
keeps sending has no total timeout.

Incremental is proven by a handshake: after writing event i the origin waits for the
test to release it, and the test releases it only once event i has reached the caller.
A relay or agent that buffered the response would deadlock there (bounded: the wait
for each event fails the test after :data:`EVENT_WITHIN` seconds).
"""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.e2e.client import session
from tests.e2e.conftest import STRICT_RESPONSE_TIMEOUT, Tunnel
from tests.e2e.origin import Origin

#: Seconds an event may take from the origin's write to the caller (a wide margin on a
#: busy 2-core machine; the figures printed are typically a few milliseconds).
EVENT_WITHIN = 5.0


async def _next_event(resp: aiohttp.ClientResponse, buffer: bytearray) -> bytes:
    """Read until one complete ``\\n\\n``-terminated event is buffered; return it."""
    while b"\n\n" not in buffer:
        chunk = await resp.content.readany()
        assert chunk, "the stream ended early"
        buffer += chunk
    event, _, rest = bytes(buffer).partition(b"\n\n")
    buffer[:] = rest
    return event


@pytest.mark.parametrize(
    ("method", "kind"),
    [("GET", "sse"), ("POST", "sse"), ("GET", "chunked"), ("POST", "chunked")],
)
async def test_events_arrive_one_by_one(
    tunnel: Tunnel, origin: Origin, method: str, kind: str
) -> None:
    key, count = f"ev-{method}-{kind}", 5
    chunked = "&chunked=1" if kind == "chunked" else ""
    data = b'{"jsonrpc": "2.0", "method": "message/stream"}' if method == "POST" else None
    timeout = aiohttp.ClientTimeout(total=None, sock_read=EVENT_WITHIN)
    latencies = []
    async with session(timeout=timeout) as http:
        url = tunnel.at(f"events?key={key}&n={count}{chunked}")
        async with http.request(method, url, data=data) as resp:
            assert resp.status == 200
            expected = "text/event-stream" if kind == "sse" else "application/octet-stream"
            assert resp.headers["content-type"] == expected
            assert resp.headers.get("transfer-encoding") == "chunked"
            buffer = bytearray()
            for i in range(count):
                event = await _next_event(resp, buffer)
                latencies.append(time.monotonic() - origin.event_times[key][i])
                assert event == f"id: {i}\ndata: event {i} of {key}".encode()
                # The origin has not written event i+1: it waits for this release.
                assert len(origin.event_times[key]) == i + 1
                origin.release(f"{key}/{i}")
            assert await resp.content.read() == b""
    print(
        f"\n{method} {kind}: origin write -> caller: "
        + ", ".join(f"{s * 1000:.1f} ms" for s in latencies)
    )
    assert max(latencies) < EVENT_WITHIN


async def test_stream_outlives_the_response_timeout(strict: Tunnel, origin: Origin) -> None:
    """The relay's response timeout covers the head only: a stream that keeps sending
    for several times that long runs to its end."""
    key, count, gap = "long-stream", 12, 0.3
    duration = (count - 1) * gap
    assert duration > 3 * STRICT_RESPONSE_TIMEOUT
    timeout = aiohttp.ClientTimeout(total=None, sock_read=EVENT_WITHIN)
    start = time.monotonic()
    async with session(timeout=timeout) as http:
        url = strict.at(f"events?key={key}&n={count}&gap={gap}")
        async with http.post(url, data=b"{}") as resp:
            assert resp.status == 200
            buffer = bytearray()
            events = [await _next_event(resp, buffer) for _ in range(count)]
            assert await resp.content.read() == b""
    elapsed = time.monotonic() - start
    assert events[-1] == f"id: {count - 1}\ndata: event {count - 1} of {key}".encode()
    assert elapsed >= duration
    print(f"\n{count} events over {elapsed:.1f} s (response timeout {STRICT_RESPONSE_TIMEOUT} s)")
