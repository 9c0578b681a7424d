"""Poll delivery while the tunnel is down (contract 11), with real processes: the dev
platform, a relay of this test's own (stopping the package's relay would disturb the
other agents), ``edge-agent run --poll-after`` serving the example a2a-sdk agent, and a
peer workspace whose registered URL is a small inbox server in this process.

The peer keeps calling the agent through the platform's proxy, one new message every
``every`` seconds, before, during and after the outage. Like a real caller it retries a
call with the same messageId when the platform could not reach the agent (502/503/202),
and waits for the answer at its own URL when the platform says "queued for poll".

The fast variant (an outage of a few seconds) runs with the suite; the issue's
three-minute outage runs with ``EDGE_LONG_TESTS=1``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.procs import Procs
from tests.molecule_e2e.conftest import Stack
from tests.molecule_e2e.stack import Relay, RunAgent, answer_text, jsonrpc
from tests.support.threaded_uvicorn import ThreadedUvicorn

LONG = os.environ.get("EDGE_LONG_TESTS") == "1"

#: Longest wait for the agent to reconnect once the relay is back: its reconnect backoff
#: grows to 60 s (+ up to 5 s of jitter) during a long outage.
RECONNECT_WITHIN = 90.0
#: Longest wait for the answer of a call queued for poll.
REPLY_WITHIN = 30.0


@dataclasses.dataclass(frozen=True)
class Outage:
    seconds: float
    poll_after: float
    every: float  # a new call this often


FAST = Outage(seconds=8.0, poll_after=2.0, every=0.5)
THREE_MINUTES = Outage(seconds=180.0, poll_after=5.0, every=2.0)


class PeerInbox:
    """The peer's URL: an ASGI app that records the answers posted back to it."""

    def __init__(self) -> None:
        self.replies: dict[str, list[dict[str, Any]]] = {}
        self.bearers: set[str] = set()
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        doc = json.loads(body)
        message = doc["params"]["message"]
        with self.lock:
            self.bearers.add(dict(scope["headers"]).get(b"authorization", b"").decode())
            in_reply_to = (message.get("metadata") or {}).get("inReplyTo", "")
            self.replies.setdefault(in_reply_to, []).append(message)
        result = {"kind": "message", "role": "agent", "messageId": str(uuid.uuid4()), "parts": []}
        answer = json.dumps({"jsonrpc": "2.0", "id": doc.get("id"), "result": result}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": answer})


class Caller:
    """The peer workspace calling the agent: one thread, one message per ``every`` s."""

    def __init__(self, stack: Stack, target: str, peer: tuple[str, str], every: float) -> None:
        self.stack, self.target, self.peer, self.every = stack, target, peer, every
        self.texts: dict[str, str] = {}
        self.sync: dict[str, str] = {}  # answered at once: messageId -> first text part
        self.queued: set[str] = set()  # "queued for poll": the answer comes to the inbox
        self.retries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="caller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        n = 0
        with httpx.Client(base_url=self.stack.platform.url, timeout=30.0) as http:
            while not self._stop.is_set():
                n += 1
                self._call(http, f"call {n}", str(uuid.uuid4()))
                self._stop.wait(self.every)

    def _call(self, http: httpx.Client, text: str, message_id: str) -> None:
        self.texts[message_id] = text
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.peer[1]}",
            "X-Workspace-ID": self.peer[0],
        }
        body = jsonrpc(text, message_id=message_id)
        deadline = time.monotonic() + RECONNECT_WITHIN + 60
        while time.monotonic() < deadline:
            try:
                resp = http.post(f"/workspaces/{self.target}/a2a", content=body, headers=headers)
            except httpx.HTTPError:
                resp = None
            if resp is not None and resp.status_code == 200:
                doc = resp.json()
                if doc.get("status") == "queued" and doc.get("delivery_mode") == "poll":
                    self.queued.add(message_id)
                    return
                self.sync[message_id] = answer_text(resp)  # the example answers a Task
                return
            self.retries += 1  # 502/503 (tunnel down, push mode), 202 (cut mid-call)
            time.sleep(1.0)
        raise AssertionError(f"{text}: never accepted by the platform")


