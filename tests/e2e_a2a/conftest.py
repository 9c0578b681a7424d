"""Fixtures of the A2A end-to-end suite: the example A2A agent (a2a-sdk's own server)
behind real ``edge-relay serve`` and ``edge-agent`` processes on 127.0.0.1, called with
a2a-sdk's own client. No A2A code of ours is on the path.

Two tunnels share one relay for the whole session:

* ``port``: ``edge-agent http PORT`` in front of the example agent run as its own
  uvicorn process, with sse-starlette's keep-alive comment every 15 s (its default);
* ``app``: ``edge-agent http --app examples.a2a_agent:app`` (the agent in-process, no
  local socket), with the keep-alive comment off, so a silent gap is silent on the wire.

Neither agent is told its public URL: the example derives its card's interface URL from
the ``X-Forwarded-*`` headers the relay sets, so a correct card proves those headers.
Every process is stopped in a ``finally`` (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.e2e.procs import AgentProc, Proc, Procs, RelayProc, clean_env, issue_token
from tests.support.a2a_clients import MakeClient, a2a_clients

#: Seconds a process may take to print its URL (a cold a2a-sdk import is slow on a busy
#: 2-core machine).
START_TIMEOUT = 60.0

#: Read timeout of the A2A callers: longer than the longest silence of any test stream
#: (the SDK's own httpx default of 5 s would also apply between SSE events).
CALLER_TIMEOUT = 60.0


@dataclasses.dataclass
class A2ATunnel:
    name: str  # the tunnel name, also the test id
    agent: AgentProc
    url: str  # the public URL the agent printed (ends with "/")
    pings: bool  # whether the SSE responses carry keep-alive comments


@dataclasses.dataclass
class Stack:
    relay: RelayProc
    example: Proc  # the example agent's own uvicorn process (behind ``port``)
    example_port: int
    tunnels: dict[str, A2ATunnel]


def start_example(procs: Procs, *args: str, name: str = "example") -> tuple[Proc, int]:
    """The example A2A agent as a uvicorn process on a free port; returns it and the port."""
    argv = [sys.executable, "-m", "examples.a2a_agent", "--port", "0", *args]
    proc = procs.add(Proc(name, argv, env=clean_env()))
    match = proc.wait_line(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", START_TIMEOUT)
    return proc, int(match.group(1))


def start_agent(
    procs: Procs, relay: RelayProc, token: str, *args: str, name: str, **env: str
) -> AgentProc:
    """``edge-agent http ARGS`` for ``relay`` with ``token``; its URL is read from its output."""
    flags = ("--relay", relay.url, "--token", token)
    agent = procs.add(AgentProc(*args, *flags, name=name, env=env))
    agent.url = agent.wait_url(START_TIMEOUT)
    return agent


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    procs = Procs()
    try:
        state = tmp_path_factory.mktemp("relay-a2a")
        relay = procs.add(RelayProc(state, name="relay"))
        example, port = start_example(procs)
        tunnels = {}
        for name, args, env, pings in [
            ("port", (str(port),), {}, True),
            ("app", ("--app", "examples.a2a_agent:app"), {"A2A_SSE_PING": "0"}, False),
        ]:
            token = issue_token(state, name)
            agent = start_agent(procs, relay, token, *args, name=f"agent-{name}", **env)
            tunnels[name] = A2ATunnel(name, agent, agent.url, pings)
        yield Stack(relay, example, port, tunnels)
    finally:
        procs.stop_all()


@pytest.fixture(params=["port", "app"])
def tunnel(request: pytest.FixtureRequest, stack: Stack) -> A2ATunnel:
    """Each tunnel in turn: the example agent behind a local port, then in-process."""
    return stack.tunnels[request.param]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # trust_env off: no proxy from the environment may sit between caller and relay.
    timeout = httpx.Timeout(CALLER_TIMEOUT)
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        yield client


@pytest.fixture
async def make_client(http: httpx.AsyncClient) -> AsyncIterator[MakeClient]:
    """``await make_client(base_url_or_card, streaming=True)``: an a2a-sdk client."""
    async with a2a_clients(http) as make:
        yield make
