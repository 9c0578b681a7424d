"""State in SQLite survives a restart with the same ``--db`` file; only hashes of
tokens are stored, and the file is private (0600)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from aiohttp import web

from devplatform.config import ProxyLimits
from tests.devplatform.conftest import PlatformFactory, Upstream, bearer, echo_jsonrpc

MESSAGE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 3,
    "method": "message/send",
    "params": {"message": {"role": "user", "messageId": "persist-1", "parts": []}},
}


async def test_restart_keeps_workspaces_tokens_secrets_and_the_queue(
    make_platform: PlatformFactory, upstream: Upstream, tmp_path: Path
) -> None:
    db_path = str(tmp_path / "platform.db")

    async def stuck(_request: web.Request, _body: bytes) -> web.StreamResponse:
        await asyncio.sleep(1.0)
        return web.Response(text="late")

    upstream.behaviour = stuck
    first = await make_platform(db_path=db_path, proxy=ProxyLimits(idle_timeout=0.3))
    workspace_id, token = await first.registered(upstream.url, secrets={"API_KEY": "v1"})
    queued = await first.client.post(f"/workspaces/{workspace_id}/a2a", json=MESSAGE)
    assert queued.status_code == 202
    await first.client.aclose()
    await first.server.close()

    upstream.behaviour = echo_jsonrpc
    second = await make_platform(db_path=db_path)
    state = await second.client.get(f"/workspaces/{workspace_id}/state", headers=bearer(token))
    assert state.json()["status"] == "online"  # the liveness key survived too
    values = await second.client.get(
        f"/workspaces/{workspace_id}/secrets/values", headers=bearer(token)
    )
    assert values.json() == {"API_KEY": "v1"}
    again = await second.register(workspace_id, upstream.url, token)
    assert again.json() == {"status": "registered"}  # no new token: the old one is live

    await second.heartbeat(workspace_id, token, active_tasks=0)
    deadline = asyncio.get_running_loop().time() + 5
    while len(upstream.seen) < 2:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert upstream.seen[1].body == upstream.seen[0].body  # re-sent after the restart


def files_starting_with(directory: Path, prefix: str) -> bytes:
    """The database and its WAL/SHM files, concatenated."""
    return b"".join(p.read_bytes() for p in directory.iterdir() if p.name.startswith(prefix))


async def test_only_token_hashes_are_stored_in_a_private_file(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    db_path = tmp_path / "platform.db"
    dev = await make_platform(db_path=str(db_path))
    workspace_id, token = await dev.create_external(secrets={"K": "secret-value"})
    extra = await dev.client.post(f"/workspaces/{workspace_id}/tokens", headers=bearer(token))
    second = extra.json()["auth_token"]
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600
    stored = {
        bytes(row["token_hash"])
        for row in dev.server.platform.db.all("SELECT token_hash FROM workspace_auth_tokens")
    }
    assert stored == {hashlib.sha256(t.encode()).digest() for t in (token, second)}
    on_disk = files_starting_with(tmp_path, "platform.db")
    assert token.encode() not in on_disk and second.encode() not in on_disk
    assert token[:8].encode() in on_disk  # the display prefix is kept, like the real table
