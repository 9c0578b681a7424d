"""The ASGI ``websocket`` scope over a v2 stream (ObjectBridge -> AsgiTarget ->
AsgiWebSocket), driven through a FakeStream by the websockets library's sans-I/O client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from edge_agent.asgi import AsgiTarget
from edge_agent.asgi_ws import INBOX_LIMIT, WebSocketLimits
from edge_agent.bridge import ObjectBridge
from edge_agent.molecule.dedup import DedupTarget
from edge_agent.molecule.inbound import InboundSecretTarget
from edge_agent.port import ExchangeRecord
from tests.agent.v2.support import FakeStream, open_stream
from wire import ErrorCode

MiB = 1024 * 1024


class Apps:
    """Raw ASGI websocket apps, chosen by path; they record what they saw."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.scope: dict[str, Any] = {}
        self.send_error: BaseException | None = None
        self.go = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        self.scope = scope
        assert (await receive())["type"] == "websocket.connect"
        await getattr(self, "_" + scope["path"].strip("/"))(receive, send)

    async def _echo(self, receive: Any, send: Any) -> None:
        chosen = "b" if "b" in self.scope["subprotocols"] else None
        await send(
            {"type": "websocket.accept", "subprotocol": chosen, "headers": [(b"x-app", b"1")]}
        )
        while (message := await receive())["type"] == "websocket.receive":
            await send({**message, "type": "websocket.send"})
        self.seen.append(message)

    async def _slow(self, receive: Any, send: Any) -> None:
        """Accepts, then reads nothing until ``go`` is set."""
        await send({"type": "websocket.accept"})
        await self.go.wait()
        while (message := await receive())["type"] == "websocket.receive":
            self.seen.append(message)
        self.seen.append(message)

    async def _late(self, receive: Any, send: Any) -> None:
        """Accepts, waits for the disconnect, then tries to send."""
        await send({"type": "websocket.accept"})
        self.seen.append(await receive())
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            self.send_error = exc

    async def _close(self, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4003, "reason": "bye"})
        self.seen.append(await receive())

    async def _flood(self, receive: Any, send: Any) -> None:
        """Accepts, then sends 64 KiB messages until the socket closes."""
        await send({"type": "websocket.accept"})
        with contextlib.suppress(OSError):
            while True:
                await send({"type": "websocket.send", "bytes": b"f" * 65536})
                self.seen.append({"sent": 65536})
                await asyncio.sleep(0)  # without flow control it would go on for ever

    async def _split(self, receive: Any, send: Any) -> None:
        """Tries to split the 101 with a header value holding CR LF."""
        await send({"type": "websocket.accept", "headers": [(b"x-a", b"1\r\nx-b: 2")]})

    async def _returns(self, receive: Any, send: Any) -> None:
        pass  # returns without answering the handshake: 500, as uvicorn

    async def _fails(self, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        raise RuntimeError("the app failed")


class Peer:
    """The public client, sans-I/O: its bytes go into the stream, the stream's out to it."""

    def __init__(self, stream: FakeStream, path: str, *protocols: str) -> None:
        self.stream = stream
        self.client = ClientProtocol(
            parse_uri(f"ws://relay.test{path}"),
            subprotocols=[Subprotocol(p) for p in protocols] or None,
            max_size=None,
        )
        self.client.send_request(self.client.connect())
        self.read = 0
        self.response: Response | None = None
        self.frames: list[Frame] = []

    def push(self) -> None:
        assert self.stream.handler is not None
        for data in self.client.data_to_send():
            if data:
                self.stream.handler.data(data)
            else:
                self.stream.handler.end(False)

    def pull(self) -> None:
        out = bytes(self.stream.out[self.read :])
        self.read += len(out)
        if out:
            self.client.receive_data(out)
        if self.stream.closed is not None and self.client.state is not State.CLOSED:
            self.client.receive_eof()
        for event in self.client.events_received():
            if isinstance(event, Response):
                self.response = event
            elif isinstance(event, Frame):
                self.frames.append(event)
        self.push()  # pongs, close replies

    async def until(self, predicate: Any, within: float = 5.0) -> None:
        async def loop() -> None:
            while True:
                self.pull()
                if predicate():
                    return
                self.stream.changed.clear()
                await self.stream.changed.wait()

        await asyncio.wait_for(loop(), within)

    async def message(self) -> Frame:
        start = len(self.frames)
        await self.until(lambda: any(f.fin for f in self.frames[start:]))
        return self.frames[start]


@pytest.fixture
def apps() -> Apps:
    return Apps()


@pytest.fixture
def records() -> list[ExchangeRecord]:
    return []


@pytest.fixture
async def bridge(apps: Apps, records: list[ExchangeRecord]) -> AsyncIterator[ObjectBridge]:
    bridge = ObjectBridge(AsgiTarget(apps, lifespan="off"), on_done=records.append)
    yield bridge
    await bridge.aclose()


async def connect(bridge: ObjectBridge, path: str, *protocols: str, **kw: Any) -> Peer:
    stream = open_stream(bridge.handler, **kw)
    peer = Peer(stream, path, *protocols)
    peer.push()
    await peer.until(lambda: peer.response is not None)
    return peer


async def test_echo_subprotocol_headers_and_a_clean_close(
    bridge: ObjectBridge, apps: Apps, records: list[ExchangeRecord]
) -> None:
    peer = await connect(bridge, "/echo?q=1", "a", "b")
    assert peer.response is not None and peer.response.status_code == 101
    assert peer.response.headers["Sec-WebSocket-Protocol"] == "b"  # the app's choice
    assert peer.response.headers["x-app"] == "1"
    assert "Sec-WebSocket-Extensions" not in peer.response.headers  # no deflate
    assert apps.scope["subprotocols"] == ["a", "b"]
    assert apps.scope["query_string"] == b"q=1" and apps.scope["scheme"] == "ws"
    peer.client.send_text(b"caf\xc3\xa9", fin=False)
    peer.client.send_continuation(b" ok", fin=True)
    peer.push()
    frame = await peer.message()
    assert frame.opcode is Opcode.TEXT and frame.data == "café ok".encode()
    big = bytes(range(256)) * (4 * MiB // 256)
    peer.client.send_binary(big)
    peer.push()
    frame = await peer.message()
    assert frame.opcode is Opcode.BINARY and frame.data == big
    peer.client.send_ping(b"hi")
    peer.push()
    await peer.until(lambda: peer.frames[-1].opcode is Opcode.PONG)
    assert peer.frames[-1].data == b"hi"
    assert records == []  # nothing logged while the socket is open
    peer.client.send_close(4000, "caller done")
    peer.push()
    await peer.until(lambda: peer.stream.closed is not None)
    assert peer.client.close_rcvd is not None and peer.client.close_rcvd.code == 4000
    peer.client.receive_eof()
    peer.push()  # our FIN
    await asyncio.sleep(0.01)
    assert apps.seen == [{"type": "websocket.disconnect", "code": 4000, "reason": "caller done"}]
    [record] = records
    assert (record.method, record.target, record.status, record.error) == (
        "GET",
        "/echo?q=1",
        101,
        None,
    )


async def test_close_from_the_app_reaches_the_caller(bridge: ObjectBridge, apps: Apps) -> None:
    peer = await connect(bridge, "/close")
    await peer.until(lambda: peer.client.close_rcvd is not None)
    assert peer.client.close_rcvd is not None
    assert (peer.client.close_rcvd.code, peer.client.close_rcvd.reason) == (4003, "bye")
    await peer.until(lambda: peer.stream.closed is not None)  # our EOF after its reply
    await asyncio.sleep(0.01)
    assert apps.seen[0]["code"] == 4003


async def test_slow_app_pauses_the_stream_and_loses_nothing(
    bridge: ObjectBridge, apps: Apps
) -> None:
    peer = await connect(bridge, "/slow")
    chunk = "é".encode() * (32 * 1024)  # text: 64 KiB on the wire, 32 Ki characters
    sent = 0
    while not peer.stream.reading_paused:
        peer.client.send_text(chunk)
        peer.push()
        sent += 1
        assert sent * len(chunk) < 4 * INBOX_LIMIT, "reading never paused"
    assert peer.stream.reading_paused
    apps.go.set()
    await peer.until(lambda: not peer.stream.reading_paused)
    peer.client.send_close(1000)
    peer.push()
    await peer.until(lambda: peer.stream.closed is not None)
    await asyncio.sleep(0.01)
    assert [m["text"] for m in apps.seen[:-1]] == [chunk.decode()] * sent
    assert apps.seen[-1]["code"] == 1000
    ws = getattr(peer.stream.handler, "ws", None)
    assert ws is not None and ws.inbox_size == 0  # the accounting comes back to zero


async def test_app_that_outpaces_its_caller_waits_in_send(bridge: ObjectBridge, apps: Apps) -> None:
    peer = await connect(bridge, "/flood", high=256 * 1024)
    await asyncio.sleep(0.2)  # the caller (the relay) takes nothing meanwhile
    sent = len(apps.seen)
    assert 0 < sent * 65536 <= 256 * 1024 + 65536  # stopped at the stream's high mark
    assert peer.stream.max_buffered <= 256 * 1024 + 65536 + 16
    for _ in range(3):
        peer.stream.drain()
        await asyncio.sleep(0.05)
    assert len(apps.seen) > sent  # and went on as the stream drained
    peer.stream.abort(ErrorCode.CANCEL)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([(Opcode.TEXT, b"\xff\xfe", True)], 1007),  # not UTF-8
        ([(Opcode.CONT, b"x", True)], 1002),  # a continuation out of the blue
    ],
)
async def test_bad_frames_fail_the_socket(
    bridge: ObjectBridge, apps: Apps, frames: list[tuple[Opcode, bytes, bool]], code: int
) -> None:
    peer = await connect(bridge, "/echo")
    for opcode, data, fin in frames:
        peer.client.send_frame(Frame(opcode, data, fin))
    peer.push()
    await peer.until(lambda: peer.client.close_rcvd is not None)
    assert peer.client.close_rcvd is not None and peer.client.close_rcvd.code == code


