"""Agent cards: built and user-supplied, all URLs on the public relay URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.molecule.card import (
    build_agent_card,
    load_agent_card,
    public_workspace_url,
    rewrite_card_urls,
)

PUBLIC = "https://relay.example/a/ws-1/"


def test_public_workspace_url_has_one_trailing_slash() -> None:
    assert public_workspace_url("https://relay.example/", "ws-1") == PUBLIC
    assert public_workspace_url("https://relay.example", "ws-1") == PUBLIC


def test_built_card_has_1_0_interfaces_and_the_0_3_url() -> None:
    card = build_agent_card("https://relay.example/a/ws-1", name="edge", skills=[{"id": "s"}])
    assert card["supportedInterfaces"] == [
        {"url": PUBLIC, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
    ]
    assert card["url"] == PUBLIC and "protocolVersion" not in card
    assert card["skills"] == [{"id": "s"}]
    for field in ("name", "description", "version", "capabilities", "defaultInputModes"):
        assert field in card


def test_built_card_with_0_3_compat() -> None:
    card = build_agent_card(PUBLIC, name="edge", protocol_versions=("1.0", "0.3"))
    assert [i["protocolVersion"] for i in card["supportedInterfaces"]] == ["1.0", "0.3"]
    assert card["protocolVersion"] == "0.3.0"


def test_built_card_parses_with_the_a2a_sdk() -> None:
    card_resolver = pytest.importorskip("a2a.client.card_resolver")
    parsed = card_resolver.parse_agent_card(build_agent_card(PUBLIC, name="edge"))
    assert [i.url for i in parsed.supported_interfaces] == [PUBLIC]


def test_user_card_urls_are_rebased_keeping_paths() -> None:
    card = {
        "name": "mine",
        "url": "http://localhost:8000/",
        "supportedInterfaces": [
            {"url": "http://localhost:8000/rpc", "protocolBinding": "JSONRPC"},
            {"url": PUBLIC + "already", "protocolBinding": "JSONRPC"},
        ],
        "additionalInterfaces": [{"url": "http://127.0.0.1:9/x?y=1", "transport": "JSONRPC"}],
        "skills": [{"id": "keep", "url": "http://localhost:8000/not-an-interface"}],
    }
    out = rewrite_card_urls(card, PUBLIC)
    assert out["url"] == PUBLIC
    assert [i["url"] for i in out["supportedInterfaces"]] == [PUBLIC + "rpc", PUBLIC + "already"]
    assert out["additionalInterfaces"][0]["url"] == PUBLIC + "x?y=1"
    assert out["skills"] == card["skills"]  # only interface URLs move
    assert card["url"] == "http://localhost:8000/"  # the input is not modified


def test_user_card_without_urls_gets_the_public_interface() -> None:
    out = rewrite_card_urls({"name": "bare"}, PUBLIC)
    assert out["url"] == PUBLIC
    assert out["supportedInterfaces"][0]["url"] == PUBLIC


def test_load_agent_card(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text(json.dumps({"name": "f", "url": "http://localhost:1/"}))
    assert load_agent_card(path, PUBLIC)["url"] == PUBLIC
    path.write_text("[1]")
    with pytest.raises(ValueError):
        load_agent_card(path, PUBLIC)
