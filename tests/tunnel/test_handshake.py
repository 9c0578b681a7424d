"""tunnel.connect_link's upgrade (RFC 6455 sections 4.1-4.2) over real loopback sockets.

The server is either the relay's own accept (:mod:`tunnel.server`, websockets'
``ServerProtocol``), so the request is checked by the code that serves it, or a raw
socket that answers what a broken or hostile server would. The accept key a raw server
sends is computed here from the RFC, not with the client's code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import tunnel
import tunnel.server
import wire
from tunnel import wsframe
from tunnel.client import MAX_HANDSHAKE_RESPONSE
from wire import ErrorCode

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@contextlib.asynccontextmanager
async def raw_server(answer: Answer) -> AsyncIterator[str]:
    writers: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[Any]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(ConnectionError):
            await answer(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/_edge/connect?name=demo"
    finally:
        for writer in writers:
            writer.transport.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        server.close()


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


async def read_key(reader: asyncio.StreamReader) -> str:
    """Read the upgrade request (the relay's parser must take it); its key."""
    head = await reader.readuntil(b"\r\n\r\n")
    _ws, request = tunnel.server.read_upgrade(head)
    assert request is not None, head
    return request.headers["Sec-WebSocket-Key"]


def head_101(key: str, changes: dict[str, str | None], status_line: str = "") -> bytes:
    fields: dict[str, str | None] = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": accept_for(key),
        "Sec-WebSocket-Protocol": wire.SUBPROTOCOL,
    }
    fields.update(changes)
    lines = [status_line or "HTTP/1.1 101 Switching Protocols"]
    lines += [f"{name}: {value}" for name, value in fields.items() if value is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answering_101(changes: dict[str, str | None], status_line: str = "") -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = await read_key(reader)
        writer.write(head_101(key, changes, status_line))
        await reader.read()

    return answer


# -- the request ---------------------------------------------------------------------------------


async def test_the_request_is_one_the_relay_accepts() -> None:
    requests: list[Any] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        ws, request = tunnel.server.read_upgrade(head)
        assert request is not None
        requests.append(request)
        link = tunnel.server.accept(ws, request, writer.transport)
        assert link is not None
        await reader.read()

    async with raw_server(answer) as uri:
        for _ in range(2):
            link, response = await tunnel.connect_link(
                uri, headers=[("Authorization", "Bearer t0k"), ("X-Extra", "1")], open_timeout=3
            )
            assert response.status_code == 101
            assert response.headers["sec-websocket-protocol"] == wire.SUBPROTOCOL
            link.abort()
    port = uri.split(":")[2].split("/")[0]
    first, second = requests
    assert first.path == "/_edge/connect?name=demo"
    assert first.headers["Host"] == f"127.0.0.1:{port}"
    assert first.headers["Sec-WebSocket-Version"] == "13"
    assert first.headers["Sec-WebSocket-Protocol"] == wire.SUBPROTOCOL
    assert first.headers["Authorization"] == "Bearer t0k" and first.headers["X-Extra"] == "1"
    assert "Sec-WebSocket-Extensions" not in first.headers  # no deflate offered
    assert len(base64.b64decode(first.headers["Sec-WebSocket-Key"], validate=True)) == 16
    assert first.headers["Sec-WebSocket-Key"] != second.headers["Sec-WebSocket-Key"]


@pytest.mark.parametrize(
    "headers",
    [[("Authorization", "Bearer a\r\nX-Injected: 1")], [("Bad Name", "x")], [("X", "é")]],
)
async def test_a_header_that_cannot_be_sent_is_a_value_error(
    headers: list[tuple[str, str]],
) -> None:
    async with raw_server(answering_101({})) as uri:
        with pytest.raises(ValueError):
            await tunnel.connect_link(uri, headers=headers, open_timeout=3)


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:1/",
        "ws:///path",
        "ws://user:secret@127.0.0.1:1/",
        "ws://127.0.0.1:1/#frag",
        "ws://relais.exemple/é",
        "ws://127.0.0.1:99999/",
    ],
)
async def test_a_uri_that_is_not_ws_is_a_value_error(uri: str) -> None:
    with pytest.raises(ValueError):
        await tunnel.connect_link(uri, open_timeout=3)


