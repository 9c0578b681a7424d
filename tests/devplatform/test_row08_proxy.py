"""Contract row 8: ``POST /workspaces/:id/a2a`` in "current" (sections 3.8 and 7),
against a real agent server on 127.0.0.1 registered as ``http://localhost:PORT/a2a``."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from aiohttp import web

from devplatform.config import MAX_PROXY_REQUEST_BODY_CURRENT, MAX_PROXY_RESPONSE_BODY_CURRENT
from tests.devplatform.conftest import ADMIN, Dev, PlatformFactory, Upstream, bearer

MESSAGE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "message/send",
    "params": {
        "message": {"role": "user", "messageId": "m-1", "parts": [{"kind": "text", "text": "hi"}]}
    },
}


async def test_call_reaches_the_agent_and_the_answer_comes_back(
    dev: Dev, upstream: Upstream
) -> None:
    workspace_id, _ = await dev.registered(upstream.url)
    response = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["id"] == 7 and response.json()["result"]["role"] == "agent"
    [seen] = upstream.seen
    assert seen.path == "/a2a"  # exactly as registered, nothing appended
    assert seen.headers["Content-Type"] == "application/json"
    assert "Authorization" not in seen.headers  # "current" sends no platform credential
    assert "X-Workspace-ID" not in seen.headers
    assert json.loads(seen.body) == MESSAGE


async def test_envelope_and_message_id_are_added(dev: Dev, upstream: Upstream) -> None:
    workspace_id, _ = await dev.registered(upstream.url)
    bare = {"method": "message/send", "params": {"message": {"role": "user", "parts": []}}}
    await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=bare)
    sent = json.loads(upstream.seen[0].body)
    assert sent["jsonrpc"] == "2.0" and uuid.UUID(sent["id"])
    assert uuid.UUID(sent["params"]["message"]["messageId"])


async def test_response_is_buffered_not_streamed(dev: Dev, upstream: Upstream) -> None:
    async def slow_stream(request: web.Request, _body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index in range(3):
            await response.write(f'data: {{"chunk": {index}}}\n\n'.encode())
            await asyncio.sleep(0.25)
        await response.write_eof()
        return response

    upstream.behaviour = slow_stream
    workspace_id, _ = await dev.registered(upstream.url)
    started = time.monotonic()
    async with dev.client.stream("POST", f"/workspaces/{workspace_id}/a2a", json=MESSAGE) as answer:
        first_byte_after = None
        received = b""
        async for chunk in answer.aiter_raw():
            if first_byte_after is None:
                first_byte_after = time.monotonic() - started
            received += chunk
    assert answer.headers["content-type"] == "application/json"  # not text/event-stream
    assert received.count(b"data:") == 3
    # Nothing reached the caller before the agent had sent everything (~0.75 s).
    assert first_byte_after is not None and first_byte_after >= 0.6


@pytest.mark.parametrize(
    ("status", "agent_body", "expected"),
    [
        (400, {"error": "bad params"}, {"error": "bad params"}),
        (500, {"error": {"code": -1}}, {"error": "Internal Server Error"}),
        (503, "not json", {"error": "Service Unavailable"}),
        (302, "", {"error": "Found"}),
    ],
)
async def test_agent_errors_are_relayed_as_error_bodies(
    dev: Dev, upstream: Upstream, status: int, agent_body: object, expected: dict[str, str]
) -> None:
    async def failing(_request: web.Request, _body: bytes) -> web.StreamResponse:
        text = agent_body if isinstance(agent_body, str) else json.dumps(agent_body)
        return web.Response(status=status, text=text, headers={"Location": "http://localhost:1/"})

    upstream.behaviour = failing
    workspace_id, _ = await dev.registered(upstream.url)
    response = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    assert (response.status_code, response.json()) == (status, expected)
    assert len(upstream.seen) == 1  # a redirect is not followed


async def test_503_without_url_and_404_without_workspace(dev: Dev) -> None:
    workspace_id, _ = await dev.create_external()
    no_url = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    assert (no_url.status_code, no_url.json()) == (
        503,
        {"error": "workspace has no URL", "status": "provisioning"},
    )
    unknown = await dev.client.post(f"/workspaces/{uuid.uuid4()}/a2a", json=MESSAGE)
    assert (unknown.status_code, unknown.json()) == (404, {"error": "workspace not found"})


async def test_ssrf_at_dispatch_refuses_127_0_0_1(dev: Dev, upstream: Upstream) -> None:
    # Create does not check the URL; dispatch does. Same live server, by IP literal.
    created = await dev.create(url=f"http://127.0.0.1:{upstream.port}/a2a")
    response = await dev.client.post(f"/workspaces/{created.json()['id']}/a2a", json=MESSAGE)
    assert (response.status_code, response.json()) == (
        502,
        {"error": "workspace URL is not publicly routable"},
    )
    assert upstream.seen == []


async def test_strict_dispatch_refuses_localhost_too(
    make_platform: PlatformFactory, upstream: Upstream
) -> None:
    dev = await make_platform(dispatch_localhost=False)
    workspace_id, _ = await dev.registered(upstream.url)  # register allows the name
    response = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    assert response.json() == {"error": "workspace URL is not publicly routable"}
    assert upstream.seen == []


async def test_connection_refused_is_502_and_not_queued(dev: Dev) -> None:
    closed = await _closed_port()
    workspace_id, _ = await dev.registered(f"http://localhost:{closed}/a2a")
    response = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    assert (response.status_code, response.json()) == (
        502,
        {"error": "failed to reach workspace agent"},
    )
    assert dev.server.platform.queue.depth(workspace_id) == 0


async def _closed_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port


async def test_request_body_limit_current_truncates_to_invalid_json(
    dev: Dev, upstream: Upstream
) -> None:
    workspace_id, _ = await dev.registered(upstream.url)
    text = "x" * MAX_PROXY_REQUEST_BODY_CURRENT
    body = json.dumps(
        {**MESSAGE, "params": {"message": {**MESSAGE["params"]["message"], "pad": text}}}
    )
    response = await dev.client.post(f"/workspaces/{workspace_id}/a2a", content=body)
    assert (response.status_code, response.json()) == (400, {"error": "invalid JSON"})
    assert upstream.seen == []
    fits = json.dumps({**MESSAGE, "pad": "x" * (MAX_PROXY_REQUEST_BODY_CURRENT - 1000)})
    ok = await dev.client.post(f"/workspaces/{workspace_id}/a2a", content=fits)
    assert ok.status_code == 200


async def test_response_limit_current_truncates_silently(dev: Dev, upstream: Upstream) -> None:
    async def huge(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(body=b"y" * (MAX_PROXY_RESPONSE_BODY_CURRENT + 4096))

    upstream.behaviour = huge
    workspace_id, _ = await dev.registered(upstream.url)
    response = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    assert response.status_code == 200
    assert len(response.content) == MAX_PROXY_RESPONSE_BODY_CURRENT


async def test_caller_checks(dev: Dev, upstream: Upstream) -> None:
    target, _ = await dev.registered(upstream.url, name="target")
    caller, caller_token = await dev.create_external(name="caller")
    path = f"/workspaces/{target}/a2a"
    forged = await dev.client.post(path, json=MESSAGE, headers={"X-Workspace-ID": "system:cron"})
    assert (forged.status_code, forged.json()) == (403, {"error": "invalid caller ID"})
    missing = await dev.client.post(path, json=MESSAGE, headers={"X-Workspace-ID": caller})
    assert (missing.status_code, missing.json()) == (401, {"error": "missing caller auth token"})
    wrong = await dev.client.post(
        path, json=MESSAGE, headers={"X-Workspace-ID": caller, **bearer("nope")}
    )
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid caller auth token"})
    ok = await dev.client.post(
        path, json=MESSAGE, headers={"X-Workspace-ID": caller, **bearer(caller_token)}
    )
    assert ok.status_code == 200
    canvas = await dev.client.post(path, json=MESSAGE)  # no X-Workspace-ID: no check at all
    assert canvas.status_code == 200


async def test_hierarchy_and_budget(dev: Dev, upstream: Upstream) -> None:
    team, _ = await dev.create_external(name="team")
    outsider, outsider_token = await dev.create_external(name="outsider", parent_id=team)
    target, _ = await dev.registered(upstream.url, name="target")
    headers = {"X-Workspace-ID": outsider, **bearer(outsider_token)}
    denied = await dev.client.post(f"/workspaces/{target}/a2a", json=MESSAGE, headers=headers)
    assert (denied.status_code, denied.json()) == (
        403,
        {"error": "access denied: workspaces cannot communicate per hierarchy rules"},
    )
    broke, _ = await dev.registered(upstream.url, name="broke", budget_limit=0)
    response = await dev.client.post(f"/workspaces/{broke}/a2a", json=MESSAGE)
    assert (response.status_code, response.json()) == (
        402,
        {"error": "workspace budget limit exceeded"},
    )


async def test_activity_records_the_call(dev: Dev, upstream: Upstream) -> None:
    workspace_id, token = await dev.registered(upstream.url)
    await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    rows = await dev.client.get(f"/workspaces/{workspace_id}/activity", headers=bearer(token))
    [row] = rows.json()
    assert row["activity_type"] == "a2a_receive" and row["status"] == "ok"
    assert row["request_body"]["params"]["message"]["messageId"] == "m-1"
    assert row["response_body"]["id"] == 7
    assert (
        await dev.client.get(f"/workspaces/{workspace_id}/activity", headers=ADMIN)
    ).status_code == 200
