"""Caller auth per tunnel: the relay checks (and for basic strips) credentials."""

from __future__ import annotations

import base64
import hashlib

import httpx

import wire
from tests.relay.conftest import RunningRelay
from tests.relay.fake_agent import FakeAgent, FakeRequest


def cred(scheme: str, secret: str) -> wire.CallerCredential:
    return wire.CallerCredential(scheme, hashlib.sha256(secret.encode()).hexdigest())


def basic(user_pass: str) -> str:
    return "Basic " + base64.b64encode(user_pass.encode()).decode()


async def test_bearer_and_basic(relay: RunningRelay) -> None:
    seen: list[FakeRequest] = []

    async def handler(request: FakeRequest) -> None:
        seen.append(request)
        await request.respond(200, end=True)

    creds = (cred("bearer", "platform-secret"), cred("basic", "ann:pw"))
    agent = FakeAgent(relay.url, handler, token=relay.issue("demo"), name="demo", caller_auth=creds)
    async with agent, relay.client() as client:
        await agent.wait_welcome()

        async def get(authorization: str | None) -> httpx.Response:
            headers = {"authorization": authorization} if authorization else {}
            return await client.get("/a/demo/", headers=headers)

        for bad in (None, "Bearer wrong", basic("ann:nope"), "Bearer", "Basic !!!", "Digest x"):
            r = await get(bad)
            assert r.status_code == 401, bad
            assert r.headers["x-edge-error"] == "caller_unauthorized"
            assert r.headers.get_list("www-authenticate") == [
                'Basic realm="demo"',
                'Bearer realm="demo"',
            ]
        assert seen == []  # nothing unauthenticated reached the agent

        assert (await get("Bearer platform-secret")).status_code == 200
        assert (await get(basic("ann:pw"))).status_code == 200
    # The bearer is forwarded (the agent may check it too); basic credentials are not.
    assert seen[0].header("authorization") == ["Bearer platform-secret"]
    assert seen[1].header("authorization") == []


async def test_no_caller_auth_forwards_authorization_untouched(relay: RunningRelay) -> None:
    seen: list[FakeRequest] = []

    async def handler(request: FakeRequest) -> None:
        seen.append(request)
        await request.respond(200, end=True)

    async with FakeAgent(relay.url, handler, token=relay.issue("demo"), name="demo") as agent:
        await agent.wait_welcome()
        async with relay.client() as client:
            r = await client.get("/a/demo/", headers={"authorization": basic("x:y")})
    assert r.status_code == 200
    assert seen[0].header("authorization") == [basic("x:y")]
