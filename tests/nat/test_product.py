"""The product behind real NAT: relay on the internet side, agent and origin on the laptop.

Each test skips, naming the missing piece, while a product command is not built yet.
Bounds are wide (shared 2-core machine); the printed timings are the measurements.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import uuid
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_stream_response_text, new_text_message
from a2a.types import Role, SendMessageRequest

from tests.nat.faults import impaired, silent_drop
from tests.nat.product import (
    A2A_HEADERS,
    BIN,
    SseReader,
    a2a_streaming_request,
    poll,
    request,
    require,
    start_a2a_example,
    start_agent_http,
    start_platform,
    start_relay,
    start_sse_origin,
)
from tests.nat.topology import Topology

pytestmark = pytest.mark.root

#: The issue's cut.
LINK_CUT_SECONDS = 20.0
#: Keepalive of both ends in the link-cut test. With the default 20 s ping and 20 s
#: timeout a 20 s cut is usually NOT detected (TCP resends the held data once the link is
#: back and the stream goes on); with 5 s + 5 s both ends drop the tunnel within ~10 s
#: of the cut, so the session must be resumed once the link is back.
CUT_KEEPALIVE = ("--ping-interval", "5", "--ping-timeout", "5")
#: After the link returns: the stream goes on within this (reconnect and resume).
STREAM_OUTCOME_BOUND = 30.0
CUT_INTERVAL = 0.25
#: After the link returns (or the drop ends): the same URL answers again.
RECOVERY_BOUND = 60.0
#: Silent drop -> relay answers agent_offline: pings every 20 s, 20 s timeout, + margin.
HALF_OPEN_DETECT_BOUND = 75.0
#: Drop ended -> agent back; its reconnect backoff may have grown during the drop.
HALF_OPEN_RECOVERY_BOUND = 90.0
CHUNK_RE = re.compile(r"\[(\d+)/(\d+)\]")


def is_ok(response: httpx.Response) -> bool:
    return response.status_code == 200


def is_offline(response: httpx.Response) -> bool:
    return response.status_code == 503 and response.headers.get("x-edge-error") == "agent_offline"


async def a2a_exchange(base_url: str) -> tuple[list[str], list[tuple[float, str, str]]]:
    """SendMessage, then SendStreamingMessage, with the a2a-sdk client against ``base_url``."""
    # The SDK client's own httpx default is a 5 s timeout; 30 s covers the NAT path.
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), trust_env=False) as http:
        plain = await create_client(base_url, ClientConfig(httpx_client=http, streaming=False))
        hello = new_text_message("hello from the internet", role=Role.ROLE_USER)
        reply = [ev async for ev in plain.send_message(SendMessageRequest(message=hello))]
        # The example answers with a Task; its artifacts hold the reply.
        texts = [part.text for ev in reply for a in ev.task.artifacts for part in a.parts]
        stream = await create_client(base_url, ClientConfig(httpx_client=http, streaming=True))
        message = new_text_message("a b", role=Role.ROLE_USER)
        message.metadata.update({"chunks": 4, "interval": 0.3})
        events = []
        async for ev in stream.send_message(SendMessageRequest(message=message)):
            kind = str(ev.WhichOneof("payload"))
            text = get_stream_response_text(ev) if kind == "artifact_update" else ""
            events.append((time.monotonic(), kind, text))
        return texts, events


def test_a2a_calls_reach_the_agent_behind_nat_through_the_relay(topo: Topology) -> None:
    require("edge-relay serve", "edge-agent http")
    relay = start_relay(topo)
    _, url = start_agent_http(topo, relay, "laptop", start_a2a_example(topo))
    texts, events = topo.internet.call(asyncio.run, a2a_exchange(url))
    assert texts[0] == "HELLO FROM THE INTERNET"
    kinds = [kind for _, kind, _ in events]
    assert kinds == ["task", "status_update"] + ["artifact_update"] * 4 + ["status_update"]
    artifacts = [(t, text) for t, kind, text in events if kind == "artifact_update"]
    assert "".join(text for _, text in artifacts) == "".join(f"[{i}/4] A B\n" for i in range(1, 5))
    # Produced 0.3 s apart: the first arrives long before the last (not buffered).
    assert artifacts[-1][0] - artifacts[0][0] > 0.6


def test_a2a_calls_through_the_platform_reach_the_agent_behind_nat(topo: Topology) -> None:
    require("edge-relay serve", "edge-agent run", "edge-devplatform serve")
    relay, platform = start_relay(topo), start_platform(topo)
    workspace = {"name": "nat-laptop", "runtime": "external", "external": True}
    created = request(
        topo.internet, "POST", platform.url + "/workspaces", json=workspace, headers=platform.admin
    ).json()
    ws_id = created["id"]
    argv = [str(BIN / "edge-agent"), "run", "--platform", platform.url, "--workspace-id", ws_id]
    argv += ["--token", created["connection"]["auth_token"]]
    argv += ["--token-dir", str(topo.log_dir / "molecule")]
    argv += ["--relay", relay.url, "--relay-token", relay.issue_token(ws_id)]
    argv += ["--to", f"http://127.0.0.1:{start_a2a_example(topo)}"]
    topo.spawn(topo.laptop, "agent-run", argv)

    def registered(response: httpx.Response) -> bool:
        body = response.json() if response.status_code == 200 else {}
        return bool(body.get("status") == "online" and body.get("url"))

    took, response = poll(
        topo.internet, f"{platform.url}/workspaces/{ws_id}", registered, within=60,
        headers=platform.admin,
    )  # fmt: skip
    public_url = response.json()["url"]
    assert public_url == f"{relay.url}/a/{ws_id}/"
    print(f"registered {took:.1f} s after the platform had the workspace")
    # As the platform's proxy sends it: A2A 0.3 JSON-RPC, no A2A-Version header.
    message = {
        "role": "user",
        "messageId": str(uuid.uuid4()),
        "parts": [{"kind": "text", "text": "via the platform"}],
    }
    call = {"jsonrpc": "2.0", "id": "1", "method": "message/send", "params": {"message": message}}
    answer = request(
        topo.internet, "POST", f"{platform.url}/workspaces/{ws_id}/a2a", json=call, timeout=60
    )
    assert answer.status_code == 200, answer.text
    assert "VIA THE PLATFORM" in answer.text
    # The registered URL is the relay's: a caller can use it straight, streaming included.
    texts, events = topo.internet.call(asyncio.run, a2a_exchange(public_url))
    assert texts[0] == "HELLO FROM THE INTERNET"
    assert [kind for _, kind, _ in events][-2:] == ["artifact_update", "status_update"]


def chunk_numbers(reader: SseReader) -> list[int]:
    """The chunk numbers ``[i/n]`` of the example agent's artifact events, in arrival order."""
    numbers = []
    for event in reader.events:
        result: dict[str, Any] = event.json().get("result", {})
        for part in result.get("artifactUpdate", {}).get("artifact", {}).get("parts", []):
            if m := CHUNK_RE.search(part.get("text", "")):
                numbers.append(int(m.group(1)))
    return numbers


