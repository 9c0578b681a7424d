"""Proxies that answer what real ones rarely do, over real loopback sockets: each ends
in the right error of the agent's tree, within the limits, without a credential."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from edge_agent.errors import NotARelay, ProxyRefused, RelayUnavailable
from edge_agent.proxy import parse_proxy
from edge_agent.proxy_dial import MAX_HEAD, dial

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def fake_proxy(handler: Handler) -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def answer(data: bytes) -> Handler:
    """Read the CONNECT head, write ``data``; hold the connection open until the agent
    closes it, unless ``data`` is an unfinished head (then close it at once)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(data)
        await writer.drain()
        if not data or b"\r\n\r\n" in data:
            await reader.read()

    return handler


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEAD // 6), NotARelay, "answer is too long"),
        (b"HTTP/1.1 200 OK\r\n\r\nsurprise", NotARelay, "sent data before the relay spoke"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", NotARelay, "does not answer as an HTTP proxy does"),
        (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", RelayUnavailable, "could not reach the relay"),
        (
            b"HTTP/1.1 407 Proxy Authentication Required\r\n"
            b"Proxy-Authenticate: Negotiate\r\nProxy-Authenticate: NTLM\r\n\r\n",
            ProxyRefused,
            "requires negotiate/ntlm authentication .407 Proxy Authentication Required., which "
            "edge-agent does not speak .only Basic.",
        ),
        (b"HTTP/1.0 403 Forbidden\r\n\r\n", ProxyRefused, "refused to connect to the relay"),
        (b"HTTP/1.1 200 Connection established\r\n", RelayUnavailable, "closed the connection"),
    ],
)
async def test_http_connect_answers(data: bytes, error: type[Exception], message: str) -> None:
    async with fake_proxy(answer(data)) as port:
        with pytest.raises(error, match=message) as caught:
            await dial(parse_proxy(f"http://u:hunter2@127.0.0.1:{port}"), "relay.test", 443, 2.0)
    assert "hunter2" not in str(caught.value)


async def test_a_silent_proxy_times_out() -> None:
    async with fake_proxy(answer(b"")) as port:
        with pytest.raises(RelayUnavailable, match=r"did not answer in 0\.3 s"):
            await dial(parse_proxy(f"http://127.0.0.1:{port}"), "relay.test", 443, 0.3)


def socks_reply(code: int) -> Handler:
    """A SOCKS5 proxy without authentication that answers CONNECT with ``code``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        greeting = await reader.readexactly(2)
        await reader.readexactly(greeting[1])
        writer.write(b"\x05\x00")
        head = await reader.readexactly(5)  # VER CMD RSV ATYP=3 LEN
        assert head[3] == 3  # socks5h: the name, not an address
        name = await reader.readexactly(head[4] + 2)
        assert name[:-2] == b"relay.test"
        writer.write(bytes((5, code, 0, 1)) + b"\x7f\x00\x00\x01\x01\xbb")
        await writer.drain()
        await reader.read()

    return handler


@pytest.mark.parametrize(
    ("code", "error", "message"),
    [
        (2, ProxyRefused, "connection not allowed by the proxy's rules"),
        (5, RelayUnavailable, "connection refused by the relay's host"),
        (99, ProxyRefused, "error 99"),
    ],
)
async def test_socks5_replies(code: int, error: type[Exception], message: str) -> None:
    async with fake_proxy(socks_reply(code)) as port:
        with pytest.raises(error, match=message):
            await dial(parse_proxy(f"socks5h://127.0.0.1:{port}"), "relay.test", 443, 2.0)


async def test_socks5_success_leaves_no_reply_byte_behind() -> None:
    async with fake_proxy(socks_reply(0)) as port:
        sock = await dial(parse_proxy(f"socks5h://127.0.0.1:{port}"), "relay.test", 443, 2.0)
        sock.setblocking(True)
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # BND.ADDR and BND.PORT were read: the stream is the relay's
        sock.close()
