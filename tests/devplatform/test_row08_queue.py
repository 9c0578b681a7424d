"""Contract row 8, sections 7.2 and 7.4: deadlines, the 202 queue, re-send on heartbeat."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from devplatform.config import QUEUE_MAX_ATTEMPTS, ProxyLimits
from tests.devplatform.conftest import Dev, PlatformFactory, Upstream, echo_jsonrpc

MESSAGE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": "rpc-1",
    "method": "message/send",
    "params": {"message": {"role": "user", "messageId": "msg-42", "parts": []}},
}
FAST = ProxyLimits(idle_timeout=0.3)


def slow(seconds: float) -> Any:
    async def behaviour(request: web.Request, body: bytes) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await echo_jsonrpc(request, body)

    return behaviour


async def reset_before_head(request: web.Request, _body: bytes) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.abort()
    await asyncio.sleep(0.05)
    return web.Response()


async def wait_for(condition: Any) -> None:
    """Poll ``condition`` until true; fail after 5 s (a wide margin on a busy machine)."""
    for _ in range(250):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met within 5 s")


async def test_timeout_is_queued_and_resent_on_the_next_heartbeat(
    make_platform: PlatformFactory, upstream: Upstream
) -> None:
    dev = await make_platform(proxy=FAST)
    upstream.behaviour = slow(1.5)
    workspace_id, token = await dev.registered(upstream.url)
    response = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    assert response.status_code == 202
    body = response.json()
    assert body["queued"] is True and body["queue_depth"] == 1
    assert (
        body["message"]
        == "workspace agent busy — request queued, will dispatch when capacity available"
    )
    assert set(body) == {"queued", "queue_id", "queue_depth", "message"}
    assert len(upstream.seen) == 1

    # Same message again while queued: the same queue row (dedup on messageId).
    again = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    assert again.json()["queue_id"] == body["queue_id"] and again.json()["queue_depth"] == 1

    upstream.behaviour = echo_jsonrpc
    busy = await dev.heartbeat(workspace_id, token, active_tasks=1)  # no spare capacity
    assert busy.status_code == 200
    await asyncio.sleep(0.2)
    assert len(upstream.seen) == 2
    await dev.heartbeat(workspace_id, token, active_tasks=0)
    await wait_for(lambda: len(upstream.seen) == 3)
    first, resent = json.loads(upstream.seen[0].body), json.loads(upstream.seen[2].body)
    assert resent == first  # the very same JSON-RPC message, messageId included
    assert resent["params"]["message"]["messageId"] == "msg-42"
    await wait_for(lambda: dev.server.platform.queue.depth(workspace_id) == 0)
    await dev.heartbeat(workspace_id, token, active_tasks=0)
    await asyncio.sleep(0.2)
    assert len(upstream.seen) == 3  # completed: not sent again


async def test_reset_before_the_response_head_is_queued(dev: Dev, upstream: Upstream) -> None:
    upstream.behaviour = reset_before_head
    workspace_id, _ = await dev.registered(upstream.url)
    response = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    assert response.status_code == 202
    assert response.json()["queued"] is True


async def test_reset_after_the_head_is_a_read_failure(dev: Dev, upstream: Upstream) -> None:
    async def cut(request: web.Request, _body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b'{"partial": ')
        assert request.transport is not None
        request.transport.abort()
        return response

    upstream.behaviour = cut
    workspace_id, _ = await dev.registered(upstream.url)
    response = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    assert (response.status_code, response.json()) == (
        502,
        {"error": "failed to read agent response", "delivery_confirmed": True},
    )


async def test_heartbeats_keep_a_long_call_alive(
    make_platform: PlatformFactory, upstream: Upstream
) -> None:
    dev = await make_platform(proxy=ProxyLimits(idle_timeout=0.6))
    upstream.behaviour = slow(1.5)
    workspace_id, token = await dev.registered(upstream.url)

    async def beat() -> None:
        for _ in range(11):
            await asyncio.sleep(0.15)
            await dev.heartbeat(workspace_id, token, active_tasks=1)

    beats = asyncio.create_task(beat())
    response = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    await beats
    assert response.status_code == 200  # 1.5 s > idle 0.6 s, but every heartbeat reset it


async def test_agent_ceiling_and_x_timeout(
    make_platform: PlatformFactory, upstream: Upstream
) -> None:
    dev = await make_platform(proxy=ProxyLimits(agent_ceiling=0.3))
    upstream.behaviour = slow(0.8)
    workspace_id, token = await dev.registered(upstream.url)
    path = f"/workspaces/{workspace_id}/a2a"
    agent = {"X-Workspace-ID": workspace_id, "Authorization": f"Bearer {token}"}
    capped = await dev.client.post(path, json=MESSAGE, headers=agent)
    assert capped.status_code == 202
    canvas = await dev.client.post(path, json={**MESSAGE, "id": "c"}, headers={})
    assert canvas.status_code == 200  # canvas callers have no ceiling
    # The forward is detached from the request context, which drops X-Timeout's
    # deadline and skips the ceiling: only the idle timeout is left.
    message = {
        **MESSAGE,
        "params": {"message": {**MESSAGE["params"]["message"], "messageId": "m2"}},
    }
    timed = await dev.client.post(path, json=message, headers={**agent, "X-Timeout": "60"})
    assert timed.status_code == 200


async def test_a_resend_that_fails_again_stays_queued_until_the_last_attempt(
    make_platform: PlatformFactory, upstream: Upstream
) -> None:
    dev = await make_platform(proxy=FAST)
    upstream.behaviour = reset_before_head
    workspace_id, token = await dev.registered(upstream.url)
    assert (
        await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    ).status_code == 202
    queue = dev.server.platform.queue
    for attempt in range(1, QUEUE_MAX_ATTEMPTS + 1):
        await dev.heartbeat(workspace_id, token, active_tasks=0)
        await wait_for(lambda n=attempt: len(upstream.seen) == n + 1)
        await asyncio.sleep(0.05)
    await wait_for(lambda: queue.depth(workspace_id) == 0)
    status = dev.server.platform.db.scalar("SELECT status FROM a2a_queue")
    assert status == "failed"


async def test_session_capability_answers_503_instead_of_queueing(
    make_platform: PlatformFactory, upstream: Upstream
) -> None:
    dev = await make_platform(proxy=FAST)
    upstream.behaviour = slow(1.0)
    workspace_id, token = await dev.registered(upstream.url)
    await dev.heartbeat(workspace_id, token, runtime_metadata={"capabilities": {"session": True}})
    response = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.json() == {
        "error": "workspace agent busy — adapter handles retry (native_session)",
        "busy": True,
        "retry_after": 30,
        "native_session": True,
    }


async def test_idle_timeout_override_from_runtime_metadata(
    make_platform: PlatformFactory, upstream: Upstream
) -> None:
    dev = await make_platform(proxy=ProxyLimits(idle_timeout=0.3))
    upstream.behaviour = slow(0.6)
    workspace_id, token = await dev.registered(upstream.url)
    await dev.heartbeat(workspace_id, token, runtime_metadata={"idle_timeout_seconds": 5})
    response = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    assert response.status_code == 200
