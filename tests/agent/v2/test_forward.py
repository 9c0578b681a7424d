"""HttpForwarder against real local servers (uvicorn, raw TCP scripts, websockets),
driven through a FakeStream the way the tunnel runtime drives it."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.uri import parse_uri

from edge_agent.errors import ConfigError
from edge_agent.forward import ExchangeRecord, HttpForwarder
from tests.agent.certs import make_pki
from tests.agent.origin import free_port, run_uvicorn
from tests.agent.v2.apps import V2Origin, pattern
from tests.agent.v2.support import (
    FakeStream,
    RawServer,
    Script,
    canned,
    open_stream,
    parse_response,
    parse_responses,
    raw_server,
    read_head,
    send,
)
from wire import ErrorCode

MiB = 1024 * 1024


@pytest.fixture
def app() -> V2Origin:
    return V2Origin()


@pytest.fixture
async def origin(app: V2Origin) -> AsyncIterator[str]:
    async with run_uvicorn(app) as url:
        yield url


@pytest.fixture
def records() -> list[ExchangeRecord]:
    return []


@pytest.fixture
async def forwarder(origin: str, records: list[ExchangeRecord]) -> AsyncIterator[HttpForwarder]:
    fwd = HttpForwarder(origin, on_done=records.append)
    yield fwd
    fwd.close()


def get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: public.example", *extra, "", ""]
    return "\r\n".join(lines).encode()


def post_head(path: str, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: public.example", *extra, "", ""]
    return "\r\n".join(lines).encode()


async def upload(stream: FakeStream, body: bytes, chunk: int = 64 * 1024) -> None:
    """Feed ``body`` as the runtime would: nothing while the handler paused reading."""
    assert stream.handler is not None
    for start in range(0, len(body), chunk):
        await stream.wait_for(lambda: not stream.reading_paused)
        stream.handler.data(body[start : start + chunk])
        await asyncio.sleep(0)
    stream.handler.end(False)


async def test_small_get_passes_bytes_and_records(
    forwarder: HttpForwarder, records: list[ExchangeRecord]
) -> None:
    stream = open_stream(forwarder.handler, sid=7)
    send(stream, get("/echo?x=1", "X-Trace: abc"))
    await stream.wait()
    response = parse_response(bytes(stream.out))
    assert response.status == 200 and stream.closed is False
    answer = json.loads(response.body)
    assert answer["path"] == "/echo" and answer["query"] == "x=1"
    assert ["host", "public.example"] in answer["headers"]  # preserved by default
    assert ["x-trace", "abc"] in answer["headers"]
    assert stream.writes <= 2  # one write per data_received
    (record,) = records
    assert (record.sid, record.method, record.target, record.status) == (7, "GET", "/echo?x=1", 200)
    assert record.error is None and record.bytes_out == len(stream.out)
    assert record.bytes_in == len(get("/echo?x=1", "X-Trace: abc"))


async def test_post_10_mib_sha256(forwarder: HttpForwarder) -> None:
    body = pattern(0, 10 * MiB)
    stream = open_stream(forwarder.handler)
    send(stream, post_head("/echo", f"Content-Length: {len(body)}"), end=False)
    await upload(stream, body)
    await stream.wait(30)
    answer = json.loads(parse_response(bytes(stream.out)).body)
    assert answer["size"] == len(body)
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()


async def test_get_10_mib_sha256(forwarder: HttpForwarder) -> None:
    stream = open_stream(forwarder.handler)
    send(stream, get(f"/bytes?n={10 * MiB}"))
    await stream.wait(30)
    response = parse_response(bytes(stream.out))
    assert hashlib.sha256(response.body).digest() == hashlib.sha256(pattern(0, 10 * MiB)).digest()
    assert stream.closed is False


async def test_chunked_request_and_response(forwarder: HttpForwarder) -> None:
    body = pattern(0, 300_000)
    stream = open_stream(forwarder.handler)
    send(stream, post_head("/echo", "Transfer-Encoding: chunked"), end=False)
    for start in range(0, len(body), 70_000):
        part = body[start : start + 70_000]
        send(stream, b"%x\r\n" % len(part) + part + b"\r\n", end=False)
    send(stream, b"0\r\nX-Trailer: t\r\n\r\n")
    await stream.wait()
    answer = json.loads(parse_response(bytes(stream.out)).body)
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()

    stream = open_stream(forwarder.handler)
    send(stream, get("/bytes?n=200000&chunk=30000&chunked=1"))
    await stream.wait()
    response = parse_response(bytes(stream.out))
    assert response.header(b"transfer-encoding") == b"chunked"
    assert response.body == pattern(0, 200_000) and stream.closed is False
    assert forwarder.connections_made == 1


async def test_chunked_response_with_trailers_ends_at_the_trailers() -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n"
    )
    async with raw_server(canned(response, response, close=False)) as server:
        fwd = HttpForwarder(server.url)
        for _ in range(2):
            stream = open_stream(fwd.handler)
            send(stream, get("/"))
            await stream.wait()
            assert bytes(stream.out) == response and stream.closed is False
        assert server.connections == 1
        fwd.close()


@pytest.mark.parametrize("reused", [False, True])
async def test_head_ends_with_the_head_and_keeps_the_connection(
    forwarder: HttpForwarder, reused: bool
) -> None:
    if reused:  # the HEAD then goes on a pooled connection, attached before its request line
        stream = open_stream(forwarder.handler)
        send(stream, get("/bytes?n=3"))
        await stream.wait()
    stream = open_stream(forwarder.handler)
    send(stream, get("/bytes?n=5000").replace(b"GET", b"HEAD", 1))
    await stream.wait()
    raw = bytes(stream.out)
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"\r\n\r\n")
    assert b"content-length: 5000" in raw and stream.closed is False
    stream = open_stream(forwarder.handler)
    send(stream, get("/bytes?n=10"))
    await stream.wait()
    assert parse_response(bytes(stream.out)).body == pattern(0, 10)
    assert forwarder.connections_made == 1


@pytest.mark.parametrize("code", [204, 304])
async def test_no_body_statuses(forwarder: HttpForwarder, code: int) -> None:
    for _ in range(2):
        stream = open_stream(forwarder.handler)
        send(stream, get(f"/status?code={code}"))
        await stream.wait()
        assert parse_response(bytes(stream.out)).status == code and stream.closed is False
    assert forwarder.connections_made == 1


async def test_interim_responses_pass_through() -> None:
    response = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    async with raw_server(canned(response, close=False)) as server:
        fwd = HttpForwarder(server.url)
        stream = open_stream(fwd.handler)
        send(stream, post_head("/", "Content-Length: 2", "Expect: 100-continue"), b"hi")
        await stream.wait()
        assert bytes(stream.out) == response and stream.closed is False
        assert [m.status for m in parse_responses(response)] == [100, 103, 200]
        fwd.close()


async def test_close_delimited_body_ends_with_close() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"all of it" * 1000
    async with raw_server(canned(response)) as server:
        fwd = HttpForwarder(server.url)
        stream = open_stream(fwd.handler)
        send(stream, get("/"))
        await stream.wait()
        assert bytes(stream.out) == response and stream.closed is True
        assert stream.reset_code is None


@pytest.mark.parametrize(
    "request_line_extra",
    [("GET /echo HTTP/1.1", "Connection: close"), ("GET /echo HTTP/1.0", "X-Old: 1")],
)
async def test_connection_close_and_http10_set_the_close_flag(
    forwarder: HttpForwarder, request_line_extra: tuple[str, str]
) -> None:
    line, extra = request_line_extra
    stream = open_stream(forwarder.handler)
    send(stream, f"{line}\r\nHost: x\r\n{extra}\r\n\r\n".encode())
    await stream.wait()
    assert parse_response(bytes(stream.out)).status == 200
    assert stream.closed is True


async def test_keep_alive_reuses_one_connection() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes"
    async with raw_server(canned(*[answer] * 5, close=False)) as server:
        fwd = HttpForwarder(server.url)
        for _ in range(5):
            stream = open_stream(fwd.handler)
            send(stream, get("/"))
            await stream.wait()
            assert bytes(stream.out) == answer
        assert server.connections == 1 and len(server.requests) == 5
        fwd.close()


async def test_unfinished_request_is_not_pooled() -> None:
    """The target answers before the request body is complete: the connection waits
    for the relay's FIN and is pooled only then."""
    answer = b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n"
    async with raw_server(canned(answer, answer, close=False)) as server:
        fwd = HttpForwarder(server.url)
        stream = open_stream(fwd.handler)
        send(stream, post_head("/", "Content-Length: 10"), end=False)
        await stream.wait()
        assert stream.closed is False
        assert not fwd._idle  # not pooled before the FIN
        send(stream, b"0123456789")
        assert len(fwd._idle) == 1
        fwd.close()


