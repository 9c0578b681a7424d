"""WebSocket pass-through over a socket's whole life: close codes both ways, a thousand
sockets on one tunnel, slow readers at either end (flow control bounds what is in
flight), idle sockets across many keepalives, a tunnel that drops (the caller and the
local server both see 1006, as with a crashed server) and a relay that drains (open
sockets go on until they close). The websockets library at both ends."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.conftest import Tunnel, open_tunnel
from tests.e2e.procs import Proc, Procs, RelayProc, issue_token, start_agent

MIB = 1024 * 1024
CHUNK = 64 * 1024
#: Bytes a flood may get ahead of a reader that stopped: every buffer on the way (the
#: sockets' kernel buffers at three hops, the tunnel's stream window, the websockets
#: library's queue of 16 messages) but nowhere near the flood itself.
MAX_AHEAD = 48 * MIB
FLOOD = 128 * MIB


@dataclasses.dataclass
class Local:
    """What the local WebSocket server saw, and what the tests let it do."""

    port: int = 0
    closes: dict[str, tuple[int | None, str | None]] = dataclasses.field(default_factory=dict)
    flooded: int = 0  # bytes the flood handler got through send()
    read: int = 0  # bytes the sink handler read
    release: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        url = urlsplit(ws.request.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        key = query.get("key", url.path)
        try:
            if url.path == "/close-me":
                await ws.close(int(query["code"]), f"closed by the local server {query['code']}")
            elif url.path == "/flood":
                await self._flood(ws)
            elif url.path == "/sink":
                await self.release.wait()
                async for message in ws:
                    self.read += len(message)
            else:
                async for message in ws:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.closes[key] = (ws.close_code, ws.close_reason)

    async def _flood(self, ws: ServerConnection) -> None:
        chunk = b"f" * CHUNK
        while self.flooded < FLOOD:
            await ws.send(chunk)
            self.flooded += len(chunk)
        await ws.close(1000, "flood done")


@contextlib.asynccontextmanager
async def local_server() -> AsyncIterator[Local]:
    local = Local()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    async with serve(local.handle, sock=sock, max_size=4 * MIB, compression=None):
        local.port = sock.getsockname()[1]
        yield local


@pytest.fixture
def procs() -> Iterator[Procs]:
    with Procs() as started:
        yield started


def _ws(tunnel: Tunnel, path: str) -> str:
    return tunnel.url.replace("http://", "ws://") + path


def _open(url: str) -> contextlib.AbstractAsyncContextManager[ClientConnection]:
    # no keepalive pings from the caller: a stalled or idle pipe must not be woken by them
    return connect(url, ping_interval=None, compression=None, max_size=4 * MIB)


def _rss(proc: Proc) -> int:
    """Resident memory of a process, in bytes."""
    for line in Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _until(predicate: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _stalls(counter: Callable[[], int], within: float = 10.0) -> int:
    """Wait until ``counter()`` stops growing for half a second; return its value."""
    deadline = time.monotonic() + within
    last = -1
    while (now := counter()) != last:
        assert time.monotonic() < deadline, "never stalled"
        last = now
        await asyncio.sleep(0.5)
    return last


@pytest.mark.parametrize("code", [1000, 1001, 4000])
async def test_close_codes_both_ways(procs: Procs, tmp_path: Path, code: int) -> None:
    async with local_server() as local:
        tunnel = open_tunnel(procs, tmp_path, str(local.port), name="wsclose")
        async with _open(_ws(tunnel, f"echo?key=caller{code}")) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            await ws.close(code, f"caller says {code}")
        assert ws.close_code == code  # the local server's echo of our close
        await _until(lambda: f"caller{code}" in local.closes, 5)
        assert local.closes[f"caller{code}"] == (code, f"caller says {code}")
        async with _open(_ws(tunnel, f"close-me?code={code}")) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert (ws.close_code, ws.close_reason) == (code, f"closed by the local server {code}")


async def test_a_thousand_sockets_on_one_tunnel(procs: Procs, tmp_path: Path) -> None:
    async with local_server() as local:
        # One caller address may hold a quarter of the streams by default: lift that cap.
        tunnel = open_tunnel(
            procs, tmp_path, str(local.port), "--max-client-streams", "1024", name="ws1000"
        )
        stack = contextlib.AsyncExitStack()
        async with stack:
            started = time.monotonic()
            sockets: list[ClientConnection] = []
            for batch in range(10):  # opened 100 at a time, all open at once in the end
                opening = (_open(_ws(tunnel, f"echo?key={batch}-{i}")) for i in range(100))
                sockets += await asyncio.wait_for(
                    asyncio.gather(*(stack.enter_async_context(o) for o in opening)), 60
                )
            opened = time.monotonic() - started

            async def echo(i: int, ws: ClientConnection) -> None:
                await ws.send(f"message {i}")
                assert await ws.recv() == f"message {i}"

            await asyncio.wait_for(asyncio.gather(*(echo(i, w) for i, w in enumerate(sockets))), 60)
            print(f"\n1000 sockets opened in {opened:.1f} s, all echoed")
        assert tunnel.relay.count("agent_connected") == 1
        await _until(lambda: len(local.closes) == 1000, 30)
        assert set(local.closes.values()) == {(1000, "")}


async def test_slow_caller_bounds_what_the_local_server_gets_ahead(
    procs: Procs, tmp_path: Path
) -> None:
    async with local_server() as local:
        tunnel = open_tunnel(procs, tmp_path, str(local.port), name="wsslow")
        before = _rss(tunnel.relay), _rss(tunnel.agent)
        async with _open(_ws(tunnel, "flood")) as ws:
            ahead = await _stalls(lambda: local.flooded)  # we read nothing meanwhile
            grown = _rss(tunnel.relay) - before[0], _rss(tunnel.agent) - before[1]
            print(
                f"\nflood stalled {ahead / MIB:.1f} MiB ahead; relay, agent grew by "
                f"{grown[0] / MIB:.1f}, {grown[1] / MIB:.1f} MiB"
            )
            assert ahead < MAX_AHEAD
            assert max(grown) < 32 * MIB
            got = 0
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    assert message == b"f" * CHUNK
                    got += len(message)
        assert got == FLOOD and ws.close_code == 1000


async def test_slow_local_server_bounds_what_the_caller_gets_ahead(
    procs: Procs, tmp_path: Path
) -> None:
    async with local_server() as local:
        tunnel = open_tunnel(procs, tmp_path, str(local.port), name="wssink")
        sent = 0

        async def flood(ws: ClientConnection) -> None:
            nonlocal sent
            chunk = b"s" * CHUNK
            while sent < FLOOD:
                await ws.send(chunk)
                sent += len(chunk)

        async with _open(_ws(tunnel, "sink")) as ws:
            task = asyncio.create_task(flood(ws))
            ahead = await _stalls(lambda: sent)  # the local server reads nothing meanwhile
            print(f"\ncaller stalled {ahead / MIB:.1f} MiB ahead")
            assert ahead < MAX_AHEAD and not task.done()
            local.release.set()
            await asyncio.wait_for(task, 60)
            await _until(lambda: local.read == FLOOD, 30)


async def test_idle_socket_stays_up_across_keepalives(procs: Procs, tmp_path: Path) -> None:
    async with local_server() as local:
        relay = procs.add(
            RelayProc(tmp_path, "--ping-interval", "1", "--response-timeout", "0.5", name="r")
        )
        token = issue_token(tmp_path, "wsidle")
        agent = procs.add(start_agent(relay, token, str(local.port), "--ping-interval", "1"))
        async with _open(agent.url.replace("http://", "ws://") + "echo") as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            await asyncio.sleep(3.5)  # 3 keepalive pings each way, 7 response timeouts
            await ws.send("after")
            assert await ws.recv() == "after"
        assert relay.count("agent_connected") == 1


@pytest.mark.parametrize("who", ["agent", "relay"])
async def test_tunnel_drop_closes_sockets_with_1006(procs: Procs, tmp_path: Path, who: str) -> None:
    async with local_server() as local:
        tunnel = open_tunnel(procs, tmp_path, str(local.port), name="wsdrop")
        async with _open(_ws(tunnel, "echo?key=dropped")) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            (tunnel.agent if who == "agent" else tunnel.relay).signal(signal.SIGKILL)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1006  # no close frame: as when a server crashes
        await _until(lambda: "dropped" in local.closes, 10)
        assert local.closes["dropped"][0] == 1006


@pytest.mark.parametrize(
    ("side", "relay_args", "draining", "code"),
    [
        ("relay", ("--drain-timeout", "30"), r"relay_draining agents=1 streams=1", 1000),
        ("agent", (), r"^Draining: finishing requests in flight", 4000),
    ],
)
async def test_drain_lets_open_sockets_finish(
    procs: Procs,
    tmp_path: Path,
    side: str,
    relay_args: tuple[str, ...],
    draining: str,
    code: int,
) -> None:
    """SIGTERM to the relay or the agent: open sockets go on until they close, and the
    process exits then, not at the drain deadline."""
    async with local_server() as local:
        tunnel = open_tunnel(procs, tmp_path, str(local.port), *relay_args, name=f"ws{side}")
        proc = tunnel.relay if side == "relay" else tunnel.agent
        key = f"{side}-drained"
        async with _open(_ws(tunnel, f"echo?key={key}")) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            proc.signal(signal.SIGTERM)
            proc.wait_line(draining)
            for i in range(5):  # the socket goes on while the process drains
                await asyncio.sleep(0.1)
                await ws.send(f"during drain {i}")
                assert await ws.recv() == f"during drain {i}"
            closed = time.monotonic()
            await ws.close(code, "done")
        assert ws.close_code == code
        assert proc.wait(10) == 0
        took = time.monotonic() - closed
        print(f"\n{side} exited {took:.1f} s after the last socket closed")
        assert took < 5  # at once, not at the 30 s drain deadline
        await _until(lambda: key in local.closes, 5)
        assert local.closes[key] == (code, "done")


async def test_caller_auth_applies_to_the_upgrade(procs: Procs, tmp_path: Path) -> None:
    async with local_server() as local:
        relay = procs.add(RelayProc(tmp_path, name="relay-wsauth"))
        token = issue_token(tmp_path, "wsauth")
        agent = procs.add(
            start_agent(relay, token, str(local.port), "--caller-auth", "bearer:s3cret")
        )
        url = agent.url.replace("http://", "ws://") + "echo"
        with pytest.raises(InvalidStatus) as refused:
            async with _open(url):
                pass
        assert refused.value.response.status_code == 401
        assert local.closes == {}  # never reached the local server
        headers = {"Authorization": "Bearer s3cret"}
        async with connect(url, additional_headers=headers, ping_interval=None) as ws:
            await ws.send("let in")
            assert await ws.recv() == "let in"
