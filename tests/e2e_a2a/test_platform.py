"""A2A through the platform: the dev platform's proxy (``POST /workspaces/:id/a2a``)
calls the URL the workspace registered, which is the relay's, and the call crosses the
relay and ``edge-agent run`` to the example agent, which runs as the command of
``edge-agent run`` with the workspace's secrets in its environment.

The proxy buffers the whole answer and speaks A2A 0.3 (``message/send``, and no
``A2A-Version`` header: the real platform sends only ``Content-Type``), so the a2a-sdk
client is pointed at it through a card with one 0.3 JSON-RPC interface, and the call is
not streamed. Both platform generations run: "next" adds the inbound secret, which the
relay demands of every caller of the tunnel. The workspace's relay URL is also called
straight, streaming (in "current" only: in "next" only the platform holds the secret).

The relay listens on 127.0.0.1 but advertises ``http://localhost:PORT``: the platform
refuses ``127.0.0.1`` URLs and accepts the name ``localhost`` (see docs/devplatform.md).
"""

from __future__ import annotations

import dataclasses
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from a2a.client import ClientConfig, create_client
from a2a.types import AgentCard, GetExtendedAgentCardRequest

from examples import demo
from tests.e2e.procs import BIN, Proc, Procs, RelayProc, clean_env, free_port, issue_token
from tests.e2e_a2a.calls import (
    check_timed_stream,
    collect,
    first_answer_part,
    request,
    rpc_body,
    timed_stream_request,
)
from tests.e2e_a2a.conftest import CALLER_TIMEOUT, START_TIMEOUT

#: A secret set on the platform; only its name may ever come back.
SECRET_NAME, SECRET_VALUE = "DEMO_SECRET", "platform-secret-" + secrets.token_hex(8)


@dataclasses.dataclass
class Platform:
    generation: str
    url: str
    admin: str  # the admin token: the proxy's caller in "next" (a canvas caller)
    workspace: str
    relay_url: str  # what the relay advertises (http://localhost:PORT)
    agent: Proc  # edge-agent run
    public_url: str  # the workspace's URL the agent printed

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}


def start_platform(procs: Procs, generation: str, admin: str) -> str:
    argv = [str(BIN / "edge-devplatform"), "serve", "--port", "0"]
    env = clean_env(EDGE_DEVPLATFORM_ADMIN_TOKEN=admin)  # kept out of ps
    proc = procs.add(Proc("platform", [*argv, "--generation", generation], env=env))
    return proc.wait_line(r"listening on (http://\S+)", START_TIMEOUT).group(1)


def create_workspace(platform: str, admin: str) -> tuple[str, str]:
    """A new external workspace with a secret set; returns its id and token."""
    headers = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=platform, headers=headers, trust_env=False) as http:
        body = {"name": "edge-laptop", "runtime": "external", "external": True}
        created = http.post("/workspaces", json=body)
        assert created.status_code == 201, created.text
        ws = created.json()
        secret = {"key": SECRET_NAME, "value": SECRET_VALUE}
        assert http.post(f"/workspaces/{ws['id']}/secrets", json=secret).status_code == 200
        return str(ws["id"]), str(ws["connection"]["auth_token"])


def start_run(
    procs: Procs, tmp: Path, platform: str, workspace: str, token: str, relay: RelayProc
) -> tuple[Proc, str]:
    """``edge-agent run`` for the workspace, with the example agent as its command;
    returns it and the public URL it printed."""
    port = free_port()  # the example's port must be known before it starts
    example = [sys.executable, "-m", "examples.a2a_agent", "--port", str(port)]
    argv = [str(BIN / "edge-agent"), "run", "--platform", platform]
    argv += ["--workspace-id", workspace, "--token", token, "--token-dir", str(tmp / "tok")]
    argv += ["--relay", relay.url, "--relay-token", issue_token(relay.state_dir, workspace)]
    agent = procs.add(Proc("agent-run", [*argv, "--to", str(port), "--", *example], clean_env()))
    url = agent.wait_line(r"^Forwarding (\S+) -> ", START_TIMEOUT).group(1)
    agent.wait_line(r"^Registered: workspace ", START_TIMEOUT)
    agent.wait_line(rf"Uvicorn running on http://127\.0\.0\.1:{port}", START_TIMEOUT)
    return agent, url


def stop_leftover_command(agent: Proc) -> None:
    """The command runs in its own session: if the agent was killed rather than stopped,
    nothing else would stop it (its uvicorn prints its pid)."""
    for line in agent.lines:
        if line.startswith("INFO:     Started server process ["):
            pid = int(line.split("[")[1].rstrip("]"))
            if psutil.pid_exists(pid) and "examples.a2a_agent" in " ".join(
                psutil.Process(pid).cmdline()
            ):
                psutil.Process(pid).kill()


