"""The CORS middleware of core's router (gin-contrib/cors): a foreign Origin gets a bare
403 on every route, the platform's own origin and the allowed ones pass."""

from __future__ import annotations

import pytest

from tests.devplatform.conftest import ADMIN, Dev, PlatformFactory


@pytest.mark.parametrize("path", ["/health", "/workspaces", "/registry/register", "/nowhere"])
async def test_a_foreign_origin_is_a_bare_403(dev: Dev, path: str) -> None:
    response = await dev.client.post(path, json={}, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert response.content == b""
    assert "access-control-allow-origin" not in response.headers


async def test_the_platforms_own_origin_passes_as_the_sdk_sends_it(dev: Dev) -> None:
    for scheme in ("http", "https"):  # gin-contrib/cors accepts both for the Host
        origin = f"{scheme}://127.0.0.1:{dev.server.port}"
        response = await dev.client.get("/workspaces", headers={"Origin": origin, **ADMIN})
        assert response.status_code == 200, origin
        assert "access-control-allow-origin" not in response.headers


async def test_same_host_other_port_is_foreign(dev: Dev) -> None:
    origin = f"http://127.0.0.1:{dev.server.port + 1}"
    response = await dev.client.get("/health", headers={"Origin": origin})
    assert (response.status_code, response.content) == (403, b"")


async def test_no_origin_is_not_a_cors_request(dev: Dev) -> None:
    assert (await dev.client.get("/health")).status_code == 200


async def test_an_allowed_origin_gets_the_cors_headers(dev: Dev) -> None:
    origin = "http://localhost:3000"  # CORS_ORIGINS' default: the canvas dev server
    response = await dev.client.get("/health", headers={"Origin": origin})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert response.headers["access-control-allow-credentials"] == "true"
    preflight = await dev.client.options(
        "/registry/register",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert "X-Workspace-ID" in preflight.headers["access-control-allow-headers"]


async def test_cors_origins_replace_the_default(make_platform: PlatformFactory) -> None:
    dev = await make_platform(cors_origins=("https://canvas.example",))
    ok = await dev.client.get("/health", headers={"Origin": "https://canvas.example"})
    assert ok.status_code == 200
    refused = await dev.client.get("/health", headers={"Origin": "http://localhost:3000"})
    assert refused.status_code == 403


def test_parse_origins() -> None:
    from devplatform.cors import parse_origins

    assert parse_origins(" https://a.example , http://b.example:8080,") == (
        "https://a.example",
        "http://b.example:8080",
    )
    assert parse_origins("") == ("http://localhost:3000", "http://localhost:3001")
