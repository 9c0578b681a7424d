"""The inspector's page in headless Chromium (Chrome DevTools protocol), against a real
tunnel: it loads with no console error, a request through the tunnel appears within a
second without a reload, the detail view shows its body, replay adds a row, a masked
header stays masked. Screenshots go to a temporary folder, or into docs/ with
``UPDATE_SCREENSHOTS=1``."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.inspect.cdp import Browser, find_chromium
from tests.inspect.conftest import InspectedTunnel

#: The first test may install chromium with apt-get (minutes on a clean machine).
pytestmark = pytest.mark.timeout(1200)

DOCS = Path(__file__).resolve().parents[2] / "docs"
SECRET = "Bearer page-secret-0123456789"


@pytest.fixture(scope="module")
def chromium() -> str:
    path, why = find_chromium()
    if path is None:
        print(f"\nSKIPPED the inspector's page tests: {why}")
        pytest.skip(why)
    return path


@pytest.fixture
async def page(chromium: str, tunnel: InspectedTunnel) -> AsyncIterator[Browser]:
    async with Browser(chromium) as browser:
        await browser.goto(tunnel.inspector + "/")
        await browser.wait_for("document.getElementById('live').textContent === 'live'")
        yield browser


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return DOCS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path_factory.mktemp("shots")


async def call(tunnel: InspectedTunnel, method: str, path: str, **kwargs: object) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.request(method, tunnel.at(path), **kwargs)  # type: ignore[arg-type]
        await response.aread()


def rows_with(text: str) -> str:
    """JS: the ids of list rows whose text contains ``text``."""
    return (
        "[...document.querySelectorAll('#rows tr')]"
        f".filter(r => r.textContent.includes({json.dumps(text)})).map(r => +r.dataset.id)"
    )


async def test_the_page_live_detail_replay_and_masking(
    page: Browser, tunnel: InspectedTunnel, shots: Path
) -> None:
    assert page.errors == []
    await call(tunnel, "GET", "sse")
    await call(tunnel, "GET", "bin")
    started = time.monotonic()
    body = {"probe": "page-test", "items": [1, 2, 3]}
    await call(tunnel, "POST", "orders?page=1", json=body, headers={"Authorization": SECRET})
    ids = await page.wait_for(rows_with("/orders?page=1"), within=1.0)
    assert time.monotonic() - started < 1.0  # appeared without a reload
    row_id = ids[0]

    await page.eval(f"document.querySelector('#rows tr[data-id=\"{row_id}\"]').click()")
    text = await page.wait_for(
        "document.querySelector('#detail pre.body') && "
        "document.querySelector('#detail pre.body').textContent"
    )
    assert json.loads(text) == body
    detail = await page.eval("document.getElementById('detail').innerText")
    assert "Bearer [masked]" in detail and "page-secret" not in detail
    html = await page.eval("document.documentElement.outerHTML")
    assert "page-secret" not in html
    (shots / "inspector-detail.png").write_bytes(await page.screenshot())

    await page.eval("document.getElementById('replay').click()")
    replays = await page.wait_for(rows_with(f"replay of #{row_id}"), within=3.0)
    assert replays and replays[0] > row_id
    await page.wait_for(
        f"document.querySelector('#rows tr[data-id=\"{replays[0]}\"] td:nth-child(5)')"
        ".textContent === '200'"
    )
    detail = await page.eval("document.getElementById('detail').innerText")
    assert "page-secret" not in detail  # the replay's row is masked too
    (shots / "inspector-list.png").write_bytes(await page.screenshot())
    assert page.errors == []


async def test_filters_and_the_a2a_task_view(
    page: Browser, tunnel: InspectedTunnel, shots: Path
) -> None:
    call_doc = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "SendStreamingMessage",
        "params": {"message": {"role": "ROLE_USER", "messageId": "page-m", "parts": []}},
    }
    await call(tunnel, "POST", "a2a", json=call_doc)
    await call(tunnel, "GET", "missing-here")
    await page.wait_for(rows_with("/a2a"), within=2.0)

    await page.eval(
        "const f = document.getElementById('f-path'); f.value = 'a2a';"
        "f.dispatchEvent(new Event('input'))"
    )
    await asyncio.sleep(0.1)
    shown = await page.eval(
        "[...document.querySelectorAll('#rows tr td.path')].map(td => td.textContent)"
    )
    assert shown and all("a2a" in path for path in shown)

    await page.eval("document.getElementById('tab-tasks').click()")
    await page.wait_for("document.getElementById('tasks').textContent.includes('task task-1')")
    await page.eval("document.querySelector('#tasks .group .title').click()")
    events = await page.wait_for(
        "document.querySelector('#tasks .events').textContent.includes('TASK_STATE_COMPLETED')"
        " && document.querySelector('#tasks .events').textContent"
    )
    assert "artifactUpdate" in events
    (shots / "inspector-tasks.png").write_bytes(await page.screenshot())
    assert page.errors == []