async def test_message_over_the_limit_is_1009(apps: Apps) -> None:
    target = AsgiTarget(apps, lifespan="off")
    bridge = ObjectBridge(target)
    peer = await connect(bridge, "/echo")
    peer.client.send_binary(b"x" * (16 * MiB + 1))
    peer.push()
    await peer.until(lambda: peer.client.close_rcvd is not None)
    assert peer.client.close_rcvd is not None and peer.client.close_rcvd.code == 1009
    await bridge.aclose()


async def test_send_after_the_caller_left_raises_oserror(bridge: ObjectBridge, apps: Apps) -> None:
    peer = await connect(bridge, "/late")
    peer.stream.abort(ErrorCode.CANCEL)
    await asyncio.sleep(0.01)
    assert apps.seen == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    assert isinstance(apps.send_error, OSError)


@pytest.mark.parametrize(("path", "status"), [("/returns", 500), ("/split", 500)])
async def test_app_that_does_not_accept(bridge: ObjectBridge, path: str, status: int) -> None:
    peer = await connect(bridge, path)
    assert peer.response is not None and peer.response.status_code == status
    assert peer.stream.closed is True


async def test_app_failure_after_accept_is_1011(bridge: ObjectBridge) -> None:
    peer = await connect(bridge, "/fails")
    await peer.until(lambda: peer.client.close_rcvd is not None)
    assert peer.client.close_rcvd is not None and peer.client.close_rcvd.code == 1011


