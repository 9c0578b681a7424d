"""Section 6: the liveness key (TTL set by register, extended but never recreated
by heartbeat; expiry turns the workspace offline). The TTL is shortened to 0.6 s."""

from __future__ import annotations

import asyncio

from tests.devplatform.conftest import Dev, PlatformFactory, bearer

TTL = 0.8


async def becomes(dev: Dev, workspace_id: str, wanted: str) -> bool:
    """True once the workspace shows ``wanted`` (within 5 s, a wide margin)."""
    for _ in range(100):
        if await status(dev, workspace_id) == wanted:
            return True
        await asyncio.sleep(0.05)
    return False


async def status(dev: Dev, workspace_id: str) -> str:
    value: str = (await dev.client.get(f"/workspaces/{workspace_id}")).json()["status"]
    return value


async def test_heartbeat_extends_but_does_not_recreate(make_platform: PlatformFactory) -> None:
    dev = await make_platform(liveness_ttl=TTL)
    workspace_id, token = await dev.registered("http://localhost:9/a2a")

    for _ in range(6):  # 1.2 s of heartbeats, longer than the TTL: still online
        await asyncio.sleep(TTL / 4)
        await dev.heartbeat(workspace_id, token)
    assert await status(dev, workspace_id) == "online"

    assert await becomes(dev, workspace_id, "offline")  # silence: the key expires

    await dev.heartbeat(workspace_id, token)  # offline -> online ...
    assert await status(dev, workspace_id) == "online"
    await asyncio.sleep(TTL * 1.5)  # ... but no key exists, so nothing expires any more
    assert await status(dev, workspace_id) == "online"
    assert not dev.server.platform.liveness.is_live(workspace_id)

    await dev.register(workspace_id, "http://localhost:9/a2a", token)  # SET again
    assert dev.server.platform.liveness.is_live(workspace_id)
    assert await becomes(dev, workspace_id, "offline")


async def test_expiry_leaves_a_paused_workspace_paused(make_platform: PlatformFactory) -> None:
    dev = await make_platform(liveness_ttl=TTL)
    paused, paused_token = await dev.registered("http://localhost:9/a2a")
    # Pause clears the key; a fresh register while paused sets it again.
    await dev.client.post(f"/workspaces/{paused}/pause", headers=bearer(paused_token))
    dev.server.platform.liveness.set_online(paused)
    await asyncio.sleep(TTL * 1.5)
    assert await status(dev, paused) == "paused"
    assert not dev.server.platform.liveness.is_live(paused)


async def test_state_reports_offline(make_platform: PlatformFactory) -> None:
    dev = await make_platform(liveness_ttl=TTL)
    workspace_id, token = await dev.registered("http://localhost:9/a2a")
    assert await becomes(dev, workspace_id, "offline")
    state = await dev.client.get(f"/workspaces/{workspace_id}/state", headers=bearer(token))
    assert state.json()["status"] == "offline" and state.json()["paused"] is False
