"""PlatformClient against httpx.MockTransport.

The Molecule platform is outside our control, so these tests stand it in with
``httpx.MockTransport`` handlers that answer with the shapes of the contract document
(status codes and bodies as the platform's code produces them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.molecule.client import MAX_RESPONSE_BYTES, PlatformClient
from edge_agent.molecule.errors import (
    BadRequest,
    MoleculeError,
    NotFound,
    PlatformRejected,
    PlatformUnavailable,
    RateLimited,
    TokenRejected,
    UnexpectedResponse,
)
from edge_agent.molecule.httperrors import MAX_RETRY_AFTER
from edge_agent.molecule.models import WorkspaceState
from edge_agent.molecule.tokens import TokenStore

WS = "3f1c2a9e-0000-4000-8000-000000000001"
TOKEN = "A" * 43
NEW_TOKEN = "b" * 43
SECRET = "s" * 43

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, tmp_path: Path, **kwargs: Any) -> PlatformClient:
    store = TokenStore(WS, tmp_path)
    return PlatformClient(
        "https://platform.example/",
        WS,
        token_store=store,
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


class Recorder:
    """A handler that records requests and answers with one fixed response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response


async def test_first_register_saves_the_issued_token_and_sends_no_bearer(tmp_path: Path) -> None:
    rec = Recorder(httpx.Response(200, json={"status": "registered", "auth_token": NEW_TOKEN}))
    async with client_for(rec, tmp_path) as client:
        result = await client.register("https://relay.example/a/x/", {"name": "edge"})
        assert client.has_token
    [request] = rec.requests
    assert request.url == "https://platform.example/registry/register"
    assert "authorization" not in request.headers
    assert body(request) == {
        "id": WS,
        "url": "https://relay.example/a/x/",
        "agent_card": {"name": "edge"},
        "delivery_mode": "push",
    }
    assert result.token_issued and not result.is_next
    assert TokenStore(WS, tmp_path).load_token() == NEW_TOKEN


async def test_reregister_sends_the_cached_bearer(tmp_path: Path) -> None:
    TokenStore(WS, tmp_path).save_token(TOKEN)
    rec = Recorder(httpx.Response(200, json={"status": "registered"}))
    async with client_for(rec, tmp_path) as client:
        result = await client.register("https://relay.example/a/x/", {}, delivery_mode=None)
    assert rec.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert "delivery_mode" not in body(rec.requests[0])
    assert not result.token_issued


async def test_explicit_token_wins_and_is_cached(tmp_path: Path) -> None:
    TokenStore(WS, tmp_path).save_token(TOKEN)
    rec = Recorder(httpx.Response(200, json={"status": "ok"}))
    async with client_for(rec, tmp_path, token=NEW_TOKEN) as client:
        await client.heartbeat(active_tasks=0, uptime_seconds=0)
    assert rec.requests[0].headers["authorization"] == f"Bearer {NEW_TOKEN}"
    assert TokenStore(WS, tmp_path).load_token() == NEW_TOKEN


async def test_next_generation_register_captures_and_persists_the_inbound_secret(
    tmp_path: Path,
) -> None:
    answer = {"status": "registered", "delivery_mode": "push", "platform_inbound_secret": SECRET}
    rec = Recorder(httpx.Response(200, json=answer))
    async with client_for(rec, tmp_path) as client:
        result = await client.register("https://relay.example/a/x/", {})
        assert client.next_generation_seen and client.inbound_secret == SECRET
    assert result.is_next and result.delivery_mode == "push" and result.inbound_secret == SECRET
    assert SECRET not in repr(result)
    assert TokenStore(WS, tmp_path).load_inbound_secret() == SECRET


async def test_register_401_without_token_explains_how_to_supply_one(tmp_path: Path) -> None:
    rec = Recorder(httpx.Response(401, json={"error": "missing workspace auth token"}))
    async with client_for(rec, tmp_path) as client:
        with pytest.raises(TokenRejected, match="already has a token") as info:
            await client.register("https://relay.example/a/x/", {})
    assert info.value.status == 401 and "missing workspace auth token" in str(info.value)


async def test_register_400_is_bad_request(tmp_path: Path) -> None:
    rec = Recorder(httpx.Response(400, json={"error": "invalid request body"}))
    async with client_for(rec, tmp_path) as client:
        with pytest.raises(BadRequest, match="invalid request body"):
            await client.register("http://127.0.0.1:1/a/x/", {})


async def test_heartbeat_sends_integers_and_captures_the_secret(tmp_path: Path) -> None:
    rec = Recorder(httpx.Response(200, json={"status": "ok", "platform_inbound_secret": SECRET}))
    async with client_for(rec, tmp_path, token=TOKEN) as client:
        result = await client.heartbeat(
            active_tasks=3, uptime_seconds=61, error_rate=0.25, current_task="t"
        )
    sent = rec.requests[0].content.decode()
    assert '"active_tasks":3' in sent.replace(" ", "")
    assert '"uptime_seconds":61' in sent.replace(" ", "")
    assert body(rec.requests[0]) == {
        "workspace_id": WS,
        "active_tasks": 3,
        "uptime_seconds": 61,
        "error_rate": 0.25,
        "current_task": "t",
        "sample_error": "",
    }
    assert result.inbound_secret == SECRET


