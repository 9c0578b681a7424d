"""A stream with a 30 s pause in the middle survives the tunnel.

The a2a-sdk server sends an SSE keep-alive comment every 15 s while idle, which would
hide an idle cut-off of 30 s or more in the tunnel. So the same pause runs, at the same
time (one ~31 s test), on both tunnels: with those comments (``port``) and on the
in-process agent with them turned off (``app``), where nothing at all crosses the
relay for 30 s. Raw callers beside the SDK clients show what was on the wire.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx

from tests.e2e_a2a.calls import (
    Arrival,
    artifacts,
    chunks_text,
    collect,
    kinds,
    request,
    rpc_body,
    text_of,
)
from tests.e2e_a2a.conftest import Stack
from tests.support.a2a_clients import MakeClient

#: The pause, in seconds: over the ping interval (15 s) and the WebSocket keepalive
#: period (20 s); common proxy idle cut-offs are 30 or 60 s.
GAP = 30.0
SHAPE = {"chunks": 2, "interval": 0.2, "gap": GAP}  # chunk 1, the pause, chunk 2

#: Slack for an event after the pause (a busy machine).
LATE = 2.0


async def sdk_stream(make_client: MakeClient, url: str) -> list[Arrival]:
    client = await make_client(url)
    return await collect(client, request("after the pause", **SHAPE), within=GAP + 30)


async def raw_stream(http: httpx.AsyncClient, url: str) -> list[tuple[float, bytes]]:
    """The response body as it arrived: (seconds since the request, bytes)."""
    body = rpc_body("SendStreamingMessage", "raw", **SHAPE)
    headers = {"A2A-Version": "1.0", "Accept": "text/event-stream"}
    start, chunks = time.monotonic(), []
    async with http.stream("POST", url, json=body, headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for chunk in resp.aiter_raw():
            chunks.append((time.monotonic() - start, chunk))
    return chunks


def longest_silence(chunks: list[tuple[float, bytes]]) -> float:
    times = [t for t, _ in chunks]
    return max(b - a for a, b in itertools.pairwise(times))


def check_sdk(name: str, events: list[Arrival]) -> None:
    expected = ["task", "status_update", "artifact_update", "artifact_update", "status_update"]
    assert kinds(events) == expected, name
    assert events[-1].state == "TASK_STATE_COMPLETED"
    assert text_of(events) == chunks_text("after the pause", 2)
    first, second = (a.at for a in artifacts(events))
    print(f"\n{name}: SDK stream, artifacts {second - first:.2f} s apart")
    assert GAP - 0.1 <= second - first <= GAP + LATE, name


async def test_stream_survives_a_30s_silence(
    stack: Stack, make_client: MakeClient, http: httpx.AsyncClient
) -> None:
    port, app = stack.tunnels["port"], stack.tunnels["app"]
    assert port.pings and not app.pings
    async with asyncio.timeout(GAP + 45):
        sdk_port, sdk_app, raw_port, raw_app = await asyncio.gather(
            sdk_stream(make_client, port.url),
            sdk_stream(make_client, app.url),
            raw_stream(http, port.url),
            raw_stream(http, app.url),
        )
    check_sdk("port (pings)", sdk_port)
    check_sdk("app (silent)", sdk_app)

    pings = [t for t, c in raw_port if b": ping" in c]
    silence = longest_silence(raw_app)
    print(
        f"raw: port saw pings at {', '.join(f'{t:.1f}' for t in pings)} s; "
        f"app's longest silence {silence:.1f} s"
    )
    # With pings, the comment crossed the tunnel mid-pause (it is not dropped)...
    assert len(pings) >= 1 and GAP / 3 < pings[0] < GAP
    assert longest_silence(raw_port) < GAP - 5
    # ...without, not one byte came for the whole pause, and the stream still ended well.
    assert GAP - 0.5 <= silence <= GAP + LATE
    tail = b"".join(c for _, c in raw_app)
    assert tail.count(b"data: ") == 5 and b"TASK_STATE_COMPLETED" in tail
