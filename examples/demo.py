"""The one-command demo (``scripts/demo``): the dev platform, a relay, and the example
A2A agent as the command of ``edge-agent run``, all on this machine; then one A2A call
through the platform's proxy and one stream straight to the workspace's public relay
URL, both made with the a2a-sdk client.

Everything listens on 127.0.0.1 on free ports (the relay advertises ``localhost``: the
platform refuses ``127.0.0.1`` URLs), with its state and logs in a fresh temporary
folder, which is kept for reading. Exit status: 0 when every step worked; 1 with the
failing step named (``demo failed at step "register": ...``) and the last lines of the
log that explains it; 130 when interrupted. No process is left behind, whatever
happens (see :mod:`examples.demo_procs`).

``--keep`` leaves everything up after the calls, prints ready-to-paste curl commands,
and stops at Ctrl-C (exit 0). ``EDGE_DEMO_FAIL_AT=STEP`` makes the step of that name
fail, to see the failure report (and to test it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

import httpx
from a2a.client import ClientConfig, create_client
from a2a.helpers import new_text_message
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    Role,
    SendMessageRequest,
    TaskState,
)

from examples.demo_procs import Child, Children, NotReady, StepFailed, free_port, tail

BIN: Final = Path(sys.executable).parent
#: The steps, in order; ``EDGE_DEMO_FAIL_AT`` takes one of these names.
STEPS: Final = (
    "platform",
    "relay",
    "workspace",
    "relay-token",
    "agent",
    "register",
    "example",
    "proxy-call",
    "stream",
    "keep",
)
FAIL_AT_ENV: Final = "EDGE_DEMO_FAIL_AT"
#: Seconds a process may take to print its ready line (a cold a2a-sdk import on a busy
#: 2-core machine takes several).
START_TIMEOUT: Final = 60.0
#: Seconds an A2A call may take in all; also the httpx timeouts (its default of 5 s
#: would apply between SSE events too).
CALL_TIMEOUT: Final = 30.0
#: Lines of the failing process's log shown with a failure.
LOG_TAIL: Final = 15
#: The secret set on the workspace; only its name is ever shown.
SECRET_NAME: Final = "DEMO_SECRET"
PROXY_TEXT: Final = "hello through the platform"
STREAM_TEXT: Final = "hello through the relay"
#: The stream's shape, sent as message metadata to the example agent: CHUNKS artifact
#: chunks, INTERVAL seconds apart.
CHUNKS, INTERVAL = 5, 0.3


@dataclasses.dataclass(frozen=True, slots=True)
class Stack:
    platform: str  # http://127.0.0.1:PORT
    relay: str  # http://localhost:PORT, what the relay advertises
    workspace: str
    public_url: str  # <relay>/a/<workspace>/, registered with the platform
    agent: Child  # edge-agent run; the example agent's output is in its log

    @property
    def proxy_url(self) -> str:
        return f"{self.platform}/workspaces/{self.workspace}/a2a"


def child_env(**extra: str) -> dict[str, str]:
    """This environment without settings that would change what the commands do, with
    loopback kept away from any HTTP proxy configured here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "A2A_"))}
    local = "127.0.0.1,localhost"
    return env | {"PYTHONUNBUFFERED": "1", "NO_PROXY": local, "no_proxy": local} | extra


