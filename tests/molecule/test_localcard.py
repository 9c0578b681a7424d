"""The local A2A server's card: read in-process from the example agent and from small
ASGI apps, and every way a server can fail to publish one (it then has none)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from edge_agent.molecule.localcard import MAX_CARD_BYTES, LocalCard
from examples.a2a_agent import Settings, build_app

Send = Callable[[dict[str, Any]], Awaitable[None]]


def serving(routes: dict[str, tuple[int, bytes]]) -> Any:
    """A raw ASGI app answering ``routes`` (path → status, body), 404 elsewhere."""

    async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
        status, body = routes.get(scope["path"], (404, b"not found"))
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def fetch(app: Any) -> dict[str, Any] | None:
    card = LocalCard(app=app)
    try:
        return await card.fetch()
    finally:
        await card.aclose()


async def test_the_example_agents_card() -> None:
    card = await fetch(build_app(Settings(public_url="http://127.0.0.1:8000/")))
    assert card is not None and card["name"]
    assert card["supportedInterfaces"][0]["url"] == "http://127.0.0.1:8000/"


async def test_the_0_2_path_is_tried_second() -> None:
    app = serving({"/.well-known/agent.json": (200, b'{"name": "old"}')})
    assert await fetch(app) == {"name": "old"}


@pytest.mark.parametrize(
    "answer",
    [
        (404, b"{}"),
        (500, b'{"name": "x"}'),
        (200, b"<html>"),
        (200, b"[1, 2]"),
        (200, b'{"name": "' + b"x" * MAX_CARD_BYTES + b'"}'),
    ],
)
async def test_no_usable_card(answer: tuple[int, bytes]) -> None:
    assert await fetch(serving({"/.well-known/agent-card.json": answer})) is None


async def test_an_app_that_raises_has_no_card() -> None:
    async def broken(scope: dict[str, Any], receive: Any, send: Send) -> None:
        raise RuntimeError("boom")

    assert await fetch(broken) is None


async def test_nothing_listening_has_no_card() -> None:
    card = LocalCard(base_url="http://127.0.0.1:9")  # discard port: refused
    try:
        assert await card.fetch() is None
    finally:
        await card.aclose()


def test_one_source_only() -> None:
    with pytest.raises(ValueError):
        LocalCard()
    with pytest.raises(ValueError):
        LocalCard(base_url="http://x", app=serving({}))


async def test_a_card_changes_between_fetches() -> None:
    routes = {"/.well-known/agent-card.json": (200, json.dumps({"name": "v1"}).encode())}
    card = LocalCard(app=serving(routes))
    try:
        assert await card.fetch() == {"name": "v1"}
        routes["/.well-known/agent-card.json"] = (200, json.dumps({"name": "v2"}).encode())
        assert await card.fetch() == {"name": "v2"}
    finally:
        await card.aclose()