# -- a 101 -------------------------------------------------------------------------------------


async def test_a_101_written_loosely_but_correctly_is_accepted() -> None:
    """Header names and the Upgrade token in any case, Connection among other tokens."""
    changes: dict[str, str | None] = {
        "Upgrade": None,
        "Connection": None,
        "upgrade": "WebSocket",
        "CONNECTION": "keep-alive, Upgrade",
    }
    async with raw_server(answering_101(changes)) as uri:
        link, response = await tunnel.connect_link(uri, open_timeout=3)
    assert response.status_code == 101 and response.headers["Upgrade"] == "WebSocket"
    link.abort()


@pytest.mark.parametrize(
    ("changes", "status_line", "said"),
    [
        ({"Sec-WebSocket-Accept": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}, "", "Sec-WebSocket-Accept"),
        ({"Sec-WebSocket-Accept": None}, "", "Sec-WebSocket-Accept"),
        ({"Upgrade": None}, "", "Upgrade"),
        ({"Upgrade": "h2c"}, "", "Upgrade"),
        ({"Upgrade": "websocket, h2c"}, "", "Upgrade"),
        ({"Connection": None}, "", "Connection"),
        ({"Connection": "keep-alive"}, "", "Connection"),
        ({"Sec-WebSocket-Protocol": "other.v9"}, "", "subprotocol"),
        ({"Sec-WebSocket-Protocol": None}, "", "subprotocol"),
        ({"Sec-WebSocket-Protocol": f"{wire.SUBPROTOCOL}, other.v9"}, "", "subprotocol"),
        ({"Sec-WebSocket-Extensions": "permessage-deflate"}, "", "extension"),
        ({}, "HTTP/1.0 101 Switching Protocols", "HTTP/1.1"),
    ],
)
async def test_a_101_that_breaks_the_rules_fails_the_handshake(
    changes: dict[str, str | None], status_line: str, said: str
) -> None:
    async with raw_server(answering_101(changes, status_line)) as uri:
        with pytest.raises(tunnel.HandshakeFailed, match=said):
            await tunnel.connect_link(uri, open_timeout=3)


async def test_a_101_without_an_offer_must_choose_no_subprotocol() -> None:
    async with raw_server(answering_101({})) as uri:
        with pytest.raises(tunnel.HandshakeFailed, match="not offered"):
            await tunnel.connect_link(uri, subprotocols=(), open_timeout=3)


