"""Fixtures of the Molecule end-to-end suite: ``edge-devplatform``, ``edge-relay`` and
``edge-agent run`` as real processes on 127.0.0.1, in both platform generations.

Each generation gets one platform and one relay for the whole suite (``stack``), and one
long-running agent (``served``) that most tests share: it serves workspace "served"
with the example A2A agent as its local server and a small command as its child.
Tests that end an agent (delete, revocation) start their own. Every process is stopped
in a ``finally``; the child command also exits by itself when its parent is gone.
"""

from __future__ import annotations

import dataclasses
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import Procs
from tests.molecule_e2e.origin import A2AOrigin
from tests.molecule_e2e.stack import Admin, Platform, Relay, RunAgent, agent_args

GENERATIONS = ("current", "next")

#: The child command: writes its environment's key names, its pid and a digest of
#: DEMO_SECRET to the file given as its argument, then stays up until stopped or
#: orphaned (so it never outlives a killed agent for long).
CHILD = r"""
import hashlib, json, os, sys, time
parent = os.getppid()
doc = {"pid": os.getpid(), "keys": sorted(os.environ),
       "digest": hashlib.sha256(os.environ.get("DEMO_SECRET", "").encode()).hexdigest()}
with open(sys.argv[1] + ".tmp", "w") as fh:
    json.dump(doc, fh)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
print("child: environment written", flush=True)
while os.getppid() == parent:
    time.sleep(0.2)
"""


@dataclasses.dataclass
class Stack:
    generation: str
    platform: Platform
    relay: Relay
    admin: Admin
    origin: A2AOrigin
    tmp: Path
    procs: Procs

    @property
    def is_next(self) -> bool:
        return self.generation == "next"

    def workspace(self, name: str) -> Workspace:
        workspace_id, token = self.admin.create_workspace(name)
        relay_token = self.relay.issue(workspace_id)
        return Workspace(workspace_id, token, relay_token, self.tmp / f"tokens-{name}")

    def start_agent(
        self, ws: Workspace, *extra: str, env: dict[str, str] | None = None, name: str = "agent"
    ) -> RunAgent:
        """``edge-agent run`` for ``ws`` (its token passed in the environment)."""
        args = agent_args(self.platform, self.relay, ws.id, ws.relay_token, ws.token_dir, *extra)
        env = {"EDGE_PLATFORM_TOKEN": ws.token} | (env or {})
        return self.procs.add(RunAgent(args, env, name=f"{name}-{self.generation}"))

    def child_command(self, out: Path) -> list[str]:
        return ["--", sys.executable, "-c", CHILD, str(out)]


@dataclasses.dataclass
class Workspace:
    id: str
    token: str
    relay_token: str
    token_dir: Path


@dataclasses.dataclass
class Served:
    """The shared agent: workspace, its process, what it printed, what its child saw."""

    stack: Stack
    ws: Workspace
    agent: RunAgent
    url: str
    child_file: Path
    secret_value: str


@pytest.fixture(scope="session")
def origin() -> Iterator[A2AOrigin]:
    with A2AOrigin() as server:
        yield server


@pytest.fixture(scope="package", params=GENERATIONS)
def stack(
    request: pytest.FixtureRequest, origin: A2AOrigin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    generation: str = request.param
    tmp = tmp_path_factory.mktemp(f"molecule-{generation}")
    procs = Procs()
    (tmp / "plugins").mkdir()
    platform = Platform(generation, tmp / "platform.db", tmp / "plugins")
    relay = Relay(tmp / "relay-state")
    try:
        platform.start()
        relay.start()
        yield Stack(generation, platform, relay, Admin(platform), origin, tmp, procs)
    finally:
        procs.stop_all()
        relay.stop()
        platform.stop()


@pytest.fixture(scope="module")
def served(stack: Stack) -> Served:
    """Workspace "served" with secret DEMO_SECRET, and its agent, registered."""
    ws = stack.workspace("served")
    value = "demo-" + secrets.token_urlsafe(24)
    stack.admin.set_secret(ws.id, "DEMO_SECRET", value)
    child_file = stack.tmp / f"child-env-{ws.id}.json"  # one "served" per test module
    agent = stack.start_agent(
        ws, "--to", stack.origin.url, *stack.child_command(child_file), name="served"
    )
    url = agent.wait_url()
    agent.wait_line(r"^Registered: ", 30)
    return Served(stack, ws, agent, url, child_file, value)
