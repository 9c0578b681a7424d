"""Many simulated agents in one process: the tunnel runtime, no forwarding.

Each agent opens the relay's agent WebSocket exactly as ``edge-agent`` does (the shared
``tunnel`` runtime: subprotocol, deflate off, frame-sized messages, 20 s pings), sends
HELLO, waits for WELCOME, then idles. A stream the relay opens anyway is refused
(RESET UNAVAILABLE).

Reconnects follow the real agent's policy: ``edge_agent.tunnel.ReconnectPolicy`` when
the package provides it (its values, and the same algorithm as ``TunnelClient``):
capped exponential backoff with jitter after a failure or a session shorter than
``healthy_after``; after a healthy session, a random 0..``restart_delay`` pause.

Every WELCOME and every lost session is written to ``--events`` as a JSON line
(``{"e": "up"|"down", "t": unix time, "n": name}``) for the harness to count.

Run: ``python -m bench.simagent --relay http://127.0.0.1:P --count N --prefix sim-a
--events FILE --max-seconds S`` (the process exits by itself after S seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import signal
import sys
import time
from typing import IO, Final

from tenacity import AsyncRetrying, retry_if_exception_type, stop_never, wait_exponential_jitter

import tunnel
from wire import Connection, ErrorCode, Hello, Role, Welcome

#: Handshakes in flight at once per process (keeps the first connect wave orderly).
CONNECT_CONCURRENCY: Final = 64
#: Seconds to wait for WELCOME after the upgrade.
WELCOME_TIMEOUT: Final = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    initial: float = 1.0
    max_delay: float = 60.0
    jitter: float = 5.0
    healthy_after: float = 30.0
    restart_delay: float = 5.0
    source: str = "bench defaults (edge_agent.tunnel.ReconnectPolicy not importable)"


def agent_policy() -> Policy:
    """The real agent's reconnect policy, if the installed edge_agent exposes one."""
    try:
        from edge_agent.tunnel import ReconnectPolicy
    except ImportError:
        return Policy()
    real = ReconnectPolicy()
    return Policy(
        initial=real.initial,
        max_delay=real.max_delay,
        jitter=real.jitter,
        healthy_after=real.healthy_after,
        restart_delay=real.restart_delay,
        source="edge_agent.tunnel.ReconnectPolicy",
    )


class Transient(Exception):
    """The session failed or ended too early: back off and retry."""


class Events:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def emit(self, kind: str, name: str) -> None:
        self.out.write(json.dumps({"e": kind, "t": time.time(), "n": name}) + "\n")
        self.out.flush()


class _Hooks(tunnel.SessionHooks):
    def __init__(self) -> None:
        self.welcomed = asyncio.Event()
        self.up_at: float | None = None

    def on_welcome(self, session: tunnel.Session, welcome: Welcome) -> None:
        self.up_at = time.monotonic()
        self.welcomed.set()

    def on_opened(self, session: tunnel.Session, stream: tunnel.Stream) -> None:
        stream.reset(ErrorCode.UNAVAILABLE)


class SimAgent:
    def __init__(
        self, url: str, name: str, policy: Policy, events: Events, gate: asyncio.Semaphore
    ) -> None:
        self.url = f"{url}?name={name}"
        self.name = name
        self.policy = policy
        self.events = events
        self.gate = gate

    async def run_forever(self) -> None:
        while True:
            retrying = AsyncRetrying(
                retry=retry_if_exception_type(Transient),
                wait=wait_exponential_jitter(
                    multiplier=self.policy.initial,  # tenacity 9.2 deprecates initial=
                    max=self.policy.max_delay,
                    jitter=self.policy.jitter,
                ),
                stop=stop_never,
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    await self._session()
            await asyncio.sleep(random.uniform(0, self.policy.restart_delay))

    async def _session(self) -> None:
        try:
            async with self.gate:
                link, _ = await tunnel.connect_link(self.url, open_timeout=10)
        except (OSError, TimeoutError, tunnel.HandshakeRefused, tunnel.HandshakeFailed) as exc:
            raise Transient(str(exc)) from exc
        try:
            up_at = await self._serve(link)
        finally:
            link.abort()
        if up_at is None or time.monotonic() - up_at < self.policy.healthy_after:
            raise Transient("session ended early")

    async def _serve(self, link: tunnel.WsLink) -> float | None:
        """Run one session; returns when it closes. The result is when WELCOME came."""
        hooks = _Hooks()
        session = tunnel.Session(Connection(Role.AGENT), hooks)
        link.attach(session)
        session.send_hello(Hello(self.name, agent="bench-simagent"))
        welcomed = asyncio.ensure_future(hooks.welcomed.wait())
        await asyncio.wait(
            {welcomed, link.closed}, timeout=WELCOME_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        welcomed.cancel()
        if hooks.up_at is None:
            return None
        self.events.emit("up", self.name)
        await link.closed
        self.events.emit("down", self.name)
        return hooks.up_at


def _connect_url(relay: str) -> str:
    base = relay.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    return base + "/_edge/connect"


async def main_async(args: argparse.Namespace, events: Events) -> None:
    policy = agent_policy()
    print(f"simagent: {args.count} agents, reconnect policy from {policy.source}", flush=True)
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    url = _connect_url(args.relay)
    agents = [SimAgent(url, f"{args.prefix}-{i}", policy, events, gate) for i in range(args.count)]
    tasks = [asyncio.create_task(agent.run_forever()) for agent in agents]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    p = argparse.ArgumentParser(description="simulated idle agents")
    p.add_argument("--relay", required=True, help="relay base URL, http://127.0.0.1:P")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--prefix", required=True, help="names are PREFIX-0, PREFIX-1, ...")
    p.add_argument("--events", required=True, help="file to append JSON event lines to")
    p.add_argument("--max-seconds", type=float, default=600.0, help="exit after this long")
    args = p.parse_args()
    with open(args.events, "a") as out:
        try:
            import uvloop
        except ImportError:
            asyncio.run(main_async(args, Events(out)))
        else:
            uvloop.run(main_async(args, Events(out)))
    sys.exit(0)


if __name__ == "__main__":
    main()