async def test_invalid_handshake_never_reaches_the_app(bridge: ObjectBridge, apps: Apps) -> None:
    stream = open_stream(bridge.handler)
    assert stream.handler is not None
    stream.handler.data(
        b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    await stream.wait()
    assert stream.out.startswith(b"HTTP/1.1 400 ")  # no Sec-WebSocket-Key
    assert apps.scope == {}


async def test_peer_that_never_answers_our_close_is_reset(apps: Apps) -> None:
    limits = WebSocketLimits(close_timeout=0.2)
    bridge = ObjectBridge(AsgiTarget(apps, lifespan="off", websocket_limits=limits))
    stream = open_stream(bridge.handler)
    Peer(stream, "/close").push()
    await stream.wait_for(lambda: stream.reset_code is not None, within=5)
    assert stream.reset_code is ErrorCode.CANCEL
    await bridge.aclose()


async def test_molecule_wrappers_pass_websockets_on_with_the_inbound_secret(apps: Apps) -> None:
    inbound = InboundSecretTarget(
        DedupTarget(AsgiTarget(apps, lifespan="off")), secret="inbound-s3cret"
    )
    bridge = ObjectBridge(inbound)
    refused = open_stream(bridge.handler)
    Peer(refused, "/echo").push()  # no Authorization: the wrapper's 401, as for HTTP
    await refused.wait()
    assert refused.out.startswith(b"HTTP/1.1 401 ")
    assert apps.scope == {}
    stream = open_stream(bridge.handler)
    peer = Peer(stream, "/echo")
    peer.client.data_to_send()  # replaced by the same request with the secret
    request = peer.client.connect()
    request.headers["Authorization"] = "Bearer inbound-s3cret"
    peer.client.send_request(request)
    peer.push()
    await peer.until(lambda: peer.response is not None)
    assert peer.response is not None and peer.response.status_code == 101
    peer.client.send_text(b"through the wrappers")
    peer.push()
    assert (await peer.message()).data == b"through the wrappers"
    await bridge.aclose()