def test_link_cut_during_a_stream_then_the_same_url_works_again(topo: Topology) -> None:
    require("edge-relay serve", "edge-agent http")
    relay = start_relay(topo, extra=CUT_KEEPALIVE)
    example = start_a2a_example(topo)
    _, url = start_agent_http(topo, relay, "laptop", example, extra=CUT_KEEPALIVE)
    card_url = url + ".well-known/agent-card.json"
    poll(topo.internet, card_url, is_ok, within=10)
    body = a2a_streaming_request("cut", chunks=400, interval=CUT_INTERVAL)  # a 100 s stream
    reader = SseReader(topo.internet, "POST", url, body, A2A_HEADERS).start()
    reader.wait_events(4, timeout=15)

    topo.link_down()
    cut_at = time.monotonic()
    time.sleep(LINK_CUT_SECONDS)
    topo.link_up()
    up_at = time.monotonic()

    # Both ends dropped the silent tunnel during the cut and kept the session (resumption,
    # tests/nat/test_resume.py): once the link is back the stream goes on where it was,
    # nothing lost, repeated or reordered.
    before = len(chunk_numbers(reader))
    deadline = time.monotonic() + STREAM_OUTCOME_BOUND
    while len(chunk_numbers(reader)) < before + 8:
        assert reader.error is None and not reader.ended_cleanly, repr(reader.error)
        assert time.monotonic() < deadline, "the stream did not go on after the cut"
        time.sleep(0.1)
    resumed = relay.proc.wait_output(r"session_resumed .*detail=(.+)", timeout=5).group(1)
    print(f"stream: went on after the cut ({resumed}; {len(chunk_numbers(reader))} chunks)")
    numbers = chunk_numbers(reader)
    assert numbers == list(range(1, len(numbers) + 1)), numbers

    poll(topo.internet, card_url, is_ok, within=RECOVERY_BOUND)
    print(
        f"same URL: 200 {time.monotonic() - up_at:.1f} s after the link returned "
        f"({time.monotonic() - cut_at:.1f} s after the cut began)"
    )


