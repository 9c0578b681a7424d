"""Contract rows 9, 10, 11: peers, discover, check-access (sections 3.9, 3.10, 8)."""

from __future__ import annotations

import uuid

from tests.devplatform.conftest import ADMIN, Dev, bearer


async def test_peers_of_a_root_workspace_are_the_other_roots_and_its_children(dev: Dev) -> None:
    me, token = await dev.registered("http://localhost:9/a2a", name="me", role="Researcher")
    other_root, _ = await dev.create_external(name="other")
    child, _ = await dev.create_external(name="kid", parent_id=me)
    response = await dev.client.get(f"/registry/{me}/peers", headers=bearer(token))
    assert response.status_code == 200
    peers = {p["id"]: p for p in response.json()}
    assert set(peers) == {other_root, child}
    assert set(peers[child]) == {
        "id", "name", "role", "tier", "status", "agent_card", "url", "parent_id", "active_tasks",
    }  # fmt: skip
    assert peers[child]["parent_id"] == me and peers[child]["url"] == ""
    assert peers[other_root]["role"] is None and peers[other_root]["agent_card"] is None
    filtered = await dev.client.get(f"/registry/{me}/peers?q=KID", headers=bearer(token))
    assert [p["id"] for p in filtered.json()] == [child]


async def test_peers_of_a_child_are_siblings_and_parent(dev: Dev) -> None:
    parent, _ = await dev.create_external(name="pm")
    me, token = await dev.create_external(name="dev", parent_id=parent)
    sibling, _ = await dev.create_external(name="qa", parent_id=parent)
    removed, _ = await dev.create_external(name="gone", parent_id=parent)
    await dev.client.delete(f"/workspaces/{removed}", headers=ADMIN)
    await dev.create_external(name="unrelated-root")
    response = await dev.client.get(f"/registry/{me}/peers", headers=bearer(token))
    assert sorted(p["name"] for p in response.json()) == ["pm", "qa"]
    assert sibling in {p["id"] for p in response.json()}


async def test_peers_errors(dev: Dev) -> None:
    me, _ = await dev.create_external()
    missing = await dev.client.get(f"/registry/{me}/peers")
    assert (missing.status_code, missing.json()) == (401, {"error": "missing workspace auth token"})
    unknown = await dev.client.get(f"/registry/{uuid.uuid4()}/peers")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "workspace not found"})


async def test_discover(dev: Dev) -> None:
    caller, caller_token = await dev.registered("http://localhost:9/a2a", name="caller")
    target, _ = await dev.registered("http://localhost:8/a2a", name="target")
    headers = {"X-Workspace-ID": caller, **bearer(caller_token)}
    found = await dev.client.get(f"/registry/discover/{target}", headers=headers)
    # Both are external: the registered URL comes back as is.
    assert found.json() == {"id": target, "url": "http://localhost:8/a2a", "name": "target"}

    no_header = await dev.client.get(f"/registry/discover/{target}", headers=bearer(caller_token))
    assert (no_header.status_code, no_header.json()) == (
        400,
        {"error": "X-Workspace-ID header is required"},
    )
    no_token = await dev.client.get(
        f"/registry/discover/{target}", headers={"X-Workspace-ID": caller}
    )
    assert no_token.json() == {"error": "missing workspace auth token"}


async def test_discover_hierarchy_and_unavailable(dev: Dev) -> None:
    team_a, _ = await dev.create_external(name="a")
    team_b, _ = await dev.create_external(name="b")
    a_dev, a_token = await dev.create_external(name="a-dev", parent_id=team_a)
    b_dev, _ = await dev.create_external(name="b-dev", parent_id=team_b)
    headers = {"X-Workspace-ID": a_dev, **bearer(a_token)}
    denied = await dev.client.get(f"/registry/discover/{b_dev}", headers=headers)
    assert (denied.status_code, denied.json()) == (
        403,
        {"error": "not authorized to discover this workspace"},
    )
    # The parent is reachable, but it has no URL and is not online.
    parent = await dev.client.get(f"/registry/discover/{team_a}", headers=headers)
    assert (parent.status_code, parent.json()) == (
        503,
        {"error": "workspace not available", "status": "provisioning"},
    )


async def test_check_access(dev: Dev) -> None:
    root, _ = await dev.create_external(name="root")
    child, _ = await dev.create_external(name="child", parent_id=root)
    grandchild, _ = await dev.create_external(name="gc", parent_id=child)
    other, _ = await dev.create_external(name="other")
    other_child, _ = await dev.create_external(name="oc", parent_id=other)

    async def allowed(caller: str, target: str) -> bool:
        body = {"caller_id": caller, "target_id": target}
        response = await dev.client.post("/registry/check-access", json=body)
        assert response.status_code == 200
        result: bool = response.json()["allowed"]
        return result

    assert await allowed(root, other)  # root-level siblings
    assert await allowed(root, grandchild)  # ancestor -> descendant
    assert await allowed(grandchild, root)  # descendant -> ancestor
    assert not await allowed(grandchild, other_child)
    assert not await allowed(child, other)
    assert not await allowed(root, str(uuid.uuid4()))
    bad = await dev.client.post("/registry/check-access", json={"caller_id": root})
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid request body"})
