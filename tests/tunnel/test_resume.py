"""The runtime of session resumption (tunnel.resume, Session.reattach) over real loopback
WebSockets: two sessions move bytes both ways, their connection is reset mid-transfer,
a second connection carries both sessions on, and every byte arrives once, in order."""

from __future__ import annotations

import asyncio
import random

import tunnel
import wire
from tests.tunnel.pair import Hooks, Recorder, Server
from tunnel import resume as runtime
from wire import StreamKind

SIZE = 3 * 1024 * 1024


class Keeping(Hooks):
    """Hooks that keep the session when its link fails (the owner resumes it)."""

    def __init__(self, role: str) -> None:
        super().__init__(role)
        self.lost = asyncio.Event()

    def on_link_lost(self, session: tunnel.Session) -> bool:
        self.lost.set()
        return True


async def connect(server: Server) -> tuple[tunnel.WsLink, tunnel.WsLink, tunnel.Session]:
    """A new connection: the agent's link, the relay's link, and the relay-side session
    the test server made for it (unused by a resumption)."""
    agent_link, _ = await tunnel.connect_link(server.uri, open_timeout=5)
    relay_link, relay_session, _hooks = await asyncio.wait_for(server.accepted.get(), 5)
    return agent_link, relay_link, relay_session


async def test_a_reset_connection_is_carried_on_by_the_next_without_a_byte_lost() -> None:
    server = await Server().start()
    try:
        agent_link, _, relay = await connect(server)
        relay.hooks = relay_hooks = Keeping("relay")
        agent_hooks = Keeping("agent")
        agent = tunnel.Session(wire.Connection(wire.Role.AGENT), agent_hooks)
        agent_link.attach(agent)
        runtime.enable(relay)
        runtime.enable(agent)
        agent.send_hello(wire.Hello("demo"))
        await agent_hooks.wait(lambda: bool(agent_hooks.welcomes))

        down, up = random.Random(1).randbytes(SIZE), random.Random(2).randbytes(SIZE)
        mine = Recorder("relay")
        stream = relay.open(StreamKind.HTTP, mine, b"")
        mine.stream = stream
        await agent_hooks.wait(lambda: bool(agent_hooks.opened))
        theirs = agent_hooks.opened[0]
        assert theirs.stream is not None
        for i in range(0, SIZE, 64 * 1024):  # both directions in flight
            stream.write(down[i : i + 64 * 1024])
            theirs.stream.write(up[i : i + 64 * 1024])
        stream.end()
        theirs.stream.end()
        await theirs.wait(lambda: theirs.size >= SIZE // 4)

        agent_link._reset()  # the network fails under both ends
        await asyncio.wait_for(asyncio.gather(agent_hooks.lost.wait(), relay_hooks.lost.wait()), 5)
        assert not relay.is_closed and not agent.is_closed and relay.link is None
        got_before = (theirs.size, mine.size)

        new_agent_link, new_relay_link, unused = await connect(server)
        unused.handover()
        # Each side re-sends from what the other processed, as HELLO and WELCOME say.
        relay_count, agent_count = relay.received, agent.received
        to_agent = runtime.carry_on(relay, new_relay_link, agent_count, None)
        to_relay = runtime.carry_on(agent, new_agent_link, relay_count, None)
        await theirs.wait(lambda: bool(theirs.ended), within=10)
        await mine.wait(lambda: bool(mine.ended), within=10)
    finally:
        await server.stop()
    assert theirs.received == down and mine.received == up
    assert not theirs.aborts and not mine.aborts
    assert min(got_before) < SIZE  # the reset did cut a transfer
    print(f"\nre-sent {to_agent.resent} B to the agent and {to_relay.resent} B to the relay")
