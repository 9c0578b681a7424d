"""Section 11: the "next" generation (delivery modes, inbound secret, caller credentials,
loud body limits, poll queueing, the canvas push-async cap)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import pytest
from aiohttp import web

from devplatform.config import MAX_PROXY_REQUEST_BODY_NEXT, ProxyLimits
from tests.devplatform.conftest import ADMIN, Dev, PlatformFactory, Upstream, bearer, echo_jsonrpc

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
MESSAGE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "message/send",
    "params": {"message": {"role": "user", "messageId": "n-1", "parts": []}},
}


async def test_register_push_returns_mode_and_inbound_secret(dev_next: Dev) -> None:
    workspace_id, token = await dev_next.create_external()
    response = await dev_next.register(
        workspace_id, "http://localhost:9/a2a", token, delivery_mode="push"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "registered" and body["delivery_mode"] == "push"
    secret = body["platform_inbound_secret"]
    assert TOKEN_RE.match(secret) and secret != token
    beat = await dev_next.heartbeat(workspace_id, token)
    assert beat.json() == {"status": "ok", "platform_inbound_secret": secret}
    again = await dev_next.register(workspace_id, "http://localhost:9/a2a", token)
    assert again.json()["platform_inbound_secret"] == secret  # same value every call
    assert again.json()["delivery_mode"] == "push"  # kept from the row


async def test_created_rows_default_to_push_and_keep_the_url(dev_next: Dev) -> None:
    # Migration 045 (NOT NULL DEFAULT 'push') and Create writing push: a register that
    # names no mode (the Molecule SDK's) stays push and its URL is stored.
    workspace_id, token = await dev_next.create_external()
    response = await dev_next.register(workspace_id, "http://localhost:9/a2a", token)
    assert response.status_code == 200
    assert response.json()["delivery_mode"] == "push"
    row = await dev_next.client.get(f"/workspaces/{workspace_id}")
    assert row.json()["url"] == "http://localhost:9/a2a"


async def test_poll_only_when_asked_and_then_kept_by_the_row(dev_next: Dev) -> None:
    workspace_id, token = await dev_next.create_external()
    polled = await dev_next.register(
        workspace_id, "http://localhost:9/x", token, delivery_mode="poll"
    )
    assert polled.json()["delivery_mode"] == "poll"
    row = await dev_next.client.get(f"/workspaces/{workspace_id}")
    assert row.json()["url"] == ""  # poll: the URL is ignored
    again = await dev_next.register(workspace_id, "http://localhost:9/x", token)
    assert again.json()["delivery_mode"] == "poll"  # the row answers before the default
    pushed = await dev_next.register(
        workspace_id, "http://localhost:9/x", token, delivery_mode="push"
    )
    assert pushed.json()["delivery_mode"] == "push"


async def test_heartbeat_brings_awaiting_agent_online(dev_next: Dev) -> None:
    workspace_id, token = await dev_next.create_external()
    before = await dev_next.client.get(f"/workspaces/{workspace_id}")
    assert before.json()["status"] == "awaiting_agent"
    assert (await dev_next.heartbeat(workspace_id, token)).status_code == 200
    after = await dev_next.client.get(f"/workspaces/{workspace_id}")
    assert after.json()["status"] == "online"


async def test_new_rows_default_to_push(dev_next: Dev) -> None:
    response = await dev_next.register(str(uuid.uuid4()), "http://localhost:9/a2a")
    assert response.json()["delivery_mode"] == "push"
    assert "auth_token" in response.json()


@pytest.mark.parametrize(
    ("extra", "url", "error"),
    [
        (
            {"delivery_mode": "carrier-pigeon"},
            "http://localhost:9/",
            "delivery_mode must be 'push' or 'poll'",
        ),
        ({"delivery_mode": "push"}, None, "url is required for push-mode workspaces"),
        ({"delivery_mode": "push"}, "http://127.0.0.1:9/", "invalid request body"),
    ],
)
async def test_register_errors(
    dev_next: Dev, extra: dict[str, str], url: str | None, error: str
) -> None:
    response = await dev_next.register(str(uuid.uuid4()), url, **extra)
    assert (response.status_code, response.json()) == (400, {"error": error})


async def test_poll_without_url_is_accepted(dev_next: Dev) -> None:
    response = await dev_next.register(str(uuid.uuid4()), None, delivery_mode="poll")
    assert response.status_code == 200 and response.json()["delivery_mode"] == "poll"


async def test_proxy_sends_the_inbound_secret(dev_next: Dev, upstream: Upstream) -> None:
    workspace_id, token = await dev_next.registered(upstream.url)
    secret = (await dev_next.heartbeat(workspace_id, token)).json()["platform_inbound_secret"]
    response = await dev_next.client.post(
        f"/workspaces/{workspace_id}/a2a", json=MESSAGE, headers=bearer(token)
    )
    assert response.status_code == 200
    assert upstream.seen[0].headers["Authorization"] == f"Bearer {secret}"


async def test_every_caller_needs_a_credential(dev_next: Dev, upstream: Upstream) -> None:
    target, target_token = await dev_next.registered(upstream.url, name="target")
    _, caller_token = await dev_next.create_external(name="caller")
    path = f"/workspaces/{target}/a2a"
    anonymous = await dev_next.client.post(path, json=MESSAGE)
    assert (anonymous.status_code, anonymous.json()) == (
        401,
        {"error": "missing caller auth token"},
    )
    invalid = await dev_next.client.post(path, json=MESSAGE, headers=bearer("x" * 43))
    assert (invalid.status_code, invalid.json()) == (401, {"error": "invalid caller auth token"})
    mismatch = await dev_next.client.post(
        path, json=MESSAGE, headers={"X-Workspace-ID": target, **bearer(caller_token)}
    )
    assert (mismatch.status_code, mismatch.json()) == (
        401,
        {"error": "caller ID does not match workspace auth token"},
    )
    by_token = await dev_next.client.post(path, json=MESSAGE, headers=bearer(caller_token))
    assert by_token.status_code == 200  # the token names the caller (a root-level sibling)
    by_admin = await dev_next.client.post(path, json=MESSAGE, headers=ADMIN)
    assert by_admin.status_code == 200
    self_call = await dev_next.client.post(path, json=MESSAGE, headers=bearer(target_token))
    assert self_call.status_code == 200


async def test_request_body_over_16_mib_is_413(dev_next: Dev, upstream: Upstream) -> None:
    workspace_id, token = await dev_next.registered(upstream.url)
    body = b"x" * (MAX_PROXY_REQUEST_BODY_NEXT + 1)
    response = await dev_next.client.post(
        f"/workspaces/{workspace_id}/a2a", content=body, headers=bearer(token)
    )
    assert response.status_code == 413
    assert response.json() == {
        "error": "request body exceeds 16777216 byte limit: A2A body exceeds size limit",
        "truncated": True,
        "max_bytes": 16777216,
    }
    assert upstream.seen == []


async def test_response_over_the_limit_is_a_loud_502(
    make_platform: PlatformFactory, upstream: Upstream
) -> None:
    dev = await make_platform("next", proxy=ProxyLimits(max_response_body=1024))

    async def big(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(body=b"z" * 4096)

    upstream.behaviour = big
    workspace_id, token = await dev.registered(upstream.url)
    response = await dev.client.post(
        f"/workspaces/{workspace_id}/a2a", json=MESSAGE, headers=bearer(token)
    )
    assert (response.status_code, response.json()) == (
        502,
        {
            "error": "response body exceeds 1024 byte limit: A2A body exceeds size limit",
            "delivery_confirmed": True,
            "truncated": True,
            "max_bytes": 1024,
        },
    )


async def test_poll_mode_queues_without_sending(dev_next: Dev, upstream: Upstream) -> None:
    workspace_id, token = await dev_next.create_external()
    await dev_next.register(workspace_id, None, token, delivery_mode="poll")
    response = await dev_next.client.post(
        f"/workspaces/{workspace_id}/a2a", json=MESSAGE, headers=ADMIN
    )
    assert (response.status_code, response.json()) == (
        200,
        {"status": "queued", "delivery_mode": "poll", "method": "message/send"},
    )
    assert upstream.seen == []
    rows = await dev_next.client.get(
        f"/workspaces/{workspace_id}/activity?type=a2a_receive", headers=bearer(token)
    )
    [row] = rows.json()
    assert row["request_body"] == json.loads(json.dumps(MESSAGE))
    assert row["summary"].endswith("(queued for poll)")


async def test_canvas_callers_get_push_async_after_the_sync_wait(
    make_platform: PlatformFactory, upstream: Upstream
) -> None:
    dev = await make_platform("next", proxy=ProxyLimits(canvas_sync_wait=0.3))

    async def slow(request: web.Request, body: bytes) -> web.StreamResponse:
        await asyncio.sleep(0.8)
        return await echo_jsonrpc(request, body)

    upstream.behaviour = slow
    workspace_id, _ = await dev.registered(upstream.url)
    response = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE, headers=ADMIN)
    assert (response.status_code, response.json()) == (
        200,
        {"status": "queued", "delivery_mode": "push-async"},
    )
    assert len(upstream.seen) == 1  # the call goes on in the background


async def test_created_with_url_has_a_secret_from_creation(
    dev_next: Dev, upstream: Upstream
) -> None:
    created = await dev_next.create(url=upstream.url)
    workspace_id = created.json()["id"]
    response = await dev_next.client.post(
        f"/workspaces/{workspace_id}/a2a", json=MESSAGE, headers=ADMIN
    )
    assert response.status_code == 200
    assert upstream.seen[0].headers["Authorization"].startswith("Bearer ")


async def test_missing_secret_is_minted_with_a_503_once(dev_next: Dev, upstream: Upstream) -> None:
    created = await dev_next.create(url=upstream.url)
    workspace_id = created.json()["id"]
    dev_next.server.platform.workspaces.update(workspace_id, platform_inbound_secret=None)
    first = await dev_next.client.post(
        f"/workspaces/{workspace_id}/a2a", json=MESSAGE, headers=ADMIN
    )
    assert first.status_code == 503
    assert first.json()["error"] == "workspace re-registering — please retry in 30 seconds"
    second = await dev_next.client.post(
        f"/workspaces/{workspace_id}/a2a", json=MESSAGE, headers=ADMIN
    )
    assert second.status_code == 200
