"""``edge-agent call``: one workspace calls another through the platform's proxy and back,
and every refusal of the proxy ends the command with its own exit code and a clear line
(real processes: the dev platform in both generations, the relay, two agents serving the
example A2A agent)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator

import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.molecule.clishared import (
    EXIT_CALL_DENIED,
    EXIT_CALL_QUEUED,
    EXIT_PEER_UNREACHABLE,
)
from edge_agent.molecule.errors import CallDenied
from tests.e2e.procs import free_port, run_cli
from tests.molecule_e2e.conftest import Served, Stack, Workspace
from tests.molecule_e2e.test_run import SETTLE


def call(stack: Stack, caller: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    """``edge-agent call ARGS`` as ``caller`` (its token from the cache its run wrote)."""
    base = [
        "--platform", stack.platform.url, "--workspace-id", caller.id,
        "--token-dir", str(caller.token_dir),
    ]  # fmt: skip
    return run_cli("edge-agent", "call", *args, *base, timeout=60)


@pytest.fixture(scope="module")
def peer(served: Served) -> Workspace:
    """A second workspace, served in-process by the example agent, beside ``served``."""
    stack = served.stack
    ws = stack.workspace("peer")
    agent = stack.start_agent(ws, "--app", "examples.a2a_agent:app", name="peer")
    agent.wait_line(r"^Registered: ", SETTLE)
    return ws


def test_a_call_to_a_peer_and_back(served: Served, peer: Workspace) -> None:
    stack = served.stack
    delivered = sum(stack.origin.recorder.deliveries.values())
    there = call(stack, peer, served.ws.id, "hello from the peer")
    assert there.returncode == 0, there.stderr
    assert there.stdout.splitlines()[0] == "HELLO FROM THE PEER"
    assert sum(stack.origin.recorder.deliveries.values()) == delivered + 1
    back = call(stack, served.ws, peer.id, "and back", "--json")
    assert back.returncode == 0, back.stderr
    answer = json.loads(back.stdout)
    assert answer["result"]["artifacts"][0]["parts"][0]["text"] == "AND BACK"  # a Task


def test_edge_agent_call_from_a_program(served: Served, peer: Workspace) -> None:
    stack = served.stack

    async def main() -> str:
        agent = EdgeAgent(
            platform_url=stack.platform.url,
            workspace_id=peer.id,
            relay_url=stack.relay.url,
            relay_token=peer.relay_token,
            target="8000",
            token_dir=peer.token_dir,
        )
        async with agent:
            result = await agent.call(served.ws.id, "from a program")
            with pytest.raises(CallDenied):
                await agent.call(str(uuid.uuid4()), "nobody")
        return result.text

    assert asyncio.run(main()).splitlines()[0] == "FROM A PROGRAM"


def test_a_streamed_call_prints_every_chunk(served: Served, peer: Workspace) -> None:
    done = call(served.stack, served.ws, peer.id, "chunks", "--stream", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    chunks = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert chunks == [f"[{i}/5] CHUNKS" for i in range(1, 6)]


def test_an_unknown_peer(served: Served) -> None:
    # The hierarchy check comes first and knows no such workspace: 403, not 404 (the
    # 404 is what a canvas caller, with no X-Workspace-ID, gets).
    done = call(served.stack, served.ws, str(uuid.uuid4()), "anyone?")
    assert done.returncode == EXIT_CALL_DENIED
    assert "edge-agent: error: call " in done.stderr
    assert "also for a workspace that does not exist" in done.stderr


def test_the_hierarchy_refuses_a_cousin(served: Served) -> None:
    admin = served.stack.admin
    parent = admin.request("POST", "/workspaces", json={"name": "team", "external": True})
    child = admin.request(
        "POST",
        "/workspaces",
        json={"name": "member", "external": True, "parent_id": parent.json()["id"]},
    )
    assert child.status_code == 201, child.text
    done = call(served.stack, served.ws, child.json()["id"], "may I?")
    assert done.returncode == EXIT_CALL_DENIED
    assert "cannot communicate per hierarchy rules" in done.stderr


def test_an_unreachable_peer(served: Served) -> None:
    target = _with_url(served.stack, f"http://localhost:{free_port()}/")  # nothing listens
    done = call(served.stack, served.ws, target, "hello?")
    assert done.returncode == EXIT_PEER_UNREACHABLE
    assert "failed to reach workspace agent" in done.stderr


def test_a_silent_peer_is_queued(served: Served) -> None:
    with _silent_server() as port:
        target = _with_url(served.stack, f"http://localhost:{port}/")
        done = call(served.stack, served.ws, target, "are you there?")
    assert done.returncode == EXIT_CALL_QUEUED
    assert "queued by the platform" in done.stderr
    assert "will not come back" in done.stderr


def test_a_poll_mode_peer_is_queued(served: Served) -> None:
    stack = served.stack
    if not stack.is_next:
        pytest.skip("poll delivery exists in the next generation only")
    ws = stack.workspace("polls")
    body = {"id": ws.id, "agent_card": {"name": "poller"}, "delivery_mode": "poll"}
    headers = {"Authorization": f"Bearer {ws.token}"}
    registered = stack.admin.request("POST", "/registry/register", json=body, headers=headers)
    assert registered.status_code == 200, registered.text
    done = call(stack, served.ws, ws.id, "for later")
    assert done.returncode == EXIT_CALL_QUEUED
    assert "poll delivery" in done.stderr


def _with_url(stack: Stack, url: str) -> str:
    """A workspace created with ``url`` (not checked at create; dispatch allows
    ``localhost``); returns its id."""
    body = {"name": "by-url", "external": True, "url": url}
    created = stack.admin.request("POST", "/workspaces", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


@contextlib.contextmanager
def _silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
