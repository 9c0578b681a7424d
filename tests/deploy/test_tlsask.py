"""The on-demand TLS ``ask`` endpoint: 200 only for names a token owns."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from relay.config import Settings
from relay.tlsask import TLS_ASK_PATH, tls_ask, tunnel_label
from relay.tokens import TokenStore
from tests.relay.conftest import start_relay

DOMAIN = "edge.example.com"


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    store = TokenStore(tmp_path / "state")
    store.issue("demo")
    return store


@pytest.mark.parametrize(
    ("host", "label"),
    [
        ("demo.edge.example.com", "demo"),
        ("DEMO.Edge.Example.com.", "demo"),
        ("a-1.edge.example.com", "a-1"),
        ("edge.example.com", None),  # the domain itself
        ("x.demo.edge.example.com", None),  # two labels deep
        ("demo.edge.example.org", None),
        ("demoedge.example.com", None),  # no dot before the domain
        ("-x.edge.example.com", None),  # not a DNS label
        ("relay.edge.example.com", None),  # reserved: the relay's own host
        ("a" * 300 + ".edge.example.com", None),
    ],
)
def test_tunnel_label(host: str, label: str | None) -> None:
    assert tunnel_label(host, DOMAIN) == label


def test_no_domain_means_no_certificates() -> None:
    assert tunnel_label("demo.edge.example.com", None) is None


def test_owned_name_is_200(store: TokenStore) -> None:
    answer = tls_ask(store, DOMAIN, b"domain=demo.edge.example.com")
    assert answer.status == 200
    assert json.loads(answer.body) == {"status": "ok", "detail": "demo"}


@pytest.mark.parametrize(
    "query",
    [
        b"domain=other.edge.example.com",  # valid name, no token
        b"domain=demo.attacker.example",  # owned label under another domain
        b"domain=edge.example.com",
        b"domain=demo.edge.example.com%2f..",
    ],
)
def test_other_names_are_404(store: TokenStore, query: bytes) -> None:
    assert tls_ask(store, DOMAIN, query).status == 404


@pytest.mark.parametrize("query", [b"", b"name=demo.edge.example.com", b"domain=a&domain=b"])
def test_malformed_query_is_400(store: TokenStore, query: bytes) -> None:
    answer = tls_ask(store, DOMAIN, query)
    assert answer.status == 400
    assert b"domain=NAME" in answer.body


def test_issue_and_revoke_apply_at_once(store: TokenStore) -> None:
    """The relay's own store object sees the CLI's changes on the next ask."""
    cli = TokenStore(store.state_dir)
    query = b"domain=late.edge.example.com"
    assert tls_ask(store, DOMAIN, query).status == 404
    cli.issue("late")
    assert tls_ask(store, DOMAIN, query).status == 200
    cli.revoke("late")
    assert tls_ask(store, DOMAIN, query).status == 404


async def test_served_by_the_relay(tmp_path: Path) -> None:
    TokenStore(tmp_path / "state").issue("demo")
    relay = await start_relay(Settings(port=0, state_dir=tmp_path / "state", domain=DOMAIN))
    try:
        async with httpx.AsyncClient(base_url=relay.url, timeout=10.0) as client:
            ok = await client.get(TLS_ASK_PATH, params={"domain": "demo.edge.example.com"})
            refused = await client.get(TLS_ASK_PATH, params={"domain": "nobody.edge.example.com"})
    finally:
        await relay.stop()
    assert (ok.status_code, ok.json()["status"]) == (200, "ok")
    assert (refused.status_code, refused.json()["status"]) == (404, "refused")
    assert refused.headers["cache-control"] == "no-store"
