"""Caller auth per tunnel, chosen by the agent (``edge-agent http --caller-auth``) and
enforced by the relay: without the tunnel's credential a caller gets 401 from the relay
and the local target sees nothing; with it, the request goes through (a bearer is
forwarded, since the agent may check the same secret again; basic is stripped).

Routing and authorization read the same value: a request routed to ``guarded`` by its
Host header is checked against ``guarded``'s credentials, whatever the path says.
"""

from __future__ import annotations

import base64
import json

import pytest

from tests.e2e.client import raw_exchange
from tests.security.conftest import BASIC_PASSWORD, BASIC_USER, CALLER_TOKEN, DOMAIN, Edge

pytestmark = pytest.mark.timeout(120)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(path: str, *headers: str, host: str = "relay.test") -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


REFUSED: dict[str, tuple[str, ...]] = {
    "no credentials": (),
    "wrong bearer": (f"Authorization: Bearer {CALLER_TOKEN}x",),
    "bearer prefix only": (f"Authorization: Bearer {CALLER_TOKEN[:-1]}",),
    "wrong password": (f"Authorization: {basic(BASIC_USER, 'nope')}",),
    "wrong user": (f"Authorization: {basic('root', BASIC_PASSWORD)}",),
    "basic that is not base64": ("Authorization: Basic !!!not-base64!!!",),
    "bearer token sent as basic": (f"Authorization: Basic {CALLER_TOKEN}",),
    "unknown scheme": (f"Authorization: Token {CALLER_TOKEN}",),
    "right and wrong together": (
        f"Authorization: Bearer {CALLER_TOKEN}",
        "Authorization: Bearer wrong",
    ),
    "in Proxy-Authorization": (f"Proxy-Authorization: Bearer {CALLER_TOKEN}",),
    "in another header": (f"X-Api-Key: {CALLER_TOKEN}",),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_without_the_credential_the_relay_answers_401(edge: Edge, case: str) -> None:
    before = edge.totals()
    resp = await raw_exchange(edge.relay.port, request("/a/guarded/echo", *REFUSED[case]))
    assert resp.status == 401
    assert resp.values("x-edge-error") == ["caller_unauthorized"]
    challenge = ", ".join(resp.values("www-authenticate"))
    assert "Bearer" in challenge and "Basic" in challenge
    assert CALLER_TOKEN not in resp.body.decode() and BASIC_PASSWORD not in resp.body.decode()
    assert edge.totals() == before  # the local target saw nothing


async def test_credential_in_the_query_is_not_a_credential(edge: Edge) -> None:
    before = edge.totals()
    resp = await raw_exchange(
        edge.relay.port, request(f"/a/guarded/echo?access_token={CALLER_TOKEN}")
    )
    assert resp.status == 401 and edge.totals() == before


@pytest.mark.parametrize(
    ("header", "forwarded"),
    [
        (f"Authorization: Bearer {CALLER_TOKEN}", f"Bearer {CALLER_TOKEN}"),
        (f"authorization: bearer {CALLER_TOKEN}", f"bearer {CALLER_TOKEN}"),
        (f"Authorization: {basic(BASIC_USER, BASIC_PASSWORD)}", None),
    ],
)
async def test_with_the_credential_the_request_goes_through(
    edge: Edge, header: str, forwarded: str | None
) -> None:
    before = edge.totals()
    resp = await raw_exchange(edge.relay.port, request("/a/guarded/echo?key=authed", header))
    assert resp.status == 200, resp
    assert edge.totals()["guarded"] == before["guarded"] + 1
    seen = json.loads(resp.body)["headers"]
    assert [v for n, v in seen if n == "authorization"] == ([forwarded] if forwarded else [])


async def test_routing_and_auth_read_the_same_value(edge: Edge) -> None:
    """The Host names the tunnel in domain mode: its credentials apply, not the path's."""
    before = edge.totals()
    to_guarded = request("/a/alpha/echo", host=f"guarded.{DOMAIN}")
    resp = await raw_exchange(edge.relay.port, to_guarded)
    assert resp.status == 401 and edge.totals() == before

    to_alpha = request("/a/guarded/echo", host=f"alpha.{DOMAIN}")
    resp = await raw_exchange(edge.relay.port, to_alpha)
    assert resp.values("x-edge-error") == []  # alpha's origin answered (its own 404)
    after = edge.totals()
    assert (after["alpha"], after["guarded"]) == (before["alpha"] + 1, before["guarded"])
