"""Contract rows 3 and 4: ``POST /registry/heartbeat`` and ``/registry/update-card``."""

from __future__ import annotations

import uuid

import pytest

from tests.devplatform.conftest import ADMIN, Dev, bearer

GENERIC = {"error": "invalid request body"}


async def test_heartbeat_ok(dev: Dev) -> None:
    workspace_id, token = await dev.registered("http://localhost:9/a2a")
    response = await dev.heartbeat(
        workspace_id, token, error_rate=0, sample_error="", current_task="x", monthly_spend=5
    )
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    "fields",
    [
        {"active_tasks": 1.5},
        {"active_tasks": 1.0},
        {"uptime_seconds": 3.25},
        {"active_tasks": "1"},
        {"active_tasks": True},
        {"active_tasks": 1 << 64},
        {"error_rate": "low"},
        {"monthly_spend": 0.5},
        {"runtime_metadata": "fast"},
        {"runtime_metadata": {"idle_timeout_seconds": 1.5}},
    ],
)
async def test_integer_fields_must_be_json_integers(dev: Dev, fields: dict[str, object]) -> None:
    workspace_id, token = await dev.registered("http://localhost:9/a2a")
    response = await dev.heartbeat(workspace_id, token, **fields)
    assert (response.status_code, response.json()) == (400, GENERIC)


async def test_empty_workspace_id_is_refused(dev: Dev) -> None:
    response = await dev.client.post("/registry/heartbeat", json={"workspace_id": ""})
    assert (response.status_code, response.json()) == (400, GENERIC)


async def test_error_rate_accepts_an_integer(dev: Dev) -> None:
    workspace_id, token = await dev.registered("http://localhost:9/a2a")
    assert (await dev.heartbeat(workspace_id, token, error_rate=0)).status_code == 200


async def test_heartbeat_auth(dev: Dev) -> None:
    workspace_id, _token = await dev.registered("http://localhost:9/a2a")
    missing = await dev.heartbeat(workspace_id, None)
    assert (missing.status_code, missing.json()) == (401, {"error": "missing workspace auth token"})
    admin = await dev.client.post(
        "/registry/heartbeat", json={"workspace_id": workspace_id}, headers=ADMIN
    )
    assert (admin.status_code, admin.json()) == (401, {"error": "invalid workspace auth token"})


async def test_unknown_workspace_is_accepted(dev: Dev) -> None:
    response = await dev.heartbeat(str(uuid.uuid4()), None)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def status_of(dev: Dev, workspace_id: str) -> str:
    row = await dev.client.get(f"/workspaces/{workspace_id}")
    status: str = row.json()["status"]
    return status


async def test_status_transitions(dev: Dev) -> None:
    workspace_id, token = await dev.registered("http://localhost:9/a2a")
    await dev.heartbeat(workspace_id, token, error_rate=0.6)
    assert await status_of(dev, workspace_id) == "degraded"
    await dev.heartbeat(workspace_id, token, error_rate=0.2)
    assert await status_of(dev, workspace_id) == "degraded"  # recovery needs < 0.1
    await dev.heartbeat(workspace_id, token, error_rate=0.05)
    assert await status_of(dev, workspace_id) == "online"
    await dev.heartbeat(workspace_id, token, runtime_state="wedged")
    assert await status_of(dev, workspace_id) == "degraded"
    await dev.heartbeat(workspace_id, token, error_rate=0, runtime_state="wedged")
    assert await status_of(dev, workspace_id) == "degraded"  # still wedged
    await dev.heartbeat(workspace_id, token)
    assert await status_of(dev, workspace_id) == "online"


async def test_status_mgmt_capability_keeps_online(dev: Dev) -> None:
    workspace_id, token = await dev.registered("http://localhost:9/a2a")
    metadata = {"capabilities": {"status_mgmt": True}}
    await dev.heartbeat(workspace_id, token, error_rate=0.9, runtime_metadata=metadata)
    assert await status_of(dev, workspace_id) == "online"


async def test_provisioning_goes_online_on_heartbeat(dev: Dev) -> None:
    workspace_id, token = await dev.create_external()
    assert await status_of(dev, workspace_id) == "provisioning"
    await dev.heartbeat(workspace_id, token)
    assert await status_of(dev, workspace_id) == "online"


async def test_update_card_replaces_the_card_only(dev: Dev) -> None:
    workspace_id, token = await dev.registered("http://localhost:9/a2a")
    body = {
        "workspace_id": workspace_id,
        "agent_card": {"name": "renamed", "skills": [{"id": "s"}]},
        "url": "http://localhost:1/elsewhere",  # docs say this works; the code ignores it
    }
    response = await dev.client.post("/registry/update-card", json=body, headers=bearer(token))
    assert (response.status_code, response.json()) == (200, {"status": "updated"})
    row = (await dev.client.get(f"/workspaces/{workspace_id}")).json()
    assert row["agent_card"] == {"name": "renamed", "skills": [{"id": "s"}]}
    assert row["url"] == "http://localhost:9/a2a"


@pytest.mark.parametrize(
    "body", [{}, {"agent_card": {}}, {"workspace_id": "x"}, {"workspace_id": 1, "agent_card": {}}]
)
async def test_update_card_bad_bodies(dev: Dev, body: dict[str, object]) -> None:
    response = await dev.client.post("/registry/update-card", json=body)
    assert (response.status_code, response.json()) == (400, GENERIC)


async def test_update_card_auth(dev: Dev) -> None:
    workspace_id, _ = await dev.registered("http://localhost:9/a2a")
    body = {"workspace_id": workspace_id, "agent_card": {}}
    response = await dev.client.post("/registry/update-card", json=body)
    assert (response.status_code, response.json()) == (
        401,
        {"error": "missing workspace auth token"},
    )
