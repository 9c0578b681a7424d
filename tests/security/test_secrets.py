"""No token or secret in any log line or error body, with every process at debug level.

One whole setup runs with maximum logging: ``edge-devplatform -v`` (the "next"
generation, which hands out an inbound secret), ``edge-relay -vv``, ``edge-agent run
-vv`` serving a workspace (platform token, relay token, a workspace secret pulled into
its child's environment, the inbound secret it then requires), and ``edge-agent http
-vvv`` (WebSocket frames logged too) with bearer and basic caller auth. Traffic goes
through all of it, with right and wrong credentials, plus an agent with a mistyped relay
token. Then every line each process printed, and every error body callers got, is
searched for each secret (whole, and a 16-character piece of it).

Also: the relay's token store holds SHA-256 hashes only, and the agent's workspace
token cache is 0600 files in a 0700 folder.
"""

from __future__ import annotations

import base64
import hashlib
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import (
    BIN,
    AgentProc,
    Proc,
    Procs,
    RelayProc,
    clean_env,
    free_port,
    issue_token,
    start_agent,
)
from tests.molecule_e2e.origin import A2AOrigin
from tests.molecule_e2e.stack import ADMIN_TOKEN, Admin, Platform, RunAgent, answer_text

pytestmark = pytest.mark.timeout(180)

CALLER_BEARER = "caller-bearer-Zk4vW9eQ2mLp"
BASIC_PASSWORD = "basic-pw-Rt6yU1oPaS3d"
WORKSPACE_SECRET = "workspace-secret-Hn8bV5cX0zQw"

#: The workspace agent's child: stays up while its parent lives.
CHILD = "import os, time\nparent = os.getppid()\nwhile os.getppid() == parent: time.sleep(0.2)"


class VerbosePlatform(Platform):
    """``edge-devplatform -v serve`` (the stack's platform, with debug logging)."""

    def start(self) -> VerbosePlatform:
        argv = [
            str(BIN / "edge-devplatform"), "-v", "serve", "--host", "127.0.0.1", "--port", "0",
            "--generation", self.generation, "--db", str(self.db),
        ]  # fmt: skip
        env = clean_env(EDGE_DEVPLATFORM_ADMIN_TOKEN=ADMIN_TOKEN)
        self.proc = Proc("platform", argv, env=env)
        match = self.proc.wait_line(r"listening on http://127\.0\.0\.1:(\d+)")
        self.port = int(match.group(1))
        return self


@pytest.fixture(scope="module")
def a2a_origin() -> Iterator[A2AOrigin]:
    with A2AOrigin() as server:
        yield server


def _pieces(secret: str) -> list[str]:
    """The secret, and a 16-character piece from its middle (a truncated leak)."""
    middle = len(secret) // 2
    return [secret, secret[max(0, middle - 8) : middle + 8]]