class _Messages:
    """Just enough of a Session to collect what a link delivers."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.got = asyncio.Event()

    def attach(self, link: object) -> None:
        pass

    def receive(self, message: wire.Message) -> None:
        # A bulk message comes as its 8-byte header and the rest (see wsframe.Parser).
        self.messages.append(message[0] + message[1] if isinstance(message, tuple) else message)
        self.got.set()

    def fail(self, code: ErrorCode, reason: str) -> None:
        raise AssertionError(reason)

    def lost(self) -> None:
        pass

    def writable(self) -> None:
        pass


@pytest.mark.parametrize("piece", [0, 1, 7])
async def test_messages_sent_right_after_the_101_are_not_lost(piece: int) -> None:
    """A server may write its first messages in the same segment as its 101 answer,
    and a message may straddle what the handshake reader received; the head's end may
    straddle reads too (``piece``: written that many bytes at a time, 0: at once)."""
    sent = [b"first", bytes(range(256)) * 800, b"third"]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        ws, request = tunnel.server.read_upgrade(head)
        assert request is not None
        ws.send_response(ws.accept(request))
        frames = b"".join(wsframe.encode(wsframe.OP_BINARY, m, None) for m in sent)
        data = b"".join(ws.data_to_send()) + frames
        if piece:
            cut = len(data) - len(frames) + 64  # the head and the first frame, in pieces
            for at in range(0, cut, piece):
                writer.write(data[at : min(at + piece, cut)])
                await writer.drain()
                await asyncio.sleep(0)
            data = data[cut:]
        writer.write(data)
        await reader.read()

    async with raw_server(answer) as uri:
        link, response = await tunnel.connect_link(uri, open_timeout=5, ping_interval=None)
        assert response.status_code == 101
        messages = _Messages()
        link.attach(messages)  # type: ignore[arg-type]
        async with asyncio.timeout(5):
            while len(messages.messages) < len(sent):
                messages.got.clear()
                await messages.got.wait()
        assert messages.messages == sent
        link.abort()


# -- refusals --------------------------------------------------------------------------------------


def _json_body(code: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": "no"}}).encode()


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
@pytest.mark.parametrize(("status", "code"), [(401, "invalid_token"), (429, "too_many")])
async def test_a_refusal_carries_status_headers_and_body(
    framing: str, status: int, code: str
) -> None:
    body = _json_body(code)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 {status} Refused\r\ncontent-type: application/json\r\nretry-after: 2\r\n"
        if framing == "length":
            writer.write(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
        elif framing == "chunked":
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:5], body[5:]))
            writer.write(f"{head}transfer-encoding: chunked\r\n\r\n".encode())
            await writer.drain()
            writer.write(chunks + b"0\r\n\r\n")
        else:  # the body ends with the connection
            writer.write(f"{head}connection: close\r\n\r\n".encode() + body)
            writer.write_eof()
            await reader.read()
            return
        await asyncio.sleep(5)  # a complete answer is read without waiting for the close

    async with raw_server(answer) as uri:
        start = time.monotonic()
        with pytest.raises(tunnel.HandshakeRefused) as info:
            await tunnel.connect_link(uri, open_timeout=4)
        assert time.monotonic() - start < 3
    response = info.value.response
    assert response.status_code == status and f"{status}" in str(info.value)
    assert response.headers["Retry-After"] == "2"  # any case
    assert response.headers["CONTENT-TYPE"] == "application/json"
    assert json.loads(response.body)["error"]["code"] == code


async def test_an_answer_cut_off_in_its_body_fails_the_handshake() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 401 Unauthorized\r\ncontent-length: 100\r\n\r\n{"err')
        writer.close()

    async with raw_server(answer) as uri:
        with pytest.raises(tunnel.HandshakeFailed, match="closed"):
            await tunnel.connect_link(uri, open_timeout=3)


@pytest.mark.parametrize("where", ["head", "body"])
async def test_an_answer_longer_than_the_limit_fails_the_handshake(where: str) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        size = MAX_HANDSHAKE_RESPONSE + 1024
        if where == "head":  # a head that never ends
            writer.write(b"HTTP/1.1 401 Unauthorized\r\n")
            for _ in range(size // 1000):
                writer.write(b"X-Pad: " + b"a" * 991 + b"\r\n")
        else:
            writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: %d\r\n\r\n" % size)
            writer.write(b"a" * size)
        await reader.read()

    async with raw_server(answer) as uri:
        start = time.monotonic()
        with pytest.raises(tunnel.HandshakeFailed, match="too large"):
            await tunnel.connect_link(uri, open_timeout=5)
        assert time.monotonic() - start < 3  # refused when seen, not at the timeout


@pytest.mark.parametrize("keep_open", [False, True])
async def test_a_server_that_is_not_http_fails_the_handshake(keep_open: bool) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        if keep_open:
            await reader.read()  # until the client gives up
        writer.close()

    async with raw_server(answer) as uri:
        start = time.monotonic()
        with pytest.raises((tunnel.HandshakeFailed, OSError)):
            await tunnel.connect_link(uri, open_timeout=5)
        assert time.monotonic() - start < 2  # refused when seen, not at the timeout


async def test_a_connection_closed_before_the_answer_fails_the_handshake() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: webs")
        writer.close()

    async with raw_server(answer) as uri:
        with pytest.raises(tunnel.HandshakeFailed, match="closed during the upgrade"):
            await tunnel.connect_link(uri, open_timeout=3)
