"""A public caller that goes away cancels the local request: the relay RESETs the
stream, the agent aborts the request, and the local server sees the disconnect, for an
HTTP target (uvicorn on 127.0.0.1) and for an in-process ASGI app (``--app``)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.e2e.client import session, until
from tests.e2e.conftest import Tunnel
from tests.e2e.origin import Origin
from tests.e2e.procs import Procs, issue_token, start_agent

#: Seconds from the caller's disconnect to the local server noticing (typically a few
#: milliseconds: one RESET frame and a closed socket).
NOTICE_WITHIN = 10.0


async def _call_then_leave(port: int, request: bytes, wait_for: bytes | None) -> float:
    """Send ``request``; read until ``wait_for`` arrived (None: leave right away);
    close the connection. Returns when it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    if wait_for is not None:
        seen = b""
        async with asyncio.timeout(20):
            while wait_for not in seen:
                chunk = await reader.read(4096)
                assert chunk, f"connection closed before {wait_for!r}: {seen!r}"
                seen += chunk
    writer.close()
    return time.monotonic()


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n".encode()


@pytest.mark.parametrize("head", ["1", "0"])
async def test_http_target_sees_the_disconnect(tunnel: Tunnel, origin: Origin, head: str) -> None:
    key = f"leave-http-{head}"
    request = _get(f"/a/demo/hold?key={key}&head={head}")
    if head == "1":  # after the response head and a first chunk reached the caller
        left = await _call_then_leave(tunnel.relay.port, request, b"holding\n")
    else:  # while the local server has not answered yet
        left = await _leave_once_started(tunnel.relay.port, request, origin, key)
    await until(lambda: key in origin.disconnected, NOTICE_WITHIN, "origin saw the disconnect")
    print(f"\norigin saw the disconnect {1000 * (origin.disconnected[key] - left):.1f} ms later")


async def _leave_once_started(port: int, request: bytes, origin: Origin, key: str) -> float:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    await until(lambda: key in origin.started, 20, "origin got the request")
    writer.close()
    return time.monotonic()


async def test_http_target_sees_an_upload_abandoned(tunnel: Tunnel, origin: Origin) -> None:
    key = "leave-upload"
    _reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.relay.port)
    head = f"POST /a/demo/sink?key={key} HTTP/1.1\r\nHost: relay\r\n"
    writer.write(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
    for _ in range(8):
        writer.write(b"10000\r\n" + b"u" * 0x10000 + b"\r\n")
    await writer.drain()
    await until(lambda: key in origin.started, 20, "origin got the upload")
    writer.close()
    await until(lambda: key in origin.disconnected, NOTICE_WITHIN, "origin saw the disconnect")
    assert key not in origin.uploads  # never taken for a complete body


@pytest.fixture(scope="module")
def app_tunnel(tunnel: Tunnel, session_procs: Procs) -> Tunnel:
    """Agent ``app`` on the default relay, serving tests/e2e/asgi_app.py in-process."""
    token = issue_token(tunnel.relay.state_dir, "app")
    args = ("--app", "tests.e2e.asgi_app:app")
    agent = session_procs.add(start_agent(tunnel.relay, token, *args, name="agent-app"))
    return Tunnel(tunnel.relay, agent, token, agent.url)


async def _seen(app_tunnel: Tunnel, key: str) -> dict[str, bool]:
    async with session() as http, http.get(app_tunnel.at(f"seen?key={key}")) as resp:
        assert resp.status == 200
        seen: dict[str, bool] = json.loads(await resp.read())
        return seen


@pytest.mark.parametrize("head", ["1", "0"])
async def test_asgi_app_sees_the_disconnect(app_tunnel: Tunnel, head: str) -> None:
    key = f"leave-app-{head}"
    request = _get(f"/a/app/hold?key={key}&head={head}")
    _reader, writer = await asyncio.open_connection("127.0.0.1", app_tunnel.relay.port)
    writer.write(request)
    await writer.drain()
    deadline = time.monotonic() + 20
    while not (await _seen(app_tunnel, key))["started"]:
        assert time.monotonic() < deadline, "the app never got the request"
        await asyncio.sleep(0.05)
    writer.close()
    left = time.monotonic()
    while not (await _seen(app_tunnel, key))["disconnected"]:
        assert time.monotonic() - left < NOTICE_WITHIN, "the app never saw the disconnect"
        await asyncio.sleep(0.05)
    print(f"\napp saw the disconnect within {1000 * (time.monotonic() - left):.0f} ms")
