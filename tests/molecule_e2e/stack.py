"""The three real processes of a Molecule setup, on 127.0.0.1, and the admin's view.

* :class:`Platform`: ``edge-devplatform serve`` with a SQLite file, so it can be killed
  and started again on the same port with the same state, and a ``--plugins-dir``;
* :class:`Relay`: ``edge-relay serve`` on a fixed port with ``--public-url
  http://localhost:PORT`` (the platform's SSRF rules accept the name ``localhost`` and
  refuse ``127.0.0.1``), restartable the same way;
* :class:`RunAgent`: ``edge-agent run ...``, with its merged output kept;
* :class:`Admin`: what an operator does through the platform's API (create a workspace,
  set a secret, pause, resume, delete, revoke tokens) and the A2A proxy call.

Processes come from :mod:`tests.e2e.procs`, so every one is stopped (SIGTERM, then
SIGKILL) by the fixture that started it.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.procs import BIN, Proc, RelayProc, clean_env, free_port, issue_token

ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

#: Seconds a proxy call with an agent caller may take before the platform queues it
#: (``--a2a-timeout``; it applies only to callers that send ``X-Workspace-ID``).
AGENT_CALL_CEILING = 2.0

#: Heartbeat interval of the agents under test (state polls share it).
HEARTBEAT = 1.0


class _OneProcess:
    """A service run as one process, killed (SIGKILL, for a restart) or stopped."""

    proc: Proc | None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class Platform(_OneProcess):
    """``edge-devplatform serve``; :meth:`restart` kills it and starts it again."""

    def __init__(self, generation: str, db: Path, plugins_dir: Path | None = None) -> None:
        self.generation = generation
        self.db = db
        self.plugins_dir = plugins_dir
        self.port = 0
        self.proc: Proc | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Platform:
        argv = [
            str(BIN / "edge-devplatform"), "serve", "--host", "127.0.0.1",
            "--port", str(self.port), "--generation", self.generation, "--db", str(self.db),
            "--a2a-timeout", str(AGENT_CALL_CEILING),
        ]  # fmt: skip
        if self.plugins_dir is not None:
            argv += ["--plugins-dir", str(self.plugins_dir)]
        self.starts += 1
        env = clean_env(EDGE_DEVPLATFORM_ADMIN_TOKEN=ADMIN_TOKEN)
        self.proc = Proc(f"platform-{self.generation}-{self.starts}", argv, env=env)
        try:
            match = self.proc.wait_line(r"listening on http://127\.0\.0\.1:(\d+)")
        except BaseException:
            self.proc.stop()
            raise
        self.port = int(match.group(1))
        return self

    def restart(self, down_for: float = 0.0) -> None:
        """SIGKILL (no clean shutdown), ``down_for`` seconds of outage, then the same
        port and database again."""
        self.kill()
        time.sleep(down_for)
        self.start()


class Relay(_OneProcess):
    """``edge-relay serve`` on a port chosen once, so a restart keeps the public URL."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.proc: RelayProc | None = None

    @property
    def url(self) -> str:
        """Where agents connect."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def public_url(self) -> str:
        return f"http://localhost:{self.port}"

    def start(self) -> Relay:
        self.proc = RelayProc(
            self.state_dir, "--public-url", self.public_url, port=self.port, name="relay"
        )
        return self

    def restart(self) -> None:
        self.kill()
        self.start()

    def issue(self, name: str) -> str:
        return issue_token(self.state_dir, name)

    def workspace_url(self, workspace_id: str) -> str:
        return f"{self.public_url}/a/{workspace_id}/"


class RunAgent(Proc):
    """``edge-agent run`` with ``args``; ``env`` adds to a clean environment."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], name: str = "agent") -> None:
        argv = [str(BIN / "edge-agent"), "run", *args]
        super().__init__(name, argv, env=clean_env(**env))

    def wait_url(self, timeout: float = 30.0) -> str:
        return self.wait_line(r"^Forwarding (\S+) -> ", timeout).group(1)

    def registrations(self) -> int:
        return self.count(r"^Registered")