@pytest.fixture(scope="module", params=["current", "next"])
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    procs, generation = Procs(), str(request.param)
    tmp = tmp_path_factory.mktemp(f"platform-{generation}")
    try:
        admin = secrets.token_urlsafe(16)
        url = start_platform(procs, generation, admin)
        port = free_port()
        relay_url = f"http://localhost:{port}"
        relay = procs.add(RelayProc(tmp, "--public-url", relay_url, port=port))
        workspace, token = create_workspace(url, admin)
        agent, public_url = start_run(procs, tmp, url, workspace, token, relay)
        yield Platform(generation, url, admin, workspace, relay_url, agent, public_url)
    finally:
        started = list(procs.procs)
        procs.stop_all()
        for proc in started:
            stop_leftover_command(proc)


def proxy_card(platform: Platform) -> AgentCard:
    """What a 0.3 client needs to call the workspace through the proxy (the demo's card)."""
    return demo.proxy_card(f"{platform.url}/workspaces/{platform.workspace}/a2a")


async def test_platform_knows_only_the_relay_url(platform: Platform) -> None:
    expected = f"{platform.relay_url}/a/{platform.workspace}/"
    assert platform.public_url == expected
    async with httpx.AsyncClient(trust_env=False) as http:
        row = (await http.get(f"{platform.url}/workspaces/{platform.workspace}")).json()
    assert row["url"] == expected and row["status"] == "online"
    assert [i["url"] for i in row["agent_card"]["supportedInterfaces"]] == [expected]


async def test_send_message_through_the_platform_proxy(platform: Platform) -> None:
    headers = platform.admin_headers() if platform.generation == "next" else {}
    timeout = httpx.Timeout(CALLER_TIMEOUT)
    requests_before = platform.agent.count(r"^\d\d:\d\d:\d\d POST / ")
    async with httpx.AsyncClient(headers=headers, timeout=timeout, trust_env=False) as http:
        config = ClientConfig(httpx_client=http, streaming=False)
        client = await create_client(proxy_card(platform), client_config=config)
        try:
            [reply] = await collect(client, request("via the platform"))
        finally:
            await client.close()
    # The example ran as the command of edge-agent run, with the platform's secret.
    assert reply.answer == ["VIA THE PLATFORM", f"secrets: {SECRET_NAME}"]
    assert SECRET_VALUE not in str(reply.event) and SECRET_VALUE not in platform.agent.output()
    # The call went down the tunnel: edge-agent printed it.
    platform.agent.wait_count(r"^\d\d:\d\d:\d\d POST / ", requests_before + 1, timeout=5)


async def test_relay_demands_the_inbound_secret_in_next(platform: Platform) -> None:
    """In "next" the relay refuses a caller of the tunnel without the platform inbound
    secret (the proxy sends it); in "current" there is none and anyone may call."""
    direct = f"http://127.0.0.1:{platform.relay_url.rsplit(':', 1)[1]}/a/{platform.workspace}/"
    body = rpc_body("SendMessage", "direct")
    async with httpx.AsyncClient(trust_env=False, timeout=CALLER_TIMEOUT) as http:
        answer = await http.post(direct, json=body, headers={"A2A-Version": "1.0"})
    if platform.generation == "next":
        assert answer.status_code == 401, answer.text
        assert answer.headers["x-edge-error"] == "caller_unauthorized"
        assert "www-authenticate" in answer.headers
    else:
        assert answer.status_code == 200, answer.text
        assert first_answer_part(answer.json()["result"]) == {"text": "DIRECT"}


@pytest.mark.parametrize("platform", ["current"], indirect=True)  # "next": callers need the secret
async def test_stream_from_the_relay_url_of_edge_agent_run(platform: Platform) -> None:
    """The public URL of ``edge-agent run`` streams as ``edge-agent http`` does: its
    de-duplication of A2A messages (for the platform's re-sends) tees the stream."""
    async with httpx.AsyncClient(timeout=CALLER_TIMEOUT, trust_env=False) as http:
        client = await create_client(
            platform.public_url, client_config=ClientConfig(httpx_client=http)
        )
        try:
            card = await client.get_extended_agent_card(GetExtendedAgentCardRequest())
            assert [i.url for i in card.supported_interfaces] == [platform.public_url]
            check_timed_stream("edge-agent run", await collect(client, timed_stream_request()))
        finally:
            await client.close()