def reason(exc: BaseException) -> str:
    if isinstance(exc, NotReady | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Demo:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.children = Children()
        self.admin = secrets.token_urlsafe(24)  # the dev platform's, never shown
        self.current = "start"
        self.example_port = 0  # the example agent's, chosen before edge-agent starts it

    @contextlib.contextmanager
    def step(self, name: str, log: Path | None = None) -> Iterator[None]:
        """Run a step: any error becomes :class:`StepFailed` naming it, with ``log``."""
        self.current = name
        if os.environ.get(FAIL_AT_ENV) == name:
            raise StepFailed(name, f"made to fail by {FAIL_AT_ENV}={name}", log)
        try:
            yield
        except StepFailed:
            raise
        except Exception as exc:
            raise StepFailed(name, reason(exc), log) from exc

    def spawn(self, name: str, argv: Sequence[str], **env: str) -> Child:
        with self.step(name):
            child = Child(name, argv, child_env(**env), self.tmp / f"{name}.log")
        return self.children.add(child)

    def run(self) -> None:
        stack = self.start()
        asyncio.run(self.calls(stack))
        if self.args.keep:
            self.keep(stack)

    def start(self) -> Stack:
        relay_port = self.args.relay_port or free_port()
        relay_url = f"http://localhost:{relay_port}"
        platform = self.spawn_platform()
        relay = self.spawn_relay(relay_port, relay_url)
        with self.step("platform", platform.log):
            found = platform.wait_for(r"listening on (http://\S+)", START_TIMEOUT)
            platform_url = found.group(1)
        say(f"platform  {platform_url}  (edge-devplatform, admin token generated)")
        with self.step("relay", relay.log):
            relay.wait_for(r"relay_listening", START_TIMEOUT)
        say(f"relay     {relay_url}  (edge-relay on 127.0.0.1:{relay_port})")
        with self.step("workspace", platform.log):
            workspace, token = create_workspace(platform_url, self.admin)
        say(f"workspace {workspace}  (created, secret {SECRET_NAME} set)")
        with self.step("relay-token", self.tmp / "relay-token.log"):
            relay_token = self.issue_token(workspace)
        agent = self.spawn_agent(platform_url, relay_url, workspace, token, relay_token)
        return Stack(platform_url, relay_url, workspace, self.wait_agent(agent), agent)

    def spawn_platform(self) -> Child:
        argv = [str(BIN / "edge-devplatform"), "serve", "--host", "127.0.0.1"]
        argv += ["--port", str(self.args.platform_port)]
        return self.spawn("platform", argv, EDGE_DEVPLATFORM_ADMIN_TOKEN=self.admin)

    def spawn_relay(self, port: int, public_url: str) -> Child:
        argv = [str(BIN / "edge-relay"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--public-url", public_url, "--state-dir", str(self.tmp / "relay-state")]
        argv += ["--drain-timeout", "2"]  # nothing is in flight when the demo stops it
        return self.spawn("relay", argv)

    def issue_token(self, workspace: str) -> str:
        """A relay token for the tunnel named after the workspace (printed once, kept in
        memory only)."""
        argv = [str(BIN / "edge-relay"), "token", "issue", workspace]
        argv += ["--state-dir", str(self.tmp / "relay-state")]
        done = subprocess.run(
            argv, capture_output=True, text=True, env=child_env(), timeout=START_TIMEOUT
        )
        (self.tmp / "relay-token.log").write_text(done.stderr)
        if done.returncode != 0:
            raise ValueError(f"edge-relay token issue exited with code {done.returncode}")
        return done.stdout.strip()

    def spawn_agent(
        self, platform: str, relay: str, workspace: str, token: str, relay_token: str
    ) -> Child:
        self.example_port = free_port()
        example = [sys.executable, "-m", "examples.a2a_agent", "--port", str(self.example_port)]
        argv = [str(BIN / "edge-agent"), "run", "--platform", platform, "--relay", relay]
        argv += ["--workspace-id", workspace, "--token-dir", str(self.tmp / "molecule")]
        argv += ["--to", str(self.example_port), "--", *example]
        # Tokens in the environment, not on the command line (ps shows that).
        tokens = {"EDGE_PLATFORM_TOKEN": token, "EDGE_RELAY_TOKEN": relay_token}
        return self.spawn("agent", argv, **tokens)

    def wait_agent(self, agent: Child) -> str:
        """Wait until edge-agent is registered and its command serves; the public URL."""
        with self.step("agent", agent.log):
            public_url = agent.wait_for(r"^Forwarding (\S+) -> ", START_TIMEOUT).group(1)
        example = f"python -m examples.a2a_agent on 127.0.0.1:{self.example_port}"
        say(f"agent     edge-agent run -> {example}")
        with self.step("register", agent.log):
            agent.wait_for(r"^Registered: workspace ", START_TIMEOUT)
        say(f"public    {public_url}  (registered with the platform)")
        with self.step("example", agent.log):
            started = agent.wait_for(r"^Starting \S+ with secrets: (.*) \(values", START_TIMEOUT)
            if SECRET_NAME not in started.group(1).split(", "):
                raise ValueError(f"edge-agent started the example without {SECRET_NAME}")
            agent.wait_for(
                rf"Uvicorn running on http://127\.0\.0\.1:{self.example_port}\b", START_TIMEOUT
            )
        self.children.remember_descendants()
        return public_url

    async def calls(self, stack: Stack) -> None:
        # trust_env off: no proxy from the environment may sit between caller and relay.
        timeout = httpx.Timeout(CALL_TIMEOUT)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            with self.step("proxy-call", stack.agent.log):
                await proxy_call(http, stack)
            with self.step("stream", stack.agent.log):
                await stream(http, stack)

    def keep(self, stack: Stack) -> None:
        with self.step("keep"):
            say(curl_help(stack, self.tmp))
        while True:  # until Ctrl-C (KeyboardInterrupt) or a process dies
            for child in self.children.children:
                if (code := child.popen.poll()) is not None:
                    raise StepFailed("keep", f"{child.name} exited with code {code}", child.log)
            time.sleep(0.5)


def say(line: str) -> None:
    print(line, flush=True)


def create_workspace(platform: str, admin: str) -> tuple[str, str]:
    """An external workspace with the secret set (admin API); its id and token."""
    headers = {"Authorization": f"Bearer {admin}"}
    # httpx defaults written down: 5 s timeouts, fine for a local platform.
    with httpx.Client(base_url=platform, headers=headers, trust_env=False) as http:
        body = {"name": "edge-demo", "runtime": "external", "external": True}
        created = expect(http.post("/workspaces", json=body), 201)
        workspace = str(created["id"])
        secret = {"key": SECRET_NAME, "value": "demo-" + secrets.token_hex(16)}
        expect(http.post(f"/workspaces/{workspace}/secrets", json=secret), 200)
        return workspace, str(created["connection"]["auth_token"])


def expect(response: httpx.Response, status: int) -> dict[str, Any]:
    if response.status_code != status:
        what = f"{response.request.method} {response.request.url.path}"
        raise ValueError(f"{what} answered {response.status_code}: {response.text[:200]}")
    body: dict[str, Any] = response.json()
    return body


def request(text: str, **metadata: float) -> SendMessageRequest:
    message = new_text_message(text, role=Role.ROLE_USER)
    if metadata:
        message.metadata.update(metadata)
    return SendMessageRequest(message=message)


def proxy_card(url: str) -> AgentCard:
    """The platform's proxy speaks A2A 0.3 (``message/send``, no ``A2A-Version``
    header) and buffers: a card with one 0.3 interface makes the SDK client speak it."""
    return AgentCard(
        name="workspace via the platform proxy",
        description="the dev platform's A2A proxy",
        version="0.0.0",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="0.3")
        ],
        capabilities=AgentCapabilities(streaming=False),
    )


async def proxy_call(http: httpx.AsyncClient, stack: Stack) -> None:
    say(f"\nSendMessage through the platform's A2A proxy: POST {stack.proxy_url}")
    config = ClientConfig(httpx_client=http, streaming=False)
    client = await create_client(proxy_card(stack.proxy_url), client_config=config)
    start = time.monotonic()
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            events = [event async for event in client.send_message(request(PROXY_TEXT))]
    finally:
        await client.close()
    texts = [text for event in events for text in reply_texts(event)]
    if texts[:1] != [PROXY_TEXT.upper()]:
        raise ValueError(f"unexpected reply {texts!r}")
    say(f"  reply      {' | '.join(texts)}  ({time.monotonic() - start:.2f} s)")
    if f"secrets: {SECRET_NAME}" not in texts:
        raise ValueError(f"{SECRET_NAME} did not reach the example agent's environment")
    say(f"  secret     {SECRET_NAME}: set on the platform, pulled by edge-agent into the example")
    say("             agent's environment (the reply names it; the value is never shown)")


async def stream(http: httpx.AsyncClient, stack: Stack) -> None:
    say(f"\nSendStreamingMessage straight to the public URL: POST {stack.public_url}")
    client = await create_client(stack.public_url, client_config=ClientConfig(httpx_client=http))
    start, seen = time.monotonic(), []
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            async for event in client.send_message(
                request(STREAM_TEXT, chunks=CHUNKS, interval=INTERVAL)
            ):
                kind, text = describe(event)
                seen.append((kind, text))
                say(f"  +{time.monotonic() - start:.2f} s  {kind:<8}  {text}")
    finally:
        await client.close()
    kinds = [kind for kind, _ in seen]
    if kinds.count("artifact") != CHUNKS or seen[-1:] != [("status", "completed")]:
        raise ValueError(f"the stream was not {CHUNKS} chunks, then completed: {kinds}")


def reply_texts(event: Any) -> list[str]:
    """The text of a SendMessage answer: a Task's artifacts (the example agent's
    answer), or a Message's parts."""
    if event.WhichOneof("payload") == "task":
        return [part.text for artifact in event.task.artifacts for part in artifact.parts]
    return [part.text for part in event.message.parts]


def describe(event: Any) -> tuple[str, str]:
    """A stream event as (kind, text): task, status, artifact or message."""
    kind = event.WhichOneof("payload")
    if kind == "task":
        return "task", state(event.task.status.state)
    if kind == "status_update":
        status = event.status_update.status
        note = " ".join(part.text for part in status.message.parts)
        return "status", state(status.state) + (f' "{note}"' if note else "")
    if kind == "artifact_update":
        return "artifact", "".join(p.text for p in event.artifact_update.artifact.parts).strip()
    return str(kind), " ".join(part.text for part in event.message.parts)


def state(value: int) -> str:
    return str(TaskState.Name(value)).removeprefix("TASK_STATE_").lower()


def curl_help(stack: Stack, tmp: Path) -> str:
    headers = "-H 'Content-Type: application/json' -H 'A2A-Version: 1.0'"
    legacy = '{"role":"user","parts":[{"kind":"text","text":"hi"}]}'
    return "\n".join(
        [
            "\nEverything stays up until Ctrl-C. Try these (edge-agent prints a line per call",
            f"in {tmp}/agent.log):",
            f"  curl -s {stack.public_url} {headers} \\",
            f"    -d '{curl_rpc('SendMessage')}'",
            f"  curl -sN {stack.public_url} {headers} -H 'Accept: text/event-stream' \\",
            f"    -d '{curl_rpc('SendStreamingMessage')}'",
            f"  curl -s {stack.proxy_url} -H 'Content-Type: application/json' \\",
            f'    -d \'{{"method":"message/send","params":{{"message":{legacy}}}}}\'',
        ]
    )


def curl_rpc(method: str) -> str:
    """An A2A 1.0 JSON-RPC body for a single-quoted shell argument; its messageId is
    made by the shell, so a pasted command is not taken for a re-send of the last one
    (edge-agent de-duplicates messages by id)."""
    message_id = '"curl-\'"$(date +%s%N)"\'"'
    message = f'{{"role":"ROLE_USER","messageId":{message_id},"parts":[{{"text":"hi"}}]}}'
    return f'{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"message":{message}}}}}'


def report(failure: StepFailed) -> None:
    print(failure, file=sys.stderr)
    if failure.log is not None and (lines := tail(failure.log, LOG_TAIL)):
        print(f"last lines of {failure.log}:", file=sys.stderr)
        for line in lines:
            print(f"  | {line}", file=sys.stderr)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", action="store_true", help="keep everything up until Ctrl-C")
    p.add_argument("--platform-port", type=int, default=0, help="default: a free port")
    p.add_argument("--relay-port", type=int, default=0, help="default: a free port")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stop everything, as for Ctrl-C
    tmp = Path(tempfile.mkdtemp(prefix="edge-demo-"))
    demo, started = Demo(args, tmp), time.monotonic()
    say(f"molecule-edge demo (logs and state in {tmp}/)")
    try:
        demo.run()
        say(f"\ndemo ok in {time.monotonic() - started:.1f} s")
        return 0
    except StepFailed as failure:
        report(failure)
        return 1
    except KeyboardInterrupt:
        if demo.current == "keep":
            return 0
        print(f'demo interrupted at step "{demo.current}"', file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not cut the clean-up short (it is bounded).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stopping = time.monotonic()
        demo.children.stop_all()
        say(f"stopped every process in {time.monotonic() - stopping:.1f} s; logs in {tmp}/")


if __name__ == "__main__":
    sys.exit(main())
