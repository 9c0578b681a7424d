"""A browser's WebSocket through the tunnel: headless Chromium (Debian's ``chromium``,
driven over the DevTools protocol) loads a page served through the tunnel, whose script
opens a WebSocket to its own origin, exchanges a text and a binary message and closes
with 4001; the test reads what the page saw. Once to the in-process app (``--app``),
once passed through to the same app under uvicorn on a local port.

Chromium is installed with apt-get when missing (root, as in CI); without it the tests
are skipped with the reason printed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvicorn

from tests.e2e.conftest import Tunnel
from tests.e2e.procs import Procs, RelayProc, issue_token, start_agent
from tests.e2e.ws_app import app
from tests.inspect.cdp import Browser
from tests.support.apt import apt

APP = "tests.e2e.ws_app:app"


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        why = apt("update") or apt("install", "-y", "--no-install-recommends", "chromium")
        found = shutil.which("chromium")
        if found is None:
            reason = f"no chromium: {why or 'apt-get installed it but it is not on PATH'}"
            print(reason)
            pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def tunnels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Procs, Path]]:
    with Procs() as procs:
        yield procs, tmp_path_factory.mktemp("wsbrowser")


def _tunnel(procs: Procs, state: Path, name: str, *target: str) -> Tunnel:
    relay = procs.add(RelayProc(state / name, name=f"relay-{name}"))
    token = issue_token(state / name, name)
    agent = procs.add(start_agent(relay, token, *target, name=f"agent-{name}"))
    return Tunnel(relay, agent, token, agent.url)


@pytest.fixture
async def local_port() -> AsyncIterator[int]:
    """The same app under uvicorn on 127.0.0.1 (its own WebSocket implementation)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", ws="websockets-sansio", lifespan="off")
    server = uvicorn.Server(config)
    sock.listen(128)  # connections wait in the backlog until uvicorn serves them
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield sock.getsockname()[1]
    server.should_exit = True
    await task


async def _page_result(chromium: str, url: str) -> dict[str, object]:
    async with Browser(chromium) as browser:
        await browser.goto(url)
        text = await browser.wait_for(
            "(t => t !== 'pending' && t)(document.getElementById('result').textContent)",
            within=10,
        )
        assert text != "error", browser.errors
        result: dict[str, object] = json.loads(text)
        return result


EXPECTED = {
    "protocol": "chat.v2",  # the server's choice among the page's two
    "got": ["hello from the browser", "1,2,3"],
    "code": 4001,
    "reason": "browser done",
}


async def test_browser_websocket_to_the_in_process_app(
    chromium: str, tunnels: tuple[Procs, Path]
) -> None:
    tunnel = _tunnel(*tunnels, "browserapp", "--app", APP)
    assert await _page_result(chromium, tunnel.url) == EXPECTED
    tunnel.agent.wait_line(r"GET /echo 101 \d+ ms", timeout=5)


async def test_browser_websocket_passed_through_to_a_local_server(
    chromium: str, tunnels: tuple[Procs, Path], local_port: int
) -> None:
    tunnel = _tunnel(*tunnels, "browserport", str(local_port))
    assert await _page_result(chromium, tunnel.url) == EXPECTED
    tunnel.agent.wait_line(r"GET /echo 101 \d+ ms", timeout=5)
