"""Contract rows 6, 6b (secrets) and 15 (tokens)."""

from __future__ import annotations

import pytest

from devplatform.config import MAX_TOKENS_PER_WORKSPACE
from tests.devplatform.conftest import ADMIN, Dev, bearer


async def test_values_are_a_flat_map_with_workspace_overrides(dev: Dev) -> None:
    workspace_id, token = await dev.create_external()
    values = f"/workspaces/{workspace_id}/secrets/values"
    assert (await dev.client.get(values, headers=bearer(token))).json() == {}
    for key, value in (("SHARED", "global"), ("ONLY_GLOBAL", "g")):
        saved = await dev.client.post(
            "/admin/secrets", json={"key": key, "value": value}, headers=ADMIN
        )
        assert saved.json() == {"status": "saved", "key": key, "scope": "global"}
    own = await dev.client.post(
        f"/workspaces/{workspace_id}/secrets",
        json={"key": "SHARED", "value": "mine"},
        headers=ADMIN,
    )
    assert (own.status_code, own.json()) == (200, {"status": "saved", "key": "SHARED"})
    put = await dev.client.put(
        f"/workspaces/{workspace_id}/secrets",
        json={"key": "API", "value": "k"},
        headers=bearer(token),
    )
    assert put.status_code == 200
    got = await dev.client.get(values, headers=bearer(token))
    assert got.json() == {"SHARED": "mine", "ONLY_GLOBAL": "g", "API": "k"}


async def test_keys_list_has_no_values(dev: Dev) -> None:
    workspace_id, token = await dev.create_external(secrets={"API": "v4lu3"})
    await dev.client.post("/admin/secrets", json={"key": "G", "value": "gv4lu3"}, headers=ADMIN)
    listed = await dev.client.get(f"/workspaces/{workspace_id}/secrets", headers=bearer(token))
    assert listed.status_code == 200
    assert [(s["key"], s["scope"], s["has_value"]) for s in listed.json()] == [
        ("API", "workspace", True),
        ("G", "global", True),
    ]
    assert set(listed.json()[0]) == {"key", "has_value", "scope", "created_at", "updated_at"}
    assert "v4lu3" not in listed.text


async def test_values_auth_and_id_checks(dev: Dev) -> None:
    workspace_id, _token = await dev.create_external()
    path = f"/workspaces/{workspace_id}/secrets/values"
    assert (await dev.client.get(path)).json() == {"error": "missing workspace auth token"}
    # Admin passes WorkspaceAuth but not the handler re-check once a token is live.
    assert (await dev.client.get(path, headers=ADMIN)).json() == {
        "error": "invalid workspace auth token"
    }
    upper = f"/workspaces/{workspace_id.upper()}/secrets/values"
    bad = await dev.client.get(upper, headers=ADMIN)
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid workspace ID"})


@pytest.mark.parametrize(
    ("body", "status"),
    [({"key": "A"}, 400), ({"value": "v"}, 400), ({"key": "A", "value": ""}, 400), ({}, 400)],
)
async def test_set_requires_key_and_value(dev: Dev, body: dict[str, str], status: int) -> None:
    workspace_id, _ = await dev.create_external()
    response = await dev.client.post(
        f"/workspaces/{workspace_id}/secrets", json=body, headers=ADMIN
    )
    assert response.status_code == status
    assert "required" in response.json()["error"]


async def test_delete_secret(dev: Dev) -> None:
    workspace_id, token = await dev.create_external(secrets={"A": "1"})
    path = f"/workspaces/{workspace_id}/secrets/A"
    assert (await dev.client.delete(path, headers=bearer(token))).json() == {
        "status": "deleted",
        "key": "A",
    }
    missing = await dev.client.delete(path, headers=bearer(token))
    assert (missing.status_code, missing.json()) == (404, {"error": "secret not found"})


async def test_tokens_list_create_revoke(dev: Dev) -> None:
    workspace_id, token = await dev.create_external()
    path = f"/workspaces/{workspace_id}/tokens"
    created = await dev.client.post(path, headers=bearer(token))
    assert created.status_code == 201
    body = created.json()
    assert body["workspace_id"] == workspace_id
    assert body["message"] == "Save this token now — it cannot be retrieved again."
    second = body["auth_token"]
    listed = (await dev.client.get(path, headers=ADMIN)).json()
    assert listed["count"] == 2
    assert [t["prefix"] for t in listed["tokens"]] == [second[:8], token[:8]]  # newest first
    assert set(listed["tokens"][0]) == {"id", "prefix", "created_at", "last_used_at"}

    first_id = listed["tokens"][1]["id"]
    revoked = await dev.client.delete(f"{path}/{first_id}", headers=bearer(second))
    assert (revoked.status_code, revoked.json()) == (200, {"status": "revoked"})
    again = await dev.client.delete(f"{path}/{first_id}", headers=bearer(second))
    assert (again.status_code, again.json()) == (
        404,
        {"error": "token not found or already revoked"},
    )
    state = await dev.client.get(f"/workspaces/{workspace_id}/state", headers=bearer(token))
    assert (state.status_code, state.json()) == (401, {"error": "invalid workspace auth token"})


async def test_token_limit(dev: Dev) -> None:
    workspace_id, _ = await dev.create_external()
    path = f"/workspaces/{workspace_id}/tokens"
    for _ in range(MAX_TOKENS_PER_WORKSPACE - 1):
        assert (await dev.client.post(path, headers=ADMIN)).status_code == 201
    refused = await dev.client.post(path, headers=ADMIN)
    assert (refused.status_code, refused.json()) == (
        429,
        {"error": "maximum 50 active tokens per workspace"},
    )


async def test_tokens_need_workspace_auth(dev: Dev) -> None:
    workspace_id, _ = await dev.create_external()
    other, other_token = await dev.create_external()
    path = f"/workspaces/{workspace_id}/tokens"
    assert (await dev.client.get(path)).json() == {"error": "missing workspace auth token"}
    assert (await dev.client.post(path, headers=bearer(other_token))).json() == {
        "error": "invalid workspace auth token"
    }
    assert other != workspace_id