@pytest.mark.parametrize("bad", [1.5, True, -1])
async def test_heartbeat_refuses_non_integer_counts(tmp_path: Path, bad: Any) -> None:
    rec = Recorder(httpx.Response(200, json={}))
    async with client_for(rec, tmp_path) as client:
        with pytest.raises(ValueError):
            await client.heartbeat(active_tasks=bad, uptime_seconds=0)
    assert rec.requests == []


async def test_update_card(tmp_path: Path) -> None:
    rec = Recorder(httpx.Response(200, json={"status": "updated"}))
    async with client_for(rec, tmp_path, token=TOKEN) as client:
        await client.update_card({"name": "new"})
    assert rec.requests[0].url.path == "/registry/update-card"
    assert body(rec.requests[0]) == {"workspace_id": WS, "agent_card": {"name": "new"}}


@pytest.mark.parametrize(
    ("status", "answer", "expected"),
    [
        (200, {"workspace_id": WS, "status": "online", "paused": False, "deleted": False},
         WorkspaceState(WS, "online", False, False)),
        (200, {"workspace_id": WS, "status": "paused", "paused": True, "deleted": False},
         WorkspaceState(WS, "paused", True, False)),
        (200, {"workspace_id": WS, "status": "removed", "paused": False, "deleted": False},
         WorkspaceState(WS, "removed", False, True)),
        (404, {"workspace_id": WS, "deleted": True}, WorkspaceState(WS, "removed", False, True)),
        (404, {"workspace_id": WS, "status": "removed", "deleted": True},
         WorkspaceState(WS, "removed", False, True)),
    ],
)  # fmt: skip
async def test_state_shapes(
    tmp_path: Path, status: int, answer: dict[str, Any], expected: WorkspaceState
) -> None:
    rec = Recorder(httpx.Response(status, json=answer))
    async with client_for(rec, tmp_path, token=TOKEN) as client:
        assert await client.get_state() == expected
    assert rec.requests[0].url.path == f"/workspaces/{WS}/state"
    assert rec.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


async def test_state_bare_404_is_not_taken_for_deletion(tmp_path: Path) -> None:
    rec = Recorder(httpx.Response(404))  # the tenant guard answers with no body
    async with client_for(rec, tmp_path, token=TOKEN) as client:
        with pytest.raises(NotFound):
            await client.get_state()


async def test_state_401_after_delete_is_token_rejected(tmp_path: Path) -> None:
    rec = Recorder(httpx.Response(401, json={"error": "invalid workspace auth token"}))
    async with client_for(rec, tmp_path, token=TOKEN) as client:
        with pytest.raises(TokenRejected, match="invalid workspace auth token"):
            await client.get_state()


async def test_pull_secrets_flat_map_and_repr_hides_values(tmp_path: Path) -> None:
    rec = Recorder(httpx.Response(200, json={"API_KEY": "v1", "OTHER": "v2", "BAD": 3}))
    async with client_for(rec, tmp_path, token=TOKEN) as client:
        secrets = await client.pull_secrets()
    assert dict(secrets) == {"API_KEY": "v1", "OTHER": "v2"}
    assert "v1" not in repr(secrets) and "API_KEY" in repr(secrets)
    assert rec.requests[0].url.path == f"/workspaces/{WS}/secrets/values"


async def test_pull_secrets_decrypt_failure_is_transient(tmp_path: Path) -> None:
    answer = {"error": "one or more secrets failed to decrypt", "failed_keys": ["global:K"]}
    rec = Recorder(httpx.Response(500, json=answer))
    async with client_for(rec, tmp_path, token=TOKEN) as client:
        with pytest.raises(PlatformUnavailable, match="failed to decrypt"):
            await client.pull_secrets()


async def test_get_peers(tmp_path: Path) -> None:
    rows = [
        {"id": "p1", "name": "pm", "role": None, "tier": 3, "status": "online",
         "agent_card": {"name": "pm"}, "url": "https://x/", "parent_id": None, "active_tasks": 2},
        {"name": "no id, skipped"},
    ]  # fmt: skip
    rec = Recorder(httpx.Response(200, json=rows))
    async with client_for(rec, tmp_path, token=TOKEN) as client:
        peers = await client.get_peers("pm")
    [request] = rec.requests
    assert request.url.path == f"/registry/{WS}/peers" and request.url.params["q"] == "pm"
    assert request.headers["x-workspace-id"] == WS
    [peer] = peers
    assert (peer.id, peer.name, peer.role, peer.tier, peer.active_tasks) == ("p1", "pm", None, 3, 2)
    assert peer.agent_card == {"name": "pm"}


