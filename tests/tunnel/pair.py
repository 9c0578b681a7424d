"""Two tunnel sessions over a real loopback WebSocket, for the tunnel runtime's tests.

The server reads the upgrade head and calls ``tunnel.server.read_upgrade`` and
``tunnel.server.accept`` (as the relay and tests/agent/fake_relay.py do); the client is
``tunnel.connect_link``.
The server side plays the relay, the client the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import Callable, Sequence
from typing import Any, cast

import tunnel
import tunnel.server
import wire
from wire import ErrorCode, StreamKind


class Recorder:
    """A StreamHandler that keeps what happened, in order."""

    def __init__(self, name: str = "", log: list[tuple[str, Any]] | None = None) -> None:
        self.name = name
        self.chunks: list[bytes] = []
        self.ended: list[bool] = []
        self.aborts: list[tuple[ErrorCode, str]] = []
        self.abort_at: list[int] = []  # bytes received when aborted() came
        self.writes: list[tuple[str, int]] = []  # pause/resume_writing and buffered then
        self.log = log if log is not None else []
        self.stream: tunnel.Stream | None = None
        self.changed = asyncio.Event()
        self.on_data: Callable[[Recorder, bytes], None] | None = None

    @property
    def received(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks)

    def data(self, data: bytes) -> None:
        self.chunks.append(data)
        self.log.append((self.name, len(data)))
        if self.on_data is not None:
            self.on_data(self, data)
        self.changed.set()

    def end(self, close: bool) -> None:
        self.ended.append(close)
        self.changed.set()

    def aborted(self, code: ErrorCode, reason: str) -> None:
        self.aborts.append((code, reason))
        self.abort_at.append(self.size)
        self.changed.set()

    def pause_writing(self) -> None:
        self.writes.append(("pause", self.stream.buffered if self.stream else -1))

    def resume_writing(self) -> None:
        self.writes.append(("resume", self.stream.buffered if self.stream else -1))

    async def wait(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


class Hooks(tunnel.SessionHooks):
    def __init__(self, role: str) -> None:
        self.role = role
        self.hellos: list[wire.Hello] = []
        self.welcomes: list[wire.Welcome] = []
        self.goaways: list[wire.GoAwayReceived] = []
        self.protocol_errors: list[tuple[ErrorCode, str]] = []
        self.closed_streams: list[int] = []
        self.session_closed = 0
        self.opened: list[Recorder] = []
        self.new_handler: Callable[[tunnel.Stream], Recorder] = self._default_handler
        self.event = asyncio.Event()

    def _default_handler(self, stream: tunnel.Stream) -> Recorder:
        return Recorder(f"{self.role}-{stream.sid}")

    def on_hello(self, session: tunnel.Session, hello: wire.Hello) -> None:
        self.hellos.append(hello)
        if not session.conn.established:
            name = hello.name or "auto"
            session.send_welcome(wire.Welcome(name, (f"https://relay.test/{name}/",), 64, 1))
        self.event.set()

    def on_welcome(self, session: tunnel.Session, welcome: wire.Welcome) -> None:
        self.welcomes.append(welcome)
        self.event.set()

    def on_opened(self, session: tunnel.Session, stream: tunnel.Stream) -> None:
        handler = self.new_handler(stream)
        handler.stream = stream
        stream.handler = handler
        self.opened.append(handler)
        self.event.set()

    def on_goaway(self, session: tunnel.Session, event: wire.GoAwayReceived) -> None:
        self.goaways.append(event)
        self.event.set()

    def on_protocol_error(self, session: tunnel.Session, code: ErrorCode, reason: str) -> None:
        self.protocol_errors.append((code, reason))
        self.event.set()

    def on_stream_closed(self, session: tunnel.Session, stream: tunnel.Stream) -> None:
        self.closed_streams.append(stream.sid)
        self.event.set()

    def on_session_closed(self, session: tunnel.Session) -> None:
        self.session_closed += 1
        self.event.set()

    async def wait(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not condition():
                self.event.clear()
                await self.event.wait()


class _Upgrade(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.server.sndbuf:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.server.sndbuf)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.server.sndbuf)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end >= 0 and self.transport is not None:
            head, rest = self.buffer[: end + 4], self.buffer[end + 4 :]
            self.server.upgrade(self.transport, head, rest)


class Server:
    """Accepts tunnel WebSockets; each becomes a relay-side session."""

    def __init__(self, sndbuf: int = 0, **link_kwargs: Any) -> None:
        self.link_kwargs = link_kwargs
        self.sndbuf = sndbuf
        self.accepted: asyncio.Queue[tuple[tunnel.WsLink, tunnel.Session, Hooks]] = asyncio.Queue()
        self.heads: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self.links: list[tunnel.WsLink] = []

    async def start(self) -> Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Upgrade(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def uri(self) -> str:
        return f"ws://127.0.0.1:{self.port}/_edge/connect"

    def upgrade(self, transport: asyncio.Transport, head: bytes, rest: bytes) -> None:
        self.heads.append(head)
        ws, request = tunnel.server.read_upgrade(head)
        assert request is not None
        link = tunnel.server.accept(ws, request, transport, rest, **self.link_kwargs)
        assert link is not None
        hooks = Hooks("relay")
        session = tunnel.Session(wire.Connection(wire.Role.RELAY), hooks)
        link.attach(session)
        self.links.append(link)
        self.accepted.put_nowait((link, session, hooks))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for link in self.links:
                link.abort()
            self._server = None


@dataclasses.dataclass
class Pair:
    server: Server
    relay_link: tunnel.WsLink
    relay: tunnel.Session
    relay_hooks: Hooks
    agent_link: tunnel.WsLink
    agent: tunnel.Session
    agent_hooks: Hooks

    async def open(
        self, data: bytes = b"", end: bool = False, name: str = "relay"
    ) -> tuple[tunnel.Stream, Recorder, Recorder]:
        """Open a stream relay -> agent; returns it, the relay's and the agent's handler."""
        mine = Recorder(name)
        stream = self.relay.open(StreamKind.HTTP, mine, data, end)
        mine.stream = stream
        count = len(self.agent_hooks.opened)
        await self.agent_hooks.wait(lambda: len(self.agent_hooks.opened) > count)
        theirs = self.agent_hooks.opened[count]
        return stream, mine, theirs


async def make_pair(
    *,
    sndbuf: int = 0,
    client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Pair:
    srv = await Server(sndbuf, **(server or {})).start()
    agent_link, _response = await tunnel.connect_link(
        srv.uri, headers=headers, open_timeout=5, **(client or {})
    )
    if sndbuf and agent_link.transport is not None:
        sock = agent_link.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
    agent_hooks = Hooks("agent")
    agent = tunnel.Session(wire.Connection(wire.Role.AGENT), agent_hooks)
    agent_link.attach(agent)
    relay_link, relay, relay_hooks = await asyncio.wait_for(srv.accepted.get(), 5)
    agent.send_hello(wire.Hello("demo", (), "tunnel-tests"))
    await agent_hooks.wait(lambda: bool(agent_hooks.welcomes))
    return Pair(srv, relay_link, relay, relay_hooks, agent_link, agent, agent_hooks)


async def close_pair(pair: Pair) -> None:
    pair.agent_link.abort()
    pair.relay_link.abort()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(pair.agent_link.closed, pair.relay_link.closed), 2)
    await pair.server.stop()


def frames(messages: Sequence[wire.Message]) -> list[wire.Frame]:
    """The frames of what a session handed its link (a bulk DATA frame comes in two parts)."""
    return [wire.decode_frame(m[0] + m[1] if isinstance(m, tuple) else m) for m in messages]