def agent_args(
    platform: Platform,
    relay: Relay,
    workspace_id: str,
    relay_token: str,
    token_dir: Path,
    *extra: str,
) -> list[str]:
    return [
        "-v", "--platform", platform.url, "--workspace-id", workspace_id,
        "--relay", relay.url, "--relay-token", relay_token, "--token-dir", str(token_dir),
        "--heartbeat-interval", str(HEARTBEAT),
        # An ephemeral inspector port: the package keeps dozens of agents alive, more
        # than the default's 20-port search from 4040 has room for.
        "--inspect", "127.0.0.1:0", *extra,
    ]  # fmt: skip


class Admin:
    """The platform's API as an operator (admin token) and as a caller uses it."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def _client(self) -> httpx.Client:
        # A new client each time: the platform may have been restarted in between.
        return httpx.Client(base_url=self.platform.url, timeout=30.0, trust_env=False)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**ADMIN, **kwargs.pop("headers", {})}
        with self._client() as http:
            return http.request(method, path, headers=headers, **kwargs)

    def create_workspace(self, name: str) -> tuple[str, str]:
        """An external workspace without URL; returns (id, its token shown once)."""
        body = {"name": name, "runtime": "external", "external": True}
        resp = self.request("POST", "/workspaces", json=body)
        assert resp.status_code == 201, resp.text
        data = resp.json()
        return data["id"], data["connection"]["auth_token"]

    def workspace(self, workspace_id: str) -> dict[str, Any]:
        resp = self.request("GET", f"/workspaces/{workspace_id}")
        assert resp.status_code == 200, resp.text
        row: dict[str, Any] = resp.json()
        return row

    def set_secret(self, workspace_id: str, key: str, value: str) -> None:
        resp = self.request(
            "POST", f"/workspaces/{workspace_id}/secrets", json={"key": key, "value": value}
        )
        assert resp.status_code == 200, resp.text

    def pause(self, workspace_id: str) -> None:
        resp = self.request("POST", f"/workspaces/{workspace_id}/pause")
        assert resp.status_code == 200, resp.text

    def resume(self, workspace_id: str) -> None:
        resp = self.request("POST", f"/workspaces/{workspace_id}/resume")
        assert resp.status_code == 200, resp.text

    def delete(self, workspace_id: str) -> None:
        resp = self.request("DELETE", f"/workspaces/{workspace_id}")
        assert resp.status_code == 200, resp.text

    def revoke_all_tokens(self, workspace_id: str) -> int:
        listing = self.request("GET", f"/workspaces/{workspace_id}/tokens").json()
        for token in listing["tokens"]:
            resp = self.request("DELETE", f"/workspaces/{workspace_id}/tokens/{token['id']}")
            assert resp.status_code == 200, resp.text
        return len(listing["tokens"])

    def a2a(
        self,
        workspace_id: str,
        text: str,
        *,
        message_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        caller: tuple[str, str] | None = None,
    ) -> httpx.Response:
        """``POST /workspaces/:id/a2a`` with a ``message/send``. Without ``caller`` the
        admin token is the credential (a canvas caller); ``caller`` = (workspace id,
        its token) calls as that agent workspace."""
        headers = {"Content-Type": "application/json"}
        if caller is not None:
            headers |= {"Authorization": f"Bearer {caller[1]}", "X-Workspace-ID": caller[0]}
        body = jsonrpc(text, message_id=message_id, metadata=metadata)
        with self._client() as http:
            if caller is None:
                headers |= ADMIN
            return http.post(f"/workspaces/{workspace_id}/a2a", content=body, headers=headers)


def jsonrpc(
    text: str, *, message_id: str | None = None, metadata: Mapping[str, Any] | None = None
) -> bytes:
    message: dict[str, Any] = {
        "role": "user",
        "messageId": message_id or str(uuid.uuid4()),
        "parts": [{"kind": "text", "text": text}],
    }
    if metadata:
        message["metadata"] = dict(metadata)
    doc = {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": message}}
    return json.dumps(doc).encode()


def answer_text(resp: httpx.Response) -> str:
    """The first text part of a JSON-RPC ``message/send`` result: the example agent's
    Task (its first artifact), or a Message."""
    assert resp.status_code == 200, (resp.status_code, resp.text)
    result = resp.json()["result"]
    parts = result["artifacts"][0]["parts"] if result.get("kind") == "task" else result["parts"]
    return str(parts[0]["text"])
