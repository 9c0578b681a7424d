"""Contract row 2: ``POST /registry/register``, section 3.2 (SSRF rules included)."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.devplatform.conftest import ADMIN, Dev, PlatformFactory, bearer, fake_resolver

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
GENERIC = {"error": "invalid request body"}


async def test_bootstrap_mints_a_token_then_bearer_is_required(dev: Dev) -> None:
    response = await dev.create(url="http://localhost:9/a2a")  # no token minted at create
    workspace_id = response.json()["id"]
    first = await dev.register(workspace_id, "http://localhost:9/a2a")
    assert first.status_code == 200
    token = first.json()["auth_token"]
    assert TOKEN_RE.match(token)
    assert set(first.json()) == {"status", "auth_token"}

    missing = await dev.register(workspace_id, "http://localhost:9/a2a")
    assert (missing.status_code, missing.json()) == (401, {"error": "missing workspace auth token"})
    wrong = await dev.register(workspace_id, "http://localhost:9/a2a", token="x" * 43)
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid workspace auth token"})
    again = await dev.register(workspace_id, "http://localhost:9/a2a", token=token)
    assert (again.status_code, again.json()) == (200, {"status": "registered"})


async def test_token_from_create_is_required_at_first_register(dev: Dev) -> None:
    workspace_id, token = await dev.create_external()
    refused = await dev.register(workspace_id, "http://localhost:9/")
    assert refused.status_code == 401
    accepted = await dev.register(workspace_id, "http://localhost:9/", token=token)
    assert accepted.json() == {"status": "registered"}  # a token is live: none minted


async def test_another_workspaces_token_is_invalid(dev: Dev) -> None:
    first, _ = await dev.create_external()
    _, other_token = await dev.create_external()
    response = await dev.register(first, "http://localhost:9/", token=other_token)
    assert response.json() == {"error": "invalid workspace auth token"}


async def test_unknown_id_creates_the_row(dev: Dev) -> None:
    workspace_id = str(uuid.uuid4())
    response = await dev.register(workspace_id, "http://localhost:9/a2a")
    assert response.status_code == 200 and "auth_token" in response.json()
    row = await dev.client.get(f"/workspaces/{workspace_id}")
    assert row.json()["name"] == workspace_id
    assert row.json()["status"] == "online"
    assert row.json()["url"] == "http://localhost:9/a2a"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"{not json",
        b'{"id": "%s", "agent_card": {}}',
        b'{"id": "%s", "url": "", "agent_card": {}}',
        b'{"id": "%s", "url": "http://localhost:9/"}',
        b'{"url": "http://localhost:9/", "agent_card": {}}',
        b'{"id": 5, "url": "http://localhost:9/", "agent_card": {}}',
    ],
)
async def test_bad_bodies(dev: Dev, body: bytes) -> None:
    if b"%s" in body:
        body = body.replace(b"%s", str(uuid.uuid4()).encode())
    response = await dev.client.post("/registry/register", content=body)
    assert (response.status_code, response.json()) == (400, GENERIC)


async def test_current_ignores_delivery_mode(dev: Dev) -> None:
    response = await dev.register(str(uuid.uuid4()), "http://localhost:9/", delivery_mode=7)
    assert response.status_code == 200 and "delivery_mode" not in response.json()


async def test_current_refuses_the_poll_probe(dev: Dev) -> None:
    # Section 13: "current" has no delivery_mode, and url is required.
    workspace_id = str(uuid.uuid4())
    response = await dev.register(workspace_id, None, delivery_mode="poll")
    assert (response.status_code, response.json()) == (400, GENERIC)


REFUSED = [
    "http://127.0.0.1:8000/",
    "http://127.8.9.10/",
    "http://[::1]:8000/",
    "http://[::ffff:127.0.0.1]/",
    "http://169.254.169.254/latest/meta-data",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.10/",
    "http://100.64.0.1/",
    "http://192.0.2.1/",
    "http://198.51.100.7/",
    "http://203.0.113.9/",
    "http://224.0.0.1/",
    "http://239.1.2.3/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd12::1]/",
    "http://[2001:db8::1]/",
    "ftp://localhost/",
    "file:///etc/passwd",
    "localhost:8000",
    "http://nonexistent.invalid/",
    "http://private.example/",  # resolves to 10.0.0.5 (fake DNS)
    "http://LOCALHOST:8000/",  # only the exact name is allowed; resolves to 127.0.0.1
]
ACCEPTED = [
    "http://localhost:8000/a2a",
    "https://localhost/a2a",
    "https://relay.example/a/x/",  # resolves to a public address (fake DNS)
    "http://93.184.216.34:8080/",
]
DNS = {"private.example": ["10.0.0.5"], "relay.example": ["93.184.216.34", "2606:2800::1"]}


@pytest.mark.parametrize("url", REFUSED)
async def test_ssrf_refusals_are_the_generic_400(make_platform: PlatformFactory, url: str) -> None:
    dev = await make_platform(resolver=fake_resolver(DNS))
    response = await dev.register(str(uuid.uuid4()), url)
    assert (response.status_code, response.json()) == (400, GENERIC)


@pytest.mark.parametrize("url", ACCEPTED)
async def test_ssrf_accepted(make_platform: PlatformFactory, url: str) -> None:
    dev = await make_platform(resolver=fake_resolver(DNS))
    response = await dev.register(str(uuid.uuid4()), url)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("http://10.1.2.3/", 200),
        ("http://192.168.1.10/", 200),
        ("http://[fd12::1]/", 200),
        ("http://127.0.0.1/", 400),
        ("http://169.254.169.254/", 400),
        ("http://100.64.0.1/", 400),
        ("http://[fc00::1]/", 400),
    ],
)
async def test_saas_mode_allows_private_ranges_only(
    make_platform: PlatformFactory, url: str, status: int
) -> None:
    dev = await make_platform(saas_mode=True)
    response = await dev.register(str(uuid.uuid4()), url)
    assert response.status_code == status


async def test_provisioner_url_on_127_is_kept(dev: Dev) -> None:
    created = await dev.create(url="http://127.0.0.1:9/a2a")
    workspace_id = created.json()["id"]
    await dev.register(workspace_id, "http://localhost:7/other")
    row = await dev.client.get(f"/workspaces/{workspace_id}")
    assert row.json()["url"] == "http://127.0.0.1:9/a2a"


async def test_revoking_every_token_reopens_bootstrap(dev: Dev) -> None:
    workspace_id, token = await dev.create_external()
    listed = await dev.client.get(f"/workspaces/{workspace_id}/tokens", headers=bearer(token))
    token_id = listed.json()["tokens"][0]["id"]
    path = f"/workspaces/{workspace_id}/tokens/{token_id}"
    revoked = await dev.client.delete(path, headers=ADMIN)
    assert revoked.json() == {"status": "revoked"}
    again = await dev.register(workspace_id, "http://localhost:9/")
    assert TOKEN_RE.match(again.json()["auth_token"])


async def test_register_does_not_resurrect_a_removed_workspace(dev: Dev) -> None:
    workspace_id, _token = await dev.registered("http://localhost:9/a2a")
    await dev.client.delete(f"/workspaces/{workspace_id}", headers=ADMIN)
    # Tokens were revoked, so the call is a bootstrap; it mints a (useless) token.
    response = await dev.register(workspace_id, "http://localhost:9/a2a")
    assert response.status_code == 200 and "auth_token" in response.json()
    new_token = response.json()["auth_token"]
    row = await dev.client.get(f"/workspaces/{workspace_id}")
    assert row.json()["status"] == "removed"
    # A token of a removed workspace never validates.
    beat = await dev.heartbeat(workspace_id, new_token)
    assert beat.json() == {"error": "invalid workspace auth token"}


async def test_malformed_id_is_registration_failed(dev: Dev) -> None:
    response = await dev.register("not-a-uuid", "http://localhost:9/")
    assert (response.status_code, response.json()) == (500, {"error": "registration failed"})