async def test_discover(tmp_path: Path) -> None:
    rec = Recorder(httpx.Response(200, json={"id": "p1", "url": "https://x/", "name": "pm"}))
    async with client_for(rec, tmp_path, token=TOKEN) as client:
        found = await client.discover("p1")
    assert (found.id, found.url, found.name) == ("p1", "https://x/", "pm")
    assert rec.requests[0].url.path == "/registry/discover/p1"
    assert rec.requests[0].headers["x-workspace-id"] == WS


async def test_discover_404_and_403(tmp_path: Path) -> None:
    rec = Recorder(httpx.Response(404, json={"error": "workspace not found"}))
    async with client_for(rec, tmp_path, token=TOKEN) as client:
        with pytest.raises(NotFound):
            await client.discover("p1")
        rec.response = httpx.Response(403, json={"error": "not authorized to discover"})
        with pytest.raises(PlatformRejected) as info:
            await client.discover("p1")
    assert info.value.status == 403


async def test_429_with_retry_after_header(tmp_path: Path) -> None:
    answer = {"error": "rate limit exceeded", "retry_after": 7}
    rec = Recorder(httpx.Response(429, json=answer, headers={"Retry-After": "12"}))
    async with client_for(rec, tmp_path) as client:
        with pytest.raises(RateLimited) as info:
            await client.heartbeat(active_tasks=0, uptime_seconds=0)
    assert info.value.retry_after == 12.0


async def test_429_body_retry_after_and_cap(tmp_path: Path) -> None:
    rec = Recorder(httpx.Response(429, json={"error": "rate limit exceeded", "retry_after": 7}))
    async with client_for(rec, tmp_path) as client:
        with pytest.raises(RateLimited) as info:
            await client.heartbeat(active_tasks=0, uptime_seconds=0)
        assert info.value.retry_after == 7.0
        rec.response = httpx.Response(429, headers={"Retry-After": "99999999"})
        with pytest.raises(RateLimited) as info:
            await client.heartbeat(active_tasks=0, uptime_seconds=0)
    assert info.value.retry_after == MAX_RETRY_AFTER


async def test_503_datastore_outage_is_transient(tmp_path: Path) -> None:
    answer = {"error": "platform datastore unavailable", "code": "platform_unavailable"}
    rec = Recorder(httpx.Response(503, json=answer, headers={"Retry-After": "3"}))
    async with client_for(rec, tmp_path) as client:
        with pytest.raises(PlatformUnavailable) as info:
            await client.get_state()
    assert not isinstance(info.value, RateLimited) and info.value.retry_after == 3.0


async def test_network_errors_are_transient(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with client_for(refuse, tmp_path) as client:
        with pytest.raises(PlatformUnavailable, match="ConnectError") as info:
            await client.heartbeat(active_tasks=0, uptime_seconds=0)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>canvas</html>"),
        httpx.Response(302, headers={"Location": "https://elsewhere/"}),
        httpx.Response(200, content=b"[" + b"0," * (MAX_RESPONSE_BYTES // 2) + b"0]"),
    ],
)
async def test_unexpected_answers(tmp_path: Path, response: httpx.Response) -> None:
    async with client_for(Recorder(response), tmp_path) as client:
        with pytest.raises(UnexpectedResponse):
            await client.get_peers()


async def test_origin_and_org_headers(tmp_path: Path) -> None:
    rec = Recorder(httpx.Response(200, json={"status": "ok"}))
    async with client_for(rec, tmp_path, org_id="org-1") as client:
        await client.heartbeat(active_tasks=0, uptime_seconds=0)
    headers = rec.requests[0].headers
    assert headers["origin"] == "https://platform.example"
    assert headers["x-molecule-org-id"] == "org-1"
    async with client_for(rec, tmp_path, origin=None) as client:
        await client.heartbeat(active_tasks=0, uptime_seconds=0)
    assert (
        "origin" not in rec.requests[1].headers
        and "x-molecule-org-id" not in rec.requests[1].headers
    )


async def test_the_origin_never_carries_the_platform_urls_path(tmp_path: Path) -> None:
    rec = Recorder(httpx.Response(200, json={"status": "ok"}))
    client = PlatformClient(
        "https://platform.example:8443/molecule/",
        WS,
        token_store=TokenStore(WS, tmp_path),
        transport=httpx.MockTransport(rec),
    )
    async with client:
        await client.heartbeat(active_tasks=0, uptime_seconds=0)
    assert rec.requests[0].headers["origin"] == "https://platform.example:8443"
    assert rec.requests[0].url == "https://platform.example:8443/molecule/registry/heartbeat"


def test_rejects_non_http_platform_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        PlatformClient("ftp://platform", WS)


async def test_error_messages_never_contain_the_token(tmp_path: Path) -> None:
    for response in (httpx.Response(401, json={"error": "invalid"}), httpx.Response(500)):
        async with client_for(Recorder(response), tmp_path, token=TOKEN) as client:
            with pytest.raises(MoleculeError) as info:
                await client.get_state()
        assert TOKEN not in str(info.value)
