"""Relay-made errors: JSON ``{"error": {"code", "message"}}``, the ``x-edge-error``
header, the contract's status for each stable code. Most run on the ``strict`` relay
(response timeout 1 s, bodies up to 1 MiB, 3 streams per agent)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.e2e.client import raw_exchange, read_response, relay_error, session, until
from tests.e2e.conftest import STRICT_MAX_BODY, STRICT_MAX_STREAMS, STRICT_RESPONSE_TIMEOUT, Tunnel
from tests.e2e.origin import Origin
from tests.e2e.procs import Procs, free_port, issue_token, start_agent


async def _get(url: str) -> tuple[aiohttp.ClientResponse, str]:
    async with session() as http, http.get(url) as resp:
        return resp, await relay_error(resp)


@pytest.mark.parametrize("path", ["/a/nosuch/", "/a/nosuch/deep/path?q=1", "/elsewhere"])
async def test_unknown_name_is_404(strict: Tunnel, path: str) -> None:
    resp, code = await _get(strict.relay.url + path)
    assert (resp.status, code) == (404, "unknown_tunnel")


async def test_name_with_a_token_but_no_agent_is_503(strict: Tunnel) -> None:
    issue_token(strict.relay.state_dir, "never-connected")
    resp, code = await _get(strict.relay.url + "/a/never-connected/")
    assert (resp.status, code) == (503, "agent_offline")
    assert int(resp.headers["retry-after"]) > 0


async def test_stopped_agent_is_503_with_retry_after(
    strict: Tunnel, origin: Origin, procs: Procs
) -> None:
    token = issue_token(strict.relay.state_dir, "gone")
    agent = procs.add(start_agent(strict.relay, token, str(origin.port), name="agent-gone"))
    async with session() as http, http.get(agent.url + "echo") as resp:
        assert resp.status == 200
    agent.stop()
    assert agent.popen.returncode == 0
    resp, code = await _get(agent.url + "echo")
    assert (resp.status, code) == (503, "agent_offline")
    assert int(resp.headers["retry-after"]) > 0


async def test_local_target_refused_is_502(strict: Tunnel, procs: Procs) -> None:
    token = issue_token(strict.relay.state_dir, "refused")
    agent = procs.add(start_agent(strict.relay, token, str(free_port()), name="agent-refused"))
    resp, code = await _get(agent.url + "anything")
    assert (resp.status, code) == (502, "target_unreachable")
    agent.wait_line(r"^\d\d:\d\d:\d\d GET /anything CONNECT_ERROR ")


@pytest.mark.parametrize("mode", ["length", "chunked"])
async def test_target_failing_mid_body_cuts_the_response(strict: Tunnel, mode: str) -> None:
    """After the head reached the caller, an error cannot be a status any more: the
    response ends without its proper end (short of Content-Length, or no last chunk)."""
    request = f"GET /a/demo/fail?mode={mode} HTTP/1.1\r\nHost: relay\r\n\r\n".encode()
    resp = await raw_exchange(strict.relay.port, request)
    assert resp.status == 200
    assert not resp.complete
    assert resp.body.startswith(b"x" * 1000) or resp.body == b""
    if mode == "length":
        assert resp.values("content-length") == ["1000000"]
    else:
        assert resp.values("transfer-encoding") == ["chunked"]
    async with session() as http, http.get(strict.at(f"fail?mode={mode}")) as aresp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await aresp.read()


async def test_no_response_head_in_time_is_504(strict: Tunnel, origin: Origin) -> None:
    key = "nohead"
    start = time.monotonic()
    resp, code = await _get(strict.at(f"nohead?s=30&key={key}"))
    elapsed = time.monotonic() - start
    assert (resp.status, code) == (504, "response_timeout")
    assert STRICT_RESPONSE_TIMEOUT <= elapsed < STRICT_RESPONSE_TIMEOUT + 5
    # The relay gave up on the stream: the origin's request is cancelled as well.
    await until(lambda: key in origin.disconnected, 10, "origin saw the cancel")


async def test_body_over_the_limit_is_413_content_length(strict: Tunnel, origin: Origin) -> None:
    # Announced too large: refused from the head alone, before any body is sent.
    head = (
        "POST /a/demo/sink?key=big-cl HTTP/1.1\r\nHost: relay\r\n"
        f"Content-Length: {STRICT_MAX_BODY + 1}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.relay.port)
    try:
        writer.write(head.encode())
        await writer.drain()
        async with asyncio.timeout(10):
            resp = await read_response(reader)
    finally:
        writer.close()
    assert resp.status == 413
    assert resp.values("x-edge-error") == ["body_too_large"]
    assert b'"code": "body_too_large"' in resp.body
    assert "big-cl" not in origin.started  # nothing went down the tunnel


async def test_body_over_the_limit_is_413_chunked(strict: Tunnel, origin: Origin) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(STRICT_MAX_BODY // 65536 + 4):
            yield b"c" * 65536

    async with session() as http, http.post(strict.at("sink?key=big-chunked"), data=body()) as resp:
        code = await relay_error(resp)
    assert (resp.status, code) == (413, "body_too_large")
    assert "big-chunked" not in origin.uploads  # the origin never took it for complete


async def test_too_many_streams_is_429(strict: Tunnel, origin: Origin) -> None:
    writers = []
    try:
        for i in range(STRICT_MAX_STREAMS):
            reader, writer = await asyncio.open_connection("127.0.0.1", strict.relay.port)
            writers.append(writer)
            writer.write(f"GET /a/demo/hold?key=busy-{i} HTTP/1.1\r\nHost: r\r\n\r\n".encode())
            await writer.drain()
            async with asyncio.timeout(20):
                assert (await read_response(reader, head_only=True)).status == 200
        resp, code = await _get(strict.at("echo"))
        assert (resp.status, code) == (429, "too_many_streams")
    finally:
        for writer in writers:
            writer.close()
    # The streams are freed when their callers leave: the tunnel serves again.
    keys = [f"busy-{i}" for i in range(STRICT_MAX_STREAMS)]
    await until(lambda: all(k in origin.disconnected for k in keys), 10, "holds released")
    async with session() as http, http.get(strict.at("echo")) as ok:
        assert ok.status == 200
