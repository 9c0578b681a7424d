"""The inspector's JSON API over real sockets: rows newest first, the detail of one,
replay and edit-and-replay against a real local server, the SSE stream of rows, and
the loopback-only guards."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from edge_agent.inspect import tap
from edge_agent.inspect.launch import Inspector, InspectSettings
from edge_agent.target import EmptyBody, HttpTarget, LocalRequest, LocalResponse
from tests.inspect.local import SEEN, Local

SECRET = "Bearer sk-test-0123456789"


@pytest.fixture
async def inspector(local: Local) -> AsyncIterator[tuple[Inspector, HttpTarget]]:
    target = HttpTarget(local.url)
    settings = InspectSettings(port=0, search=False, body_limit=1024)
    inspector = Inspector(settings, target)
    await inspector.start()
    try:
        yield inspector, target
    finally:
        await inspector.aclose()
        await target.aclose()
    assert tap.installed() is None


@pytest.fixture
async def api(inspector: tuple[Inspector, HttpTarget]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=inspector[0].url, timeout=10.0) as client:
        yield client


async def body_of(response: LocalResponse) -> bytes:
    data = b"".join([chunk async for chunk in response.body])
    if response.close is not None:
        await response.close()
    return data


async def forward(target: HttpTarget, method: str, path: str, body: bytes = b"") -> bytes:
    """A request as the tunnel forwards it (through the hook in streams.Stream.run)."""
    headers = [("Authorization", SECRET), ("Content-Type", "application/json")]
    stream: Any = EmptyBody()
    if body:
        headers.append(("Content-Length", str(len(body))))
        stream = _once(body)
    response = await tap.handle(target, LocalRequest(1, method, path, headers, stream))
    return await body_of(response)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def until(api: httpx.AsyncClient, rid: int, state: str = "done") -> dict[str, Any]:
    for _ in range(200):
        detail = (await api.get(f"/api/requests/{rid}")).json()
        if detail["state"] == state:
            return dict(detail)
        await asyncio.sleep(0.02)
    raise AssertionError(f"row {rid} never became {state}: {detail}")


async def test_rows_newest_first_and_a_detail(
    inspector: tuple[Inspector, HttpTarget], api: httpx.AsyncClient
) -> None:
    _, target = inspector
    await forward(target, "POST", "/first?a=1", b'{"hello": "world"}')
    await forward(target, "GET", "/bin")
    rows = (await api.get("/api/requests")).json()
    assert [(r["id"], r["method"], r["path"], r["status"]) for r in rows] == [
        (2, "GET", "/bin", 200),
        (1, "POST", "/first?a=1", 200),
    ]
    for key in ("time", "duration", "bytes"):
        assert rows[0][key] is not None
    assert rows[0]["bytes"] == 2048
    detail = (await api.get("/api/requests/1")).json()
    assert detail["request"]["body"]["encoding"] == "json"
    assert json.loads(detail["request"]["body"]["text"]) == {"hello": "world"}
    assert ["Authorization", "Bearer [masked]"] in detail["request"]["headers"]
    assert ["set-cookie", "s=[masked]"] in detail["response"]["headers"]
    assert "sk-test" not in (await api.get("/api/requests/1")).text
    assert set(detail["timing"]) == {"queued", "first_byte", "done"}
    binary = (await api.get("/api/requests/2")).json()["response"]["body"]
    assert binary["encoding"] == "binary" and binary["truncated"] and binary["captured"] == 1024
    assert (await api.get("/api/requests/99")).status_code == 404


async def test_sse_rows_have_a_timeline(
    inspector: tuple[Inspector, HttpTarget], api: httpx.AsyncClient
) -> None:
    await forward(inspector[1], "GET", "/sse")
    detail = await until(api, 1)
    assert detail["kind"] == "sse"
    assert [(e["event"], e["data"]) for e in detail["timeline"]] == [
        ("tick", '{"n": 0}'),
        ("tick", '{"n": 1}'),
        ("tick", '{"n": 2}'),
    ]
    times = [e["t"] for e in detail["timeline"]]
    assert times == sorted(times) and times[2] - times[0] >= 80


async def test_replay_sends_the_captured_request_again_secrets_included(
    inspector: tuple[Inspector, HttpTarget], api: httpx.AsyncClient
) -> None:
    await forward(inspector[1], "POST", "/first", b'{"n": 1}')
    answer = await api.post("/api/requests/1/replay")
    assert answer.status_code == 200
    new_id = answer.json()["id"]
    detail = await until(api, new_id)
    assert detail["replay_of"] == 1 and detail["status"] == 200
    seen = json.loads(detail["response"]["body"]["text"])
    assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/first", '{"n": 1}')
    assert SEEN[-1]["headers"]["authorization"] == SECRET  # sent as captured...
    assert ["Authorization", "Bearer [masked]"] in detail["request"]["headers"]  # shown masked
    assert seen["headers"]["authorization"] == "Bearer [masked]"  # also where a body echoes it


async def test_edit_and_replay(
    inspector: tuple[Inspector, HttpTarget], api: httpx.AsyncClient
) -> None:
    await forward(inspector[1], "POST", "/first", b'{"n": 1}')
    edits = {
        "method": "PUT",
        "path": "/edited?x=2",
        "headers": [["Authorization", "Bearer [masked]"], ["X-New", "yes"]],
        "body": "changed",
    }
    new_id = (await api.post("/api/requests/1/replay", json=edits)).json()["id"]
    detail = await until(api, new_id)
    seen = json.loads(detail["response"]["body"]["text"])
    assert (seen["method"], seen["path"], seen["query"], seen["body"]) == (
        "PUT",
        "/edited",
        "x=2",
        "changed",
    )
    sent = SEEN[-1]["headers"]
    assert sent["authorization"] == SECRET  # the unchanged masked value: the original
    assert sent["x-new"] == "yes" and "content-type" not in sent


async def test_bad_replays_are_refused(
    inspector: tuple[Inspector, HttpTarget], api: httpx.AsyncClient
) -> None:
    await forward(inspector[1], "GET", "/x")
    cases = [
        ("/api/requests/7/replay", {}, 404),
        ("/api/requests/1/replay", {"method": "GET /"}, 400),
        ("/api/requests/1/replay", {"path": "no-slash"}, 400),
        ("/api/requests/1/replay", {"headers": [["Bad Name", "v"]]}, 400),
        ("/api/requests/1/replay", {"colour": "red"}, 400),
        ("/api/requests/1/replay", [], 400),
    ]
    for path, edits, status in cases:
        answer = await api.post(path, json=edits)
        assert answer.status_code == status, (edits, answer.text)
        assert "error" in answer.json()


async def test_the_events_stream_tells_of_new_and_updated_rows(
    inspector: tuple[Inspector, HttpTarget], api: httpx.AsyncClient
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    async def listen() -> None:
        async with api.stream("GET", "/api/events") as response:
            assert response.headers["content-type"] == "text/event-stream"
            kind = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    seen.append((kind, json.loads(line[6:])))
                    if seen[-1][1]["state"] == "done":
                        return

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.2)
    await forward(inspector[1], "GET", "/sse")  # 0.15 s: a new row, then updates
    await asyncio.wait_for(listener, 5)
    assert seen[0][0] == "new" and seen[-1][0] == "update"
    assert seen[-1][1]["path"] == "/sse" and seen[-1][1]["status"] == 200


async def test_only_loopback_hosts_and_same_origin_posts(
    inspector: tuple[Inspector, HttpTarget], api: httpx.AsyncClient
) -> None:
    await forward(inspector[1], "GET", "/x")
    assert (await api.get("/api/requests", headers={"Host": "evil.example"})).status_code == 421
    port = inspector[0].server.port
    assert (await api.get("/", headers={"Host": f"localhost:{port}"})).status_code == 200
    cross = await api.post("/api/requests/1/replay", headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    same = await api.post("/api/requests/1/replay", headers={"Origin": inspector[0].url})
    assert same.status_code == 200
    assert (await api.delete("/api/requests")).status_code == 405
    assert (await api.get("/nope")).status_code == 404


async def test_the_page_is_served_with_no_outside_resource(api: httpx.AsyncClient) -> None:
    page = await api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # works offline