def test_no_secret_in_any_log_or_error_body(a2a_origin: A2AOrigin, tmp_path: Path) -> None:
    procs = Procs()
    platform = VerbosePlatform("next", tmp_path / "platform.db")
    outputs: list[Proc] = []
    bodies: list[str] = []
    try:
        platform.start()
        assert platform.proc is not None
        outputs.append(platform.proc)
        port = free_port()
        state = tmp_path / "relay"
        relay = procs.add(
            RelayProc(state, "-vv", "--public-url", f"http://localhost:{port}", port=port)
        )
        outputs.append(relay)

        admin = Admin(platform)
        workspace_id, platform_token = admin.create_workspace("secretive")
        admin.set_secret(workspace_id, "DEMO_SECRET", WORKSPACE_SECRET)
        run_token = issue_token(state, workspace_id)
        token_dir = tmp_path / "molecule"
        run = procs.add(
            RunAgent(
                [
                    "-vv", "--platform", platform.url, "--workspace-id", workspace_id,
                    "--relay", relay.url, "--relay-token", run_token,
                    "--token-dir", str(token_dir), "--heartbeat-interval", "1",
                    "--to", a2a_origin.url, "--", sys.executable, "-c", CHILD,
                ],
                {"EDGE_PLATFORM_TOKEN": platform_token},
                name="run",
            )
        )  # fmt: skip
        outputs.append(run)
        run_url = run.wait_url()
        run.wait_line(r"^Registered: ", 30)
        inbound = (token_dir / workspace_id / ".platform_inbound_secret").read_text()

        http_token = issue_token(state, "plain")
        plain = procs.add(
            start_agent(
                relay,
                http_token,
                str(a2a_origin.port),
                "-vvv",
                "--caller-auth",
                f"bearer:{CALLER_BEARER}",
                "--caller-auth",
                f"basic:ops:{BASIC_PASSWORD}",
                name="plain",
            )
        )
        outputs.append(plain)

        # Traffic: through the platform's proxy (it presents the inbound secret) ...
        assert answer_text(admin.a2a(workspace_id, "hello")) == "HELLO"
        basic = "Basic " + base64.b64encode(f"ops:{BASIC_PASSWORD}".encode()).decode()
        with httpx.Client(timeout=30, trust_env=False) as client:
            # ... straight to the workspace's URL, with and without the inbound secret ...
            for auth in (None, f"Bearer {inbound}x", f"Bearer {inbound}"):
                headers = {"Authorization": auth} if auth else {}
                resp = client.post(run_url, content=b"{}", headers=headers)
                bodies.append(resp.text + repr(resp.headers))
            # ... and to the plain tunnel with each caller credential, right and wrong.
            for auth in (
                None,
                f"Bearer {CALLER_BEARER}",
                f"Bearer {CALLER_BEARER[:-1]}",
                basic,
                "Basic " + base64.b64encode(b"ops:wrong").decode(),
            ):
                headers = {"Authorization": auth} if auth else {}
                resp = client.get(plain.url + "?q=1", headers=headers)
                bodies.append(resp.text + repr(resp.headers))
            # The relay's refusal of a wrong agent token (what the agent would print).
            resp = client.get(
                relay.url + "/_edge/connect?name=plain",
                headers={"Authorization": f"Bearer {http_token}x"},
            )
            bodies.append(resp.text + repr(resp.headers))
        typo = procs.add(
            AgentProc(
                str(a2a_origin.port), "-vv", "--relay", relay.url, "--token", http_token + "x",
                name="typo",
            )
        )  # fmt: skip
        assert typo.wait(30) != 0
        outputs.append(typo)
    finally:
        procs.stop_all()
        platform.stop()

    secrets = {
        "platform workspace token": platform_token,
        "platform admin token": ADMIN_TOKEN,
        "inbound secret": inbound,
        "relay token (run)": run_token,
        "relay token (http)": http_token,
        "mistyped relay token": http_token + "x",
        "caller bearer": CALLER_BEARER,
        "caller basic password": BASIC_PASSWORD,
        "caller basic header": basic.split(" ", 1)[1],
        "workspace secret": WORKSPACE_SECRET,
    }
    texts = {proc.name: "\n".join(proc.lines) for proc in outputs}
    texts["error bodies"] = "\n".join(bodies)
    print(f"\nsearched {sum(len(t) for t in texts.values())} characters of output")
    assert " DEBUG " in texts["relay"] and " DEBUG " in texts["plain"]  # debug really was on
    for where, text in texts.items():
        for what, value in secrets.items():
            for piece in _pieces(value):
                assert piece not in text, f"{what} found in {where}"

    # The relay keeps hashes only.
    store = (state / "tokens.json").read_text()
    for token in (run_token, http_token):
        assert token not in store and token[4:20] not in store
        assert hashlib.sha256(token.encode()).hexdigest() in store
    # The workspace token cache: 0600 files in a 0700 folder.
    folder = token_dir / workspace_id
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert (folder / ".auth_token").read_text() == platform_token
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