def closes_idle_connections() -> Script:
    """The first connection answers once, then closes as the next request arrives
    (a server timing out an idle keep-alive connection); later ones answer normally."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def script(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        first = state.connections == 1
        await read_head(reader, state)
        writer.write(answer)
        if first:
            await reader.readuntil(b"\r\n\r\n")
            return  # closed without a byte of answer
        await reader.read()

    return script


@pytest.mark.parametrize(("method", "replayed"), [("GET", True), ("POST", False)])
async def test_reused_connection_closed_by_the_server(method: str, replayed: bool) -> None:
    async with raw_server(closes_idle_connections()) as server:
        fwd = HttpForwarder(server.url)
        stream = open_stream(fwd.handler)
        send(stream, get("/"))
        await stream.wait()
        stream = open_stream(fwd.handler)
        head = f"{method} /again HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
        send(stream, head)
        await stream.wait()
        if replayed:
            assert parse_response(bytes(stream.out)).body == b"ok"
            assert server.connections == 2 and server.requests[-1] == head
        else:
            assert stream.reset_code == ErrorCode.TARGET_ERROR and not stream.out
        fwd.close()


async def test_target_down_is_connect_error(records: list[ExchangeRecord]) -> None:
    fwd = HttpForwarder(f"127.0.0.1:{free_port()}", on_done=records.append)
    stream = open_stream(fwd.handler)
    assert stream.reading_paused  # nothing is taken while there is no connection
    send(stream, get("/"))
    await stream.wait()
    assert stream.reset_code == ErrorCode.CONNECT_ERROR and not stream.out
    assert records[0].error is not None and records[0].status is None


async def test_connect_timeout_is_target_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    fwd = HttpForwarder("127.0.0.1:9", connect_timeout=0.05)
    loop = asyncio.get_running_loop()

    async def never(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(10)

    monkeypatch.setattr(loop, "create_connection", never)
    stream = open_stream(fwd.handler)
    send(stream, get("/"))
    await stream.wait()
    assert stream.reset_code == ErrorCode.TARGET_TIMEOUT


async def test_target_dies_mid_response_is_target_error() -> None:
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten.."
    async with raw_server(canned(partial)) as server:
        fwd = HttpForwarder(server.url)
        stream = open_stream(fwd.handler)
        send(stream, get("/"))
        await stream.wait()
        assert stream.reset_code == ErrorCode.TARGET_ERROR and bytes(stream.out) == partial


async def test_target_closes_before_answering_is_target_error() -> None:
    async def hang_up(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        await read_head(reader, state)

    async with raw_server(hang_up) as server:
        fwd = HttpForwarder(server.url)
        stream = open_stream(fwd.handler)
        send(stream, get("/"))
        await stream.wait()
        assert stream.reset_code == ErrorCode.TARGET_ERROR and not stream.out


async def test_invalid_response_is_target_error() -> None:
    async with raw_server(canned(b"NOT HTTP AT ALL\r\n\r\n")) as server:
        fwd = HttpForwarder(server.url)
        stream = open_stream(fwd.handler)
        send(stream, get("/"))
        await stream.wait()
        assert stream.reset_code == ErrorCode.TARGET_ERROR


async def test_aborted_while_connecting_keeps_the_new_connection() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    async with raw_server(canned(answer, close=False)) as server:
        fwd = HttpForwarder(server.url)
        stream = open_stream(fwd.handler)
        assert stream.handler is not None
        stream.handler.data(get("/"))
        stream.abort(ErrorCode.CANCEL, "")
        await asyncio.sleep(0.1)
        assert len(fwd._idle) == 1 and not server.requests  # nothing was sent on it
        stream = open_stream(fwd.handler)
        send(stream, get("/"))
        await stream.wait()
        assert bytes(stream.out) == answer and server.connections == 1
        fwd.close()


async def test_aborted_disconnects_the_local_request(
    forwarder: HttpForwarder, app: V2Origin, records: list[ExchangeRecord]
) -> None:
    stream = open_stream(forwarder.handler)
    send(stream, get("/wait"))
    await asyncio.wait_for(app.waiting.wait(), 10)
    await stream.wait_for(lambda: b"first" in stream.out)
    assert stream.handler is not None
    stream.abort(ErrorCode.CANCEL, "caller left")
    await asyncio.wait_for(app.disconnected.wait(), 10)
    assert stream.closed is None and stream.reset_code is None  # nothing sent after abort
    assert records[0].error is not None and "CANCEL" in records[0].error


async def test_upgrade_becomes_a_raw_pipe_to_a_websocket_server() -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        fwd = HttpForwarder(f"127.0.0.1:{port}")
        client = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/chat"))
        client.send_request(client.connect())
        stream = open_stream(fwd.handler)
        send(stream, *client.data_to_send(), end=False)

        async def receive() -> list[bytes]:
            await stream.wait_for(lambda: bool(stream.out))
            data, stream.out[:] = bytes(stream.out), b""
            client.receive_data(data)
            return [bytes(e.data) for e in client.events_received() if isinstance(e, Frame)]

        await receive()  # the 101 handshake response
        assert client.handshake_exc is None
        for text in ("one", "two" * 10000):
            client.send_text(text.encode())
            send(stream, *client.data_to_send(), end=False)
            got: list[bytes] = []
            while b"".join(got) != text.encode():
                got += await receive()
        client.send_close()
        send(stream, *client.data_to_send(), end=False)
        await receive()  # the server's close frame; then it closes the TCP connection
        await stream.wait()
        assert stream.closed is False and stream.reset_code is None
        assert stream.handler is not None
        stream.handler.end(False)  # the relay's half ends too
        fwd.close()


async def test_upgrade_pipe_half_closes_each_direction() -> None:
    """The relay's FIN becomes the target's EOF; the target still answers after it, and
    its own EOF ends the stream."""

    async def upgrade(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        await read_head(reader, state)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\nConnection: Upgrade\r\n\r\n"
        )
        received = await reader.read()  # until the agent's half-close
        writer.write(b"got " + received)
        writer.write_eof()

    async with raw_server(upgrade) as server:
        fwd = HttpForwarder(server.url)
        stream = open_stream(fwd.handler)
        send(stream, get("/", "Upgrade: raw", "Connection: Upgrade"), end=False)
        await stream.wait_for(lambda: b"\r\n\r\n" in stream.out)
        send(stream, b"ping ", b"pong")  # then the relay's FIN
        await stream.wait()
        assert bytes(stream.out).endswith(b"\r\n\r\ngot ping pong")
        assert stream.closed is False and stream.reset_code is None
        fwd.close()


async def test_paused_stream_stops_reading_the_target(forwarder: HttpForwarder) -> None:
    total = 16 * MiB
    stream = open_stream(forwarder.handler, high=256 * 1024)
    send(stream, get(f"/bytes?n={total}"))
    await stream.wait_for(lambda: stream.writing_paused)
    await asyncio.sleep(0.2)
    held = len(stream.out)
    await asyncio.sleep(0.2)
    assert len(stream.out) == held  # nothing read from the target while paused
    assert stream.max_buffered < 256 * 1024 + 2 * MiB  # one read past the mark at most
    while not stream.finished.is_set():
        stream.drain()
        await stream.wait_for(lambda: stream.writing_paused or stream.finished.is_set())
    body = parse_response(bytes(stream.out)).body
    assert hashlib.sha256(body).digest() == hashlib.sha256(pattern(0, total)).digest()


async def test_target_that_does_not_read_pauses_the_stream() -> None:
    release = asyncio.Event()

    async def slow(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        await read_head(reader, state)
        await release.wait()
        await reader.read()

    async with raw_server(slow) as server:
        fwd = HttpForwarder(server.url)
        stream = open_stream(fwd.handler)
        await stream.wait_for(lambda: not stream.reading_paused)  # connected
        send(stream, post_head("/", f"Content-Length: {256 * MiB}"), end=False)
        assert stream.handler is not None
        chunk, sent = b"x" * 65536, 0
        while not stream.reading_paused and sent < 256 * MiB:
            stream.handler.data(chunk)
            sent += len(chunk)
        assert stream.reading_paused and sent < 64 * MiB
        release.set()
        await stream.wait_for(lambda: not stream.reading_paused)
        stream.abort(ErrorCode.CANCEL, "")
        fwd.close()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("preserve", b"public.example"), ("rewrite", None), ("backend.internal", b"backend.internal")],
)
async def test_host_header_modes(mode: str, expected: bytes | None) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    async with raw_server(canned(answer, close=False)) as server:
        records: list[ExchangeRecord] = []
        fwd = HttpForwarder(server.url, host_header=mode, on_done=records.append)
        stream = open_stream(fwd.handler)
        request = get("/p q", "X-A: 1")  # a target with a space: the version is the last word
        send(stream, request[:10], request[10:30], request[30:])  # a head split anywhere
        await stream.wait()
        (head,) = server.requests
        want = expected or f"127.0.0.1:{server.port}".encode()
        assert head == request.replace(b"public.example", want)
        (record,) = records
        assert (record.method, record.target, record.status) == ("GET", "/p q", 200)
        fwd.close()


def test_invalid_settings() -> None:
    with pytest.raises(ConfigError):
        HttpForwarder("8000", host_header="a\r\nb: c")
    with pytest.raises(ConfigError):
        HttpForwarder("http://127.0.0.1:8000/prefix")
    with pytest.raises(ConfigError):
        HttpForwarder("https://127.0.0.1:8443", ca_file="/nonexistent/ca.pem")


async def test_https_target_verified_with_target_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)

    async def tls_echo(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: RawServer
    ) -> None:
        await read_head(reader, state)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
        await writer.drain()

    async def run(**options: object) -> FakeStream:
        server = await asyncio.start_server(
            lambda r, w: tls_echo(r, w, RawServer("", 0)), "127.0.0.1", 0, ssl=pki.server_context()
        )
        port = server.sockets[0].getsockname()[1]
        fwd = HttpForwarder(f"https://127.0.0.1:{port}", **options)  # type: ignore[arg-type]
        stream = open_stream(fwd.handler)
        send(stream, get("/"))
        await stream.wait()
        fwd.close()
        server.close()
        return stream

    verified = await run(ca_file=str(pki.ca_file))
    assert parse_response(bytes(verified.out)).body == b"secret"
    untrusted = await run()
    assert untrusted.reset_code == ErrorCode.TARGET_ERROR
    insecure = await run(insecure=True)
    assert parse_response(bytes(insecure.out)).body == b"secret"


async def test_concurrent_streams_each_get_their_own_response(
    forwarder: HttpForwarder, records: list[ExchangeRecord]
) -> None:
    streams = [open_stream(forwarder.handler, sid=i) for i in range(64)]
    for i, stream in enumerate(streams):
        send(stream, get(f"/bytes?n={1000 + i}"))
    await asyncio.gather(*(stream.wait() for stream in streams))
    for i, stream in enumerate(streams):
        assert parse_response(bytes(stream.out)).body == pattern(0, 1000 + i)
    for i in range(64):  # a second round reuses the pooled connections
        again = open_stream(forwarder.handler, sid=100 + i)
        send(again, get("/bytes?n=5"))
        await again.wait()
    assert forwarder.connections_made == 64 and len(records) == 128


async def test_idle_connections_past_keepalive_are_closed() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    async with raw_server(canned(*[answer] * 3, close=False)) as server:
        fwd = HttpForwarder(server.url, keepalive=0.05)
        streams = [open_stream(fwd.handler) for _ in range(2)]
        for stream in streams:
            send(stream, get("/"))
        await asyncio.gather(*(stream.wait() for stream in streams))
        assert len(fwd._idle) == 2
        await asyncio.sleep(0.1)
        stream = open_stream(fwd.handler)  # both are stale: a new connection
        send(stream, get("/"))
        await stream.wait()
        assert server.connections == 3 and len(fwd._idle) == 1  # the stale ones were closed
        fwd.close()
