"""Tokens: a token claims only its own name; every secret comparison goes through
``hmac.compare_digest``; no token or secret reaches a log line or an error body.

* Name claims are tried against the real relay process (connect query, HELLO, a HELLO
  re-sent after WELCOME), while the tunnel they aim at keeps serving.
* Constant time is checked on the code path, not by timing: with ``compare_digest``
  replaced by a spy, the relay's and the agent's checks call it for every stored
  credential, and its answer alone decides (forced False, the right token fails; forced
  True, a wrong one passes), so no ``==`` on a secret can be hiding behind it.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import edge_agent.molecule.inbound
import edge_agent.tls
import relay.agents
import relay.headers
import relay.tokens
import wire
from relay.config import Settings
from relay.errors import AgentUnauthorized, CallerUnauthorized
from relay.state import RelayState
from tests.e2e.client import session
from tests.e2e.procs import issue_token
from tests.relay.fake_agent import FakeAgent
from tests.security.conftest import Edge
from wire import ErrorCode, Flag, FrameType
from wire.frames import encode_hello, encode_parts

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def claimant(edge: Edge) -> str:
    """A token for the name "claimant", which then tries to claim others."""
    return issue_token(edge.state_dir, "claimant")


async def _upgrade_status(edge: Edge, query: str, token: str) -> int:
    base = edge.relay.url.replace("http://", "ws://")
    try:
        ws = await connect(
            f"{base}/_edge/connect{query}",
            subprotocols=[wire.SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=10,
        )
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("?name=beta", 403),  # a live tunnel
        ("?name=nobody", 403),  # a name without a token
        ("?name=%62eta", 403),  # decoded, still not its name
        ("?name=CLAIMANT", 400),  # not a DNS label
        ("?name=claimant&name=beta", 400),  # ambiguous
        ("?name=claimant", 101),  # its own name: accepted
    ],
)
async def test_a_token_claims_only_its_name_at_connect(
    edge: Edge, claimant: str, query: str, status: int
) -> None:
    assert await _upgrade_status(edge, query, claimant) == status


@pytest.mark.parametrize(
    "credential",
    [
        "upper",  # the token with its case changed
        "hash",  # the SHA-256 the relay stores, presented as a token
        "prefix",  # the token's first half
    ],
)
async def test_near_misses_of_a_token_are_401(edge: Edge, claimant: str, credential: str) -> None:
    presented = {
        "upper": claimant.upper(),
        "hash": hashlib.sha256(claimant.encode()).hexdigest(),
        "prefix": claimant[: len(claimant) // 2],
    }[credential]
    assert await _upgrade_status(edge, "?name=claimant", presented) == 401


async def test_a_hello_naming_another_tunnel_is_refused(edge: Edge, claimant: str) -> None:
    for query_name in (False, True):  # HELLO alone, and HELLO against the query's name
        agent = FakeAgent(edge.relay.url, token=claimant, name="claimant", query_name=query_name)
        agent.hello_name = "beta"
        async with agent:
            await agent.closed.wait()
        assert agent.welcome is None
        assert [g.code for g in agent.goaways] == [ErrorCode.UNAUTHORIZED]
        assert agent.close_code == 1008
    await _beta_still_serves(edge)


async def test_a_hello_resent_with_another_name_is_a_protocol_error(
    edge: Edge, claimant: str
) -> None:
    async with FakeAgent(edge.relay.url, token=claimant, name="claimant") as agent:
        await agent.wait_welcome()
        hello = encode_hello(wire.Hello("beta"))
        agent.send_raw(encode_parts(FrameType.HELLO, 0, hello, Flag.NONE))
        await agent.closed.wait()
    assert [g.code for g in agent.goaways] == [ErrorCode.PROTOCOL_ERROR]
    await _beta_still_serves(edge)


async def _beta_still_serves(edge: Edge) -> None:
    async with session() as http, http.get(edge.url("beta", "echo")) as resp:
        assert resp.status == 200
    assert edge.relay.count(r"agent_replaced agent=beta") == 0


# -- constant-time comparison -----------------------------------------------------------


_REAL_COMPARE = hmac.compare_digest


class Spy:
    """Stands in for ``hmac.compare_digest``: records calls, answers as told (or truly)."""

    def __init__(self, answer: bool | None = None) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls += 1
        real = _REAL_COMPARE(a, b)
        return real if self.answer is None else self.answer


def _relay_state(tmp_path: Path, names: list[str]) -> tuple[RelayState, dict[str, str]]:
    state = RelayState.create(Settings(state_dir=tmp_path))
    tokens = {name: state.store.issue(name) for name in names}
    state.store.refresh()
    return state, tokens


def _authorize(token: str, state: RelayState) -> relay.agents.Claim:
    authorization = [f"Bearer {token}".encode()]
    return relay.agents.authorize(state, "", authorization, [wire.SUBPROTOCOL])


def test_agent_tokens_are_checked_with_compare_digest_against_every_record(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    state, tokens = _relay_state(tmp_path, ["one", "two", "three", "four"])
    spy = Spy()
    monkeypatch.setattr(hmac, "compare_digest", spy)
    for presented in (tokens["one"], tokens["four"], "mer_wrong"):
        spy.calls = 0
        state.store.authenticate(presented)
        assert spy.calls == 4  # every record, whichever matches: no early exit
    assert _authorize(tokens["two"], state).name == "two"

    monkeypatch.setattr(hmac, "compare_digest", Spy(answer=False))
    with pytest.raises(AgentUnauthorized):
        _authorize(tokens["two"], state)
    monkeypatch.setattr(hmac, "compare_digest", Spy(answer=True))
    assert _authorize("mer_anything", state).name is not None


def test_caller_credentials_are_checked_with_compare_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    creds = (
        wire.CallerCredential("bearer", hashlib.sha256(b"s3cret").hexdigest()),
        wire.CallerCredential("basic", hashlib.sha256(b"u:p").hexdigest()),
    )
    headers = [(b"authorization", b"Bearer s3cret")]
    spy = Spy()
    monkeypatch.setattr(hmac, "compare_digest", spy)
    relay.headers.check_caller(headers, creds, "t")
    assert spy.calls == 1  # the bearer digest; schemes are public, not compared in secret
    monkeypatch.setattr(hmac, "compare_digest", Spy(answer=False))
    with pytest.raises(CallerUnauthorized):
        relay.headers.check_caller(headers, creds, "t")
    monkeypatch.setattr(hmac, "compare_digest", Spy(answer=True))
    relay.headers.check_caller([(b"authorization", b"Bearer nope")], creds, "t")


def test_the_agents_inbound_secret_is_checked_with_compare_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    presents = edge_agent.molecule.inbound._presents
    headers = [("authorization", "Bearer inbound-s3cret")]
    spy = Spy()
    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert presents(headers, b"inbound-s3cret") and spy.calls == 1
    monkeypatch.setattr(hmac, "compare_digest", Spy(answer=False))
    assert not presents(headers, b"inbound-s3cret")
    monkeypatch.setattr(hmac, "compare_digest", Spy(answer=True))
    assert presents([("authorization", "Bearer wrong")], b"inbound-s3cret")


_SECRET_WORDS = ("token", "secret", "digest", "sha256", "password", "pin", "credential")


def _secret_equality(module: ModuleType) -> list[str]:
    """``==`` / ``!=`` comparisons in ``module`` with an operand named like a secret."""
    found = []
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
        ):
            names = [ast.unparse(x).lower() for x in (node.left, *node.comparators)]
            if any(word in name for name in names for word in _SECRET_WORDS):
                found.append(f"{module.__name__}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(
    "module",
    [relay.tokens, relay.headers, relay.agents, edge_agent.molecule.inbound, edge_agent.tls],
    ids=lambda m: m.__name__,
)
def test_no_plain_equality_on_secrets(module: ModuleType) -> None:
    assert _secret_equality(module) == []
