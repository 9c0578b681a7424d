"""Calls to peers: the request, the reading of answers (A2A 0.3 and 1.0, streams), every
refusal of the proxy as its own exception, and the peers' URL cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.molecule.calls import PeerUrlCache, decode_reply, reply_result, request_body
from edge_agent.molecule.client import PlatformClient
from edge_agent.molecule.errors import (
    BadRequest,
    CallDenied,
    CallQueued,
    CallTimedOut,
    MoleculeError,
    PeerError,
    PeerNotFound,
    PeerUnreachable,
    TokenRejected,
)
from edge_agent.molecule.tokens import TokenStore

WS = "3f1c2a9e-0000-4000-8000-000000000001"
PEER = "3f1c2a9e-0000-4000-8000-000000000002"
TOKEN = "t" * 43


def client_for(handler: Any, tmp_path: Path) -> PlatformClient:
    return PlatformClient(
        "https://platform.example",
        WS,
        token_store=TokenStore(WS, tmp_path),
        token=TOKEN,
        transport=httpx.MockTransport(handler),
    )


def answering(status: int, body: Any, seen: list[httpx.Request] | None = None) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body)

    return handler


def test_request_body_for_a_text_and_for_a_message_object() -> None:
    body = request_body("hello")
    assert body["jsonrpc"] == "2.0" and body["method"] == "message/send"
    message = body["params"]["message"]
    assert message["role"] == "user" and message["parts"] == [{"kind": "text", "text": "hello"}]
    assert len(message["messageId"]) == 36 and body["id"] != message["messageId"]
    own = request_body({"messageId": "m-1", "parts": [{"text": "x"}]}, stream=True)
    assert own["method"] == "message/stream"
    assert own["params"]["message"] == {
        "messageId": "m-1",
        "parts": [{"text": "x"}],
        "role": "user",
    }


MESSAGE_03 = {
    "jsonrpc": "2.0",
    "id": 1,
    "result": {
        "kind": "message",
        "role": "agent",
        "parts": [{"kind": "text", "text": "HELLO"}, {"kind": "data", "data": {"x": 1}}],
        "metadata": {"echo": {"parts": [{"text": "not the answer"}]}},
    },
}
TASK_03 = {
    "jsonrpc": "2.0",
    "id": 1,
    "result": {
        "kind": "task",
        "history": [{"role": "user", "parts": [{"kind": "text", "text": "the question"}]}],
        "artifacts": [{"parts": [{"kind": "text", "text": "part one\n"}]}],
        "status": {"state": "completed", "message": {"parts": [{"kind": "text", "text": "done"}]}},
    },
}


def test_texts_of_a_message_and_a_task_skip_the_callers_echo() -> None:
    assert reply_result("p", 200, [MESSAGE_03]).texts == ["HELLO"]
    result = reply_result("p", 200, [TASK_03])
    assert result.texts == ["part one\n", "done"] and result.text == "part one\ndone"


def test_a_relayed_stream_of_a2a_1_0_events() -> None:
    events = [
        {"result": {"task": {"id": "t", "history": [{"parts": [{"text": "q"}]}]}}},
        {"result": {"artifactUpdate": {"artifact": {"parts": [{"text": "[1/2] A\n"}]}}}},
        {"result": {"artifactUpdate": {"artifact": {"parts": [{"text": "[2/2] A\n"}]}}}},
        {"result": {"statusUpdate": {"status": {"state": "TASK_STATE_COMPLETED"}}}},
    ]
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events).encode()
    documents = decode_reply(body)
    assert documents == events
    assert reply_result("p", 200, documents).text == "[1/2] A\n[2/2] A"


@pytest.mark.parametrize("body", [b"<html>", b"data: {not json}\n\n", b""])
def test_an_answer_that_is_not_json_is_a_peer_error(body: bytes) -> None:
    with pytest.raises(PeerError):
        decode_reply(body)


def test_a_json_rpc_error_is_a_peer_error() -> None:
    doc = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "Method not found"}}
    with pytest.raises(PeerError, match=r"Method not found \(code -32601\)"):
        reply_result("p", 200, [doc])


async def test_a_call_goes_through_the_proxy_as_this_workspace(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    async with client_for(answering(200, MESSAGE_03, seen), tmp_path) as client:
        result = await client.call_peer(PEER, "hello")
    (request,) = seen
    assert request.method == "POST"
    assert request.url == f"https://platform.example/workspaces/{PEER}/a2a"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["x-workspace-id"] == WS
    assert "x-timeout" not in request.headers  # it would lift the proxy's ceiling
    assert json.loads(request.content)["params"]["message"]["parts"][0]["text"] == "hello"
    assert result.text == "HELLO" and result.status == 200


REFUSALS: list[tuple[int, Any, type[MoleculeError], str]] = [
    (202, {"queued": True, "queue_id": "q-1", "queue_depth": 1}, CallQueued, "busy or slow"),
    (200, {"status": "queued", "delivery_mode": "poll", "method": "message/send"}, CallQueued,
     "poll delivery"),
    (403, {"error": "access denied: workspaces cannot communicate per hierarchy rules"},
     CallDenied, "hierarchy"),
    (404, {"error": "workspace not found"}, PeerNotFound, "workspace not found"),
    (502, {"error": "failed to reach workspace agent"}, PeerUnreachable, "failed to reach"),
    (503, {"error": "workspace has no URL", "status": "paused"}, PeerUnreachable, "no URL"),
    (504, {"error": "gateway timeout"}, CallTimedOut, "504"),
    (500, {"error": "Internal Server Error"}, PeerError, "Internal Server Error"),
    (401, {"error": "invalid caller auth token"}, TokenRejected, "calling workspace's token"),
    (400, {"error": "invalid JSON"}, BadRequest, "invalid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "kind", "text"), REFUSALS)
async def test_each_refusal_has_its_own_error(
    tmp_path: Path, status: int, body: Any, kind: type[MoleculeError], text: str
) -> None:
    async with client_for(answering(status, body), tmp_path) as client:
        with pytest.raises(kind, match=text) as info:
            await client.call_peer(PEER, "hello")
    assert type(info.value) is kind and TOKEN not in str(info.value)
    if isinstance(info.value, CallQueued) and status == 202:
        assert info.value.queue_id == "q-1"


async def test_no_answer_in_time_is_timed_out(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with client_for(handler, tmp_path) as client:
        with pytest.raises(CallTimedOut, match=r"no answer within 2\.5 s"):
            await client.call_peer(PEER, "hello", reply_timeout=2.5)
        with pytest.raises(ValueError):
            await client.call_peer(PEER, "hello", reply_timeout=0)


def test_the_url_cache_keeps_http_urls_for_their_ttl() -> None:
    now = [0.0]
    cache = PeerUrlCache(ttl=300, clock=lambda: now[0])
    cache.put("a", "https://relay.example/a/a/")
    cache.put("b", "remote://no-inbound")
    cache.put("c", "")
    assert cache.get("a") == "https://relay.example/a/a/" and len(cache) == 1
    now[0] = 299.0
    assert cache.get("a") is not None
    now[0] = 300.0
    assert cache.get("a") is None and len(cache) == 0
    cache.put("a", "http://x/")
    cache.invalidate("a")
    assert cache.get("a") is None


async def test_peers_seed_the_cache_and_an_unreachable_peer_leaves_it(tmp_path: Path) -> None:
    rows = [{"id": PEER, "name": "pm", "url": "https://relay.example/a/p/", "status": "online"}]
    answers = iter(
        [
            httpx.Response(200, json=rows),
            httpx.Response(502, json={"error": "failed to reach workspace agent"}),
            httpx.Response(200, json={"id": PEER, "url": "https://relay.example/a/q/"}),
        ]
    )
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return next(answers)

    async with client_for(handler, tmp_path) as client:
        await client.get_peers()
        assert (await client.discover(PEER)).url == "https://relay.example/a/p/"  # cached
        with pytest.raises(PeerUnreachable):
            await client.call_peer(PEER, "hello")
        assert (await client.discover(PEER)).url == "https://relay.example/a/q/"  # asked again
    assert seen == [
        f"/registry/{WS}/peers",
        f"/workspaces/{PEER}/a2a",
        f"/registry/discover/{PEER}",
    ]
