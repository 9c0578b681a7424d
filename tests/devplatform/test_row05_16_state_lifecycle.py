"""Contract rows 5 and 16: ``GET /workspaces/:id/state``, pause, resume, delete."""

from __future__ import annotations

import uuid

from tests.devplatform.conftest import ADMIN, Dev, Upstream, bearer


async def state(dev: Dev, workspace_id: str, headers: dict[str, str]) -> tuple[int, object]:
    response = await dev.client.get(f"/workspaces/{workspace_id}/state", headers=headers)
    return response.status_code, response.json()


async def test_state_online(dev: Dev) -> None:
    workspace_id, token = await dev.registered("http://localhost:9/a2a")
    expected = {"workspace_id": workspace_id, "status": "online", "paused": False, "deleted": False}
    assert await state(dev, workspace_id, bearer(token)) == (200, expected)


async def test_state_auth(dev: Dev) -> None:
    workspace_id, _token = await dev.registered("http://localhost:9/a2a")
    assert await state(dev, workspace_id, {}) == (401, {"error": "missing workspace auth token"})
    _, other = await dev.create_external()
    assert await state(dev, workspace_id, bearer(other)) == (
        401,
        {"error": "invalid workspace auth token"},
    )
    # WorkspaceAuth lets the admin token in, the handler re-check does not.
    assert await state(dev, workspace_id, ADMIN) == (401, {"error": "invalid workspace auth token"})


async def test_pause_then_resume(dev: Dev, upstream: Upstream) -> None:
    workspace_id, token = await dev.registered(upstream.url)
    paused = await dev.client.post(f"/workspaces/{workspace_id}/pause", headers=bearer(token))
    assert (paused.status_code, paused.json()) == (200, {"status": "paused", "paused_count": 1})
    expected = {"workspace_id": workspace_id, "status": "paused", "paused": True, "deleted": False}
    assert await state(dev, workspace_id, bearer(token)) == (200, expected)
    again = await dev.client.post(f"/workspaces/{workspace_id}/pause", headers=bearer(token))
    assert (again.status_code, again.json()) == (
        404,
        {"error": "workspace not found or already paused"},
    )
    call = {"method": "message/send", "params": {"message": {"role": "user", "parts": []}}}
    proxied = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=call)
    assert proxied.status_code == 503
    assert proxied.json() == {"error": "workspace has no URL", "status": "paused"}
    # Heartbeats are still accepted while paused, and do not unpause.
    assert (await dev.heartbeat(workspace_id, token)).status_code == 200
    assert (await state(dev, workspace_id, bearer(token)))[1]["status"] == "paused"  # type: ignore[index]

    resumed = await dev.client.post(f"/workspaces/{workspace_id}/resume", headers=bearer(token))
    assert (resumed.status_code, resumed.json()) == (
        200,
        {"status": "provisioning", "resumed_count": 1},
    )
    twice = await dev.client.post(f"/workspaces/{workspace_id}/resume", headers=bearer(token))
    assert (twice.status_code, twice.json()) == (
        404,
        {"error": "workspace not found or not paused"},
    )
    await dev.heartbeat(workspace_id, token)
    assert (await state(dev, workspace_id, bearer(token)))[1]["status"] == "online"  # type: ignore[index]
    # Online again, but the URL was cleared by the pause: re-register to be reachable.
    still = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=call)
    assert still.json() == {"error": "workspace has no URL", "status": "online"}
    await dev.register(workspace_id, upstream.url, token)
    reached = await dev.client.post(f"/workspaces/{workspace_id}/a2a", json=call)
    assert reached.status_code == 200


async def test_pause_cascades_and_resume_needs_the_parent_first(dev: Dev) -> None:
    parent, parent_token = await dev.create_external(name="pm")
    child, child_token = await dev.create_external(name="dev", parent_id=parent)
    paused = await dev.client.post(f"/workspaces/{parent}/pause", headers=bearer(parent_token))
    assert paused.json()["paused_count"] == 2
    blocked = await dev.client.post(f"/workspaces/{child}/resume", headers=bearer(child_token))
    assert (blocked.status_code, blocked.json()) == (
        409,
        {"error": 'parent workspace "pm" is paused — resume it first'},
    )
    resumed = await dev.client.post(f"/workspaces/{parent}/resume", headers=ADMIN)
    assert resumed.json()["resumed_count"] == 2


async def test_delete_revokes_tokens_and_state_answers_404_to_admin(dev: Dev) -> None:
    workspace_id, token = await dev.registered("http://localhost:9/a2a")
    by_token = await dev.client.delete(f"/workspaces/{workspace_id}", headers=bearer(token))
    assert (by_token.status_code, by_token.json()) == (401, {"error": "invalid admin auth token"})
    deleted = await dev.client.delete(f"/workspaces/{workspace_id}", headers=ADMIN)
    assert (deleted.status_code, deleted.json()) == (
        200,
        {"status": "removed", "cascade_deleted": 0},
    )
    # The agent's token is revoked: it sees 401 before the handler's 404 (section 3.5).
    assert await state(dev, workspace_id, bearer(token)) == (
        401,
        {"error": "invalid workspace auth token"},
    )
    removed = {"workspace_id": workspace_id, "status": "removed", "deleted": True}
    assert await state(dev, workspace_id, ADMIN) == (404, removed)
    beat = await dev.heartbeat(workspace_id, token)
    assert beat.status_code == 200  # no live token left: the gate is open again


async def test_delete_errors_and_cascade(dev: Dev) -> None:
    assert (await dev.client.delete("/workspaces/x", headers=ADMIN)).json() == {
        "error": "invalid workspace ID"
    }
    assert (await dev.client.delete(f"/workspaces/{uuid.uuid4()}")).status_code == 401
    parent, _ = await dev.create_external(name="pm")
    child, _ = await dev.create_external(name="dev", parent_id=parent)
    refused = await dev.client.delete(f"/workspaces/{parent}", headers=ADMIN)
    assert refused.status_code == 409
    assert refused.json()["status"] == "confirmation_required"
    assert refused.json()["children"] == [{"id": child, "name": "dev"}]
    assert refused.json()["children_count"] == 1
    confirmed = await dev.client.delete(f"/workspaces/{parent}?confirm=true", headers=ADMIN)
    assert confirmed.json() == {"status": "removed", "cascade_deleted": 1}
    assert (await dev.client.get(f"/workspaces/{child}")).json()["status"] == "removed"


async def test_purged_workspace_state_is_the_hard_delete_404(dev: Dev) -> None:
    workspace_id, _ = await dev.registered("http://localhost:9/a2a")
    purged = await dev.client.delete(f"/workspaces/{workspace_id}?purge=true", headers=ADMIN)
    assert purged.json() == {"status": "purged", "cascade_deleted": 0}
    assert await state(dev, workspace_id, ADMIN) == (
        404,
        {"workspace_id": workspace_id, "deleted": True},
    )


async def test_list_and_get(dev: Dev) -> None:
    workspace_id, _ = await dev.registered("http://localhost:9/a2a")
    listed = await dev.client.get("/workspaces", headers=ADMIN)
    assert [w["id"] for w in listed.json()] == [workspace_id]
    assert listed.json()[0]["monthly_spend"] == 0
    single = await dev.client.get(f"/workspaces/{workspace_id}")
    assert "monthly_spend" not in single.json() and single.json()["last_outbound_at"] is None
    assert (await dev.client.get("/workspaces", headers={})).status_code == 401
    assert (await dev.client.get(f"/workspaces/{uuid.uuid4()}")).json() == {
        "error": "workspace not found"
    }