def test_sse_through_delay_and_loss_arrives_complete_in_order_incrementally(
    topo: Topology,
) -> None:
    require("edge-relay serve", "edge-agent http")
    relay = start_relay(topo)
    _, url = start_agent_http(topo, relay, "laptop", start_sse_origin(topo))
    poll(topo.internet, url + "hello", is_ok, within=10)
    count, interval = 50, 0.1
    with impaired(topo, delay_ms=100, loss_pct=1.0) as impairment:
        reader = SseReader(topo.internet, "GET", url + f"events?n={count}&interval={interval}")
        reader.start()
        assert reader.wait_done(60), f"stream not done in 60 s: {len(reader.events)} events"
    assert reader.status == 200 and reader.ended_cleanly, repr(reader.error)
    sent = [(event.json()["i"], event.json()["sent"], event.arrived) for event in reader.events]
    assert [i for i, _, _ in sent] == list(range(count))
    delays = [arrived - at for _, at, arrived in sent]
    spread = sent[-1][2] - sent[0][2]
    print(
        f"{impairment.kind}: per-event delay median {statistics.median(delays):.3f} s, "
        f"max {max(delays):.3f} s; arrivals spread over {spread:.2f} s"
    )
    # One way through the delay is 100 ms; a lost packet costs a retransmission timeout.
    assert min(delays) >= 0.09
    assert statistics.median(delays) < 1.0 and max(delays) < 5.0
    # Produced over 4.9 s: arrivals spread the same way, not bunched at the end.
    assert spread > 0.5 * (count - 1) * interval


def test_half_open_tunnel_is_detected_by_pings_and_recovered_from(topo: Topology) -> None:
    require("edge-relay serve", "edge-agent http")
    # Without resumption, which would keep the session (and its stream) for the grace.
    relay = start_relay(topo, extra=("--resume-grace", "0"))
    _, url = start_agent_http(topo, relay, "laptop", start_sse_origin(topo))
    poll(topo.internet, url + "hello", is_ok, within=10)
    reader = SseReader(topo.internet, "GET", url + "events?n=10000&interval=0.25").start()
    reader.wait_events(4, timeout=15)
    with silent_drop(topo):
        detected, _ = poll(topo.internet, url + "hello", is_offline, within=HALF_OPEN_DETECT_BOUND)
        # The session is gone, so is the stream it carried: a definite error, not a hang.
        assert reader.wait_done(timeout=10), "open stream still hanging after agent_offline"
    assert isinstance(reader.error, httpx.TransportError), (reader.ended_cleanly, reader.error)
    ids = [event.json()["i"] for event in reader.events]
    assert ids == list(range(len(ids)))
    recovered, response = poll(topo.internet, url + "hello", is_ok, within=HALF_OPEN_RECOVERY_BOUND)
    assert response.text == "hello from the laptop"
    print(f"half-open: relay offline after {detected:.1f} s, agent back {recovered:.1f} s later")
