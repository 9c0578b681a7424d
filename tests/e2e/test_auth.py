"""Agent authentication: refused before the WebSocket upgrade (401/403 with the relay's
JSON), and the agent exits at once with a clear message instead of retrying. Open mode
lets agents without a token claim free names, and says so loudly."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.e2e.client import session
from tests.e2e.origin import Origin
from tests.e2e.procs import (
    AgentProc,
    Procs,
    RelayProc,
    issue_token,
    run_cli,
    start_agent,
)

#: Seconds a refused agent may take to print its error and exit (it makes one attempt).
EXIT_WITHIN = 15.0
EXIT_AUTH = 3


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProc]:
    procs = Procs()
    try:
        yield procs.add(RelayProc(tmp_path_factory.mktemp("auth"), name="relay-auth"))
    finally:
        procs.stop_all()


def _refused(relay: RelayProc, procs: Procs, *args: str) -> tuple[AgentProc, str]:
    """Run an agent that must be refused; return it and its output once it exited."""
    before = relay.refusals()
    start = time.monotonic()
    agent = procs.add(AgentProc("9", "--relay", relay.url, *args, name="agent-refused"))
    code = agent.wait(EXIT_WITHIN)
    took = time.monotonic() - start
    agent.wait_line(r"edge-agent: error:", 5)  # the output pump caught up
    assert code == EXIT_AUTH, agent.output()
    assert took < EXIT_WITHIN
    relay.wait_count("agent_refused", before + 1, 5)
    time.sleep(0.5)  # a retry, were there one, would show up here
    assert relay.refusals() == before + 1, "the agent made more than one attempt"
    assert relay.count(r"\bERROR\b") == 0, relay.output()  # a refusal is not an error
    return agent, agent.output()


def test_missing_token_is_refused_without_retry(relay: RelayProc, procs: Procs) -> None:
    _agent, out = _refused(relay, procs, "--name", "nobody")
    assert "edge-agent: error: the relay refused the agent's token (401 agent_unauthorized" in out
    assert re.search(r"agent_refused status=401 code=agent_unauthorized", relay.output())


def test_wrong_token_is_refused_without_retry(relay: RelayProc, procs: Procs) -> None:
    secret = "mer_this-is-not-a-token-the-relay-issued"
    _agent, out = _refused(relay, procs, "--token", secret)
    assert "(401 agent_unauthorized" in out
    assert secret not in out and secret not in relay.output()


def test_revoked_token_is_refused_without_retry(relay: RelayProc, procs: Procs) -> None:
    token = issue_token(relay.state_dir, "revoked")
    done = run_cli("edge-relay", "token", "revoke", "revoked", "--state-dir", str(relay.state_dir))
    assert done.returncode == 0, done.stderr
    _agent, out = _refused(relay, procs, "--token", token)
    assert "(401 agent_unauthorized" in out


def test_token_for_another_name_is_refused_without_retry(relay: RelayProc, procs: Procs) -> None:
    token = issue_token(relay.state_dir, "alpha")
    _agent, out = _refused(relay, procs, "--token", token, "--name", "beta")
    assert "(403 name_forbidden" in out
    assert "the relay token is for the name alpha, not beta: use --name alpha" in out


def test_token_revoked_while_connected_ends_the_agent(
    relay: RelayProc, origin: Origin, procs: Procs
) -> None:
    token = issue_token(relay.state_dir, "live")
    agent = procs.add(start_agent(relay, token, str(origin.port), name="agent-live"))
    done = run_cli("edge-relay", "token", "revoke", "live", "--state-dir", str(relay.state_dir))
    assert done.returncode == 0, done.stderr
    assert agent.wait(EXIT_WITHIN) == EXIT_AUTH
    agent.wait_line(r"edge-agent: error: the relay revoked this agent's token", 5)
    relay.wait_line(r"agent_revoked agent=live")


@pytest.fixture(scope="module")
def open_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProc]:
    procs = Procs()
    try:
        yield procs.add(RelayProc(tmp_path_factory.mktemp("open"), "--open", name="relay-open"))
    finally:
        procs.stop_all()


def test_open_mode_warns(open_relay: RelayProc) -> None:
    open_relay.wait_line(r"^WARNING: open mode: any agent may claim a free name without a token")


@pytest.mark.parametrize("name", ["free-name", None])
async def test_open_mode_lets_agents_claim_free_names(
    open_relay: RelayProc, origin: Origin, procs: Procs, name: str | None
) -> None:
    args = (str(origin.port), *(["--name", name] if name else []))
    agent = procs.add(start_agent(open_relay, None, *args, name="agent-open"))
    chosen = re.fullmatch(rf"{open_relay.url}/a/([a-z0-9-]+)/", agent.url)
    assert chosen is not None, agent.url
    if name is not None:
        assert chosen.group(1) == name
    async with session() as http, http.get(agent.url + "echo") as resp:
        assert resp.status == 200


def test_open_mode_keeps_names_that_have_a_token(open_relay: RelayProc, procs: Procs) -> None:
    issue_token(open_relay.state_dir, "owned")
    _agent, out = _refused(open_relay, procs, "--name", "owned")
    assert "(403 name_forbidden" in out
    assert "check the relay token" not in out  # there is none: the name is taken
    _agent, out = _refused(open_relay, procs, "--name", "www")
    assert "the relay refused the name (403 name_forbidden: the name www is reserved)" in out
