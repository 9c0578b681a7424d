"""InboundSecretTarget: the "next" platform's bearer, checked on the agent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from edge_agent.molecule.inbound import InboundSecretTarget
from edge_agent.target import LocalRequest, LocalResponse

SECRET = "s3cr3t-" + "x" * 36


async def empty() -> AsyncIterator[bytes]:
    return
    yield b""


class Agent:
    def __init__(self) -> None:
        self.seen: list[LocalRequest] = []
        self.closed = False

    async def handle(self, request: LocalRequest) -> LocalResponse:
        self.seen.append(request)
        return LocalResponse(200, [], empty())

    async def aclose(self) -> None:
        self.closed = True


def req(*headers: tuple[str, str]) -> LocalRequest:
    return LocalRequest(3, "POST", "/", list(headers), empty())


async def body_of(response: LocalResponse) -> bytes:
    return b"".join([chunk async for chunk in response.body])


async def test_without_a_secret_everything_passes() -> None:
    agent = Agent()
    target = InboundSecretTarget(agent)
    assert not target.enforcing
    assert (await target.handle(req())).status == 200


@pytest.mark.parametrize("value", [f"Bearer {SECRET}", f"bearer {SECRET}", f"BEARER   {SECRET} "])
async def test_the_right_bearer_passes_and_is_forwarded(value: str) -> None:
    agent = Agent()
    target = InboundSecretTarget(agent, SECRET)
    assert (await target.handle(req(("Authorization", value)))).status == 200
    assert agent.seen[0].headers == [("Authorization", value)]  # the local agent may check too


@pytest.mark.parametrize(
    "headers",
    [
        (),
        (("authorization", "Bearer wrong"),),
        (("authorization", f"Basic {SECRET}"),),
        (("authorization", SECRET),),
        (("authorization", f"Bearer {SECRET}x"),),
        (("authorization", f"Bearer {SECRET}"), ("Authorization", "Bearer other")),
        (("x-authorization", f"Bearer {SECRET}"),),
    ],
)
async def test_anything_else_gets_401_without_reaching_the_agent(
    headers: tuple[tuple[str, str], ...], caplog: pytest.LogCaptureFixture
) -> None:
    agent = Agent()
    target = InboundSecretTarget(agent, SECRET)
    response = await target.handle(req(*headers))
    assert response.status == 401 and agent.seen == []
    body = await body_of(response)
    doc = json.loads(body)
    assert doc["jsonrpc"] == "2.0" and doc["error"]["code"] == -32600
    assert dict(response.headers)["content-length"] == str(len(body))
    assert dict(response.headers)["www-authenticate"].startswith("Bearer")
    assert SECRET not in body.decode() and SECRET not in caplog.text


async def test_secret_can_be_set_rotated_and_cleared() -> None:
    agent = Agent()
    target = InboundSecretTarget(agent)
    target.set_secret(SECRET)
    assert (await target.handle(req())).status == 401
    target.set_secret("rotated")
    assert (await target.handle(req(("authorization", f"Bearer {SECRET}")))).status == 401
    assert (await target.handle(req(("authorization", "Bearer rotated")))).status == 200
    target.set_secret(None)
    assert (await target.handle(req())).status == 200


async def test_aclose_closes_the_inner_target() -> None:
    agent = Agent()
    await InboundSecretTarget(agent, SECRET).aclose()
    assert agent.closed