def _register_peer(stack: Stack, inbox_url: str) -> tuple[str, str, str]:
    """A push-mode workspace at ``inbox_url``: (id, token, its inbound secret)."""
    peer_id, token = stack.admin.create_workspace("poll-peer")
    body = {"id": peer_id, "url": inbox_url, "agent_card": {"name": "peer"},
            "delivery_mode": "push"}  # fmt: skip
    done = stack.admin.request(
        "POST", "/registry/register", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert done.status_code == 200, done.text
    return peer_id, token, done.json()["platform_inbound_secret"]


def _start_agent(
    stack: Stack, procs: Procs, relay: Relay, outage: Outage, name: str
) -> tuple[str, RunAgent]:
    workspace_id, token = stack.admin.create_workspace(name)
    args = [
        "-v", "--platform", stack.platform.url, "--workspace-id", workspace_id,
        "--relay", relay.url, "--relay-token", relay.issue(workspace_id),
        "--token-dir", str(stack.tmp / f"tokens-{name}"), "--heartbeat-interval", "1",
        "--inspect", "127.0.0.1:0", "--to", stack.origin.url,
        "--poll-after", str(outage.poll_after),
    ]  # fmt: skip
    agent = procs.add(RunAgent(args, {"EDGE_PLATFORM_TOKEN": token}, name=name))
    agent.wait_line(r"^Registered: ", 30)
    return workspace_id, agent


def _acked(stack: Stack, workspace_id: str) -> int:
    """The platform's last_acked_seq (an ack of 0 changes nothing and answers it)."""
    resp = stack.admin.request(
        "POST", f"/workspaces/{workspace_id}/activity/ack", json={"acked_seq": 0}
    )
    assert resp.status_code == 200, resp.text
    return int(resp.json()["last_acked_seq"])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("outage", [FAST, THREE_MINUTES], ids=["seconds", "three-minutes"])
def test_an_outage_is_answered_by_poll_without_loss_or_duplicate(
    stack: Stack, outage: Outage, tmp_path: Path
) -> None:
    if not stack.is_next:
        pytest.skip("poll delivery exists in the next generation only (see the next test)")
    if outage is THREE_MINUTES and not LONG:
        pytest.skip("the three-minute outage runs with EDGE_LONG_TESTS=1")
    inbox = PeerInbox()
    relay = Relay(tmp_path / "relay")
    with Procs() as procs, ThreadedUvicorn(inbox, "peer-inbox") as server, _running(relay):
        peer_id, peer_token, peer_secret = _register_peer(stack, f"http://localhost:{server.port}/")
        workspace_id, agent = _start_agent(stack, procs, relay, outage, "poller")
        caller = Caller(stack, workspace_id, (peer_id, peer_token), outage.every)
        caller.start()
        try:
            time.sleep(3 * outage.every + 1)
            relay.stop()  # the tunnel goes down
            down_at = time.monotonic()
            agent.wait_line(r"^Tunnel down for over .* polls for them", outage.poll_after + 15)
            switched_after = agent.stamp(r"^Tunnel down for over") - down_at
            time.sleep(max(0.0, outage.seconds - (time.monotonic() - down_at)))
            relay.start()
            agent.wait_line(r"^Tunnel back: ", RECONNECT_WITHIN)
            time.sleep(3 * outage.every + 2)  # calls around the return to push
        finally:
            caller.stop()
        _wait_replies(inbox, caller.queued)
    _check(stack, caller, inbox, peer_secret)
    row = stack.admin.workspace(workspace_id)
    assert row["url"] == relay.workspace_url(workspace_id)  # push again, at the relay URL
    assert _acked(stack, workspace_id) > 0
    polled = len(caller.queued)
    print(
        f"\noutage {outage.seconds:g} s: {len(caller.texts)} calls, {len(caller.sync)} pushed, "
        f"{polled} by poll, {caller.retries} retries; poll mode {switched_after:.1f} s "
        f"after the relay stopped (--poll-after {outage.poll_after:g})"
    )
    assert polled >= (outage.seconds - outage.poll_after) / outage.every * 0.6
    assert len(caller.sync) >= 3


def _wait_replies(inbox: PeerInbox, queued: set[str]) -> None:
    deadline = time.monotonic() + REPLY_WITHIN
    while time.monotonic() < deadline:
        with inbox.lock:
            if queued <= set(inbox.replies):
                return
        time.sleep(0.2)


def _check(stack: Stack, caller: Caller, inbox: PeerInbox, peer_secret: str) -> None:
    deliveries: Counter[str] = stack.origin.recorder.deliveries
    for message_id, text in caller.texts.items():
        assert deliveries[message_id] == 1, (text, deliveries[message_id])
        replies = inbox.replies.get(message_id, [])
        if message_id in caller.sync:
            assert caller.sync[message_id] == text.upper()
            assert replies == [], (text, "answered at once and again by poll")
        else:
            assert message_id in caller.queued, text
            assert len(replies) == 1, (text, len(replies))
            assert replies[0]["role"] == "agent"
            assert replies[0]["parts"][0]["text"] == text.upper()
    assert set(inbox.replies) <= set(caller.texts)
    # The answers came through the platform: it presents the peer's inbound secret.
    assert inbox.bearers == {f"Bearer {peer_secret}"}


def test_the_current_generation_has_no_poll_mode(stack: Stack, tmp_path: Path) -> None:
    if stack.is_next:
        pytest.skip("the next generation polls (see the test above)")
    relay = Relay(tmp_path / "relay")
    with Procs() as procs, _running(relay):
        workspace_id, agent = _start_agent(stack, procs, relay, Outage(4.0, 1.0, 1.0), "nopoll")
        relay.stop()
        agent.wait_line(r"poll_delivery_unavailable generation=current", 15)
        time.sleep(2.0)
        assert agent.count(r"poll_delivery_unavailable") == 1
        assert agent.count(r"^Tunnel down for over") == 0
        row = stack.admin.workspace(workspace_id)
        assert row["url"] == relay.workspace_url(workspace_id)  # still registered for push


@contextlib.contextmanager
def _running(relay: Relay) -> Iterator[Relay]:
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()
