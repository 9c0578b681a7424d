"""The inspector of a real ``edge-agent http`` behind a real ``edge-relay serve``: what
public callers send through the tunnel shows up in its API, masked, and replays."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.inspect.conftest import InspectedTunnel
from tests.inspect.local import SEEN

SECRET = "Bearer e2e-secret-0123456789"


def rows(tunnel: InspectedTunnel) -> list[dict[str, Any]]:
    return list(httpx.get(tunnel.inspector + "/api/requests", timeout=5).json())


def row_for(tunnel: InspectedTunnel, path: str, state: str = "done") -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for row in rows(tunnel):
            if row["path"] == path and row["state"] == state:
                return row
        time.sleep(0.02)
    raise AssertionError(f"no {state} row for {path}: {rows(tunnel)}")


def detail(tunnel: InspectedTunnel, rid: int) -> dict[str, Any]:
    return dict(httpx.get(f"{tunnel.inspector}/api/requests/{rid}", timeout=5).json())


def test_a_public_request_is_captured_masked_and_replays(tunnel: InspectedTunnel) -> None:
    body = {"probe": "e2e"}
    headers = {"Authorization": SECRET, "Cookie": "sid=e2e-cookie-value"}
    answer = httpx.post(tunnel.at("echo?q=1"), json=body, headers=headers, timeout=10)
    assert answer.status_code == 200
    row = row_for(tunnel, "/echo?q=1")
    assert (row["method"], row["status"]) == ("POST", 200) and row["duration"] is not None
    shown = detail(tunnel, row["id"])
    assert json.loads(shown["request"]["body"]["text"]) == body
    text = json.dumps(shown)
    assert "e2e-secret" not in text and "e2e-cookie-value" not in text
    # Headers are shown as they crossed the tunnel (their own spelling).
    seen = [[n.lower(), v] for n, v in shown["request"]["headers"]]
    assert ["authorization", "Bearer [masked]"] in seen
    assert ["x-forwarded-prefix", "/a/inspected"] in seen

    replayed = httpx.post(f"{tunnel.inspector}/api/requests/{row['id']}/replay", timeout=5)
    new_id = replayed.json()["id"]
    deadline = time.monotonic() + 5
    while (again := detail(tunnel, new_id))["state"] != "done":
        assert time.monotonic() < deadline, again
        time.sleep(0.02)
    assert again["replay_of"] == row["id"] and again["status"] == 200
    assert SEEN[-1]["headers"]["authorization"] == SECRET
    assert json.loads(SEEN[-1]["body"]) == body


def test_an_a2a_stream_through_the_tunnel_is_grouped_by_task(tunnel: InspectedTunnel) -> None:
    call = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "SendStreamingMessage",
        "params": {"message": {"role": "ROLE_USER", "messageId": "e2e-m", "parts": []}},
    }
    with httpx.stream("POST", tunnel.at("a2a"), json=call, timeout=10) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert len(events) == 4
    row = row_for(tunnel, "/a2a")
    assert row["kind"] == "sse"
    assert row["a2a"] == {
        "method": "SendStreamingMessage",
        "id": 3,
        "messageId": "e2e-m",
        "taskIds": ["task-1"],
        "contextIds": ["ctx-1"],
    }
    labels = [e["a2a"] for e in detail(tunnel, row["id"])["timeline"]]
    assert labels == [
        "task TASK_STATE_SUBMITTED",
        "statusUpdate TASK_STATE_WORKING",
        "artifactUpdate",
        "statusUpdate TASK_STATE_COMPLETED",
    ]


def test_the_agent_metrics_count_what_it_served(tunnel: InspectedTunnel) -> None:
    for _ in range(3):
        assert httpx.get(tunnel.at("echo?m=1"), timeout=10).status_code == 200
    text = httpx.get(f"{tunnel.inspector}/metrics", timeout=5).text
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(samples['edge_agent_requests_total{class="2xx"}']) >= 3
    assert float(samples["edge_agent_connected"]) == 1.0
    assert float(samples["edge_agent_request_duration_seconds_count"]) >= 3
    assert float(samples['edge_agent_bytes_total{direction="out"}']) > 0
