"""Several tunnels on one session: HELLO/WELCOME ``tunnels`` and the OPEN tunnel index."""

from __future__ import annotations

import pytest

from tests.wire.helpers import GET, HTTP, NAME, WELCOME, open_frame, pair, pump, raw
from wire import (
    MAX_SHARED,
    CallerCredential,
    Connection,
    FrameError,
    FrameType,
    Hello,
    HelloReceived,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    StreamKind,
    StreamOpened,
    TunnelGrant,
    TunnelRequest,
    Welcome,
)
from wire.frames import decode_hello, decode_welcome, encode_hello, encode_welcome

BEARER = CallerCredential("bearer", "ab" * 32)
EXTRAS = (TunnelRequest("api", "tok-api", (BEARER,)), TunnelRequest("bad!", None))
GRANTS = (
    TunnelGrant("api", ("https://relay.example/a/api/",)),
    TunnelGrant("bad!", refused="not a valid name"),
)


def _shared() -> tuple[Connection, Connection]:
    relay, agent = Connection(Role.RELAY), Connection(Role.AGENT)
    agent.send_hello(Hello(NAME, tunnels=EXTRAS))
    [event] = pump(agent, relay)
    assert isinstance(event, HelloReceived) and event.hello.tunnels == EXTRAS
    relay.send_welcome(Welcome(NAME, WELCOME.urls, 8, WELCOME.max_request_body, tunnels=GRANTS))
    pump(relay, agent)
    return relay, agent


def test_hello_and_welcome_carry_the_tunnels_list() -> None:
    payload = encode_hello(Hello(NAME, tunnels=EXTRAS))
    assert payload == (
        b'{"name":"demo","caller_auth":[],"agent":"","tunnels":['
        b'{"name":"api","caller_auth":[{"scheme":"bearer","sha256":"' + b"ab" * 32 + b'"}],'
        b'"token":"tok-api"},{"name":"bad!","caller_auth":[]}]}'
    )
    assert decode_hello(payload).tunnels == EXTRAS
    welcome = Welcome(NAME, WELCOME.urls, 8, 0, tunnels=GRANTS)
    payload = encode_welcome(welcome)
    assert payload.endswith(
        b'"tunnels":[{"name":"api","urls":["https://relay.example/a/api/"]},'
        b'{"name":"bad!","refused":"not a valid name"}]}'
    )
    assert decode_welcome(payload) == welcome
    assert b"tunnels" not in encode_hello(Hello(NAME))  # single-name bytes unchanged
    assert "tok-api" not in repr(EXTRAS[0])  # tokens stay out of logs


@pytest.mark.parametrize(
    "tunnels",
    [
        b"[]",
        b"{}",
        b'[{"name":1}]',
        b'[{"name":"' + b"a" * 64 + b'"}]',
        b'[{"name":"a","token":""}]',
        b'[{"name":"a","caller_auth":[{"scheme":"x","sha256":"y"}]}]',
        b"[" + b",".join([b'{"name":"a"}'] * (MAX_SHARED + 1)) + b"]",
    ],
)
def test_a_malformed_tunnels_list_is_a_frame_error(tunnels: bytes) -> None:
    with pytest.raises(FrameError):
        decode_hello(b'{"name":"demo","tunnels":' + tunnels + b"}")


def test_tunnels_are_for_http_sessions_only() -> None:
    with pytest.raises(FrameError, match="http tunnels only"):
        decode_hello(b'{"name":"demo","tunnel":"tcp","tunnels":[{"name":"a"}]}')


def test_a_pooled_hello_carries_no_tunnels() -> None:
    with pytest.raises(FrameError, match="pool and tunnels"):
        decode_hello(b'{"name":"demo","pool":true,"tunnels":[{"name":"a"}]}')


def test_open_carries_the_tunnel_index_on_a_shared_session() -> None:
    relay, agent = _shared()
    sid = relay.open_stream(HTTP, GET, end_stream=True, tunnel=1)
    [message] = relay.data_to_send()
    assert message[:8] == bytes.fromhex("0301000000000001")
    assert message[8:10] == b"\x01\x01" and message[10:] == GET  # kind HTTP, tunnel 1
    [event] = agent.receive(message)
    assert event == StreamOpened(sid, StreamKind.HTTP, GET, True, 1)
    relay.open_stream(HTTP, GET, end_stream=True)  # the session's own name: index 0
    [event] = pump(relay, agent)
    assert isinstance(event, StreamOpened) and event.tunnel == 0


def test_a_refused_or_unknown_tunnel_gets_no_stream() -> None:
    relay, _ = _shared()
    for index in (2, 3):  # 2 was refused; 3 was never asked for
        with pytest.raises(LocalProtocolError):
            relay.open_stream(HTTP, GET, tunnel=index)
        _, agent = _shared()
        with pytest.raises(RemoteProtocolError, match=f"tunnel {index}"):
            agent.receive(open_frame(1, bytes((index,)) + GET))
    assert relay.open_stream(HTTP, GET) == 1  # nothing was used up


def test_single_name_sessions_keep_their_bytes() -> None:
    relay, agent = pair()
    with pytest.raises(LocalProtocolError):
        relay.open_stream(HTTP, GET, tunnel=1)
    relay.open_stream(HTTP, b"x")
    [message] = relay.data_to_send()
    assert message == open_frame(1, b"x")
    assert agent.receive(message)[0] == StreamOpened(1, StreamKind.HTTP, b"x", False, 0)


def test_welcome_must_answer_each_tunnel_once() -> None:
    relay = Connection(Role.RELAY)
    relay.receive(raw(FrameType.HELLO, 0, encode_hello(Hello(NAME, tunnels=EXTRAS))))
    with pytest.raises(LocalProtocolError):
        relay.send_welcome(Welcome(NAME, WELCOME.urls, 8, 0, tunnels=GRANTS[:1]))
    agent = Connection(Role.AGENT)
    agent.send_hello(Hello(NAME, tunnels=EXTRAS))
    agent.receive(raw(FrameType.WELCOME, 0, encode_welcome(Welcome(NAME, WELCOME.urls, 8, 0))))
    assert agent.receive(open_frame(1, GET))[0] == StreamOpened(1, HTTP, GET, False, 0)
    agent = Connection(Role.AGENT)
    agent.send_hello(Hello(NAME))
    with pytest.raises(RemoteProtocolError):
        agent.receive(
            raw(
                FrameType.WELCOME,
                0,
                encode_welcome(Welcome(NAME, WELCOME.urls, 8, 0, tunnels=GRANTS)),
            )
        )


def test_hello_again_keeps_the_tunnels_count() -> None:
    _, agent = _shared()
    agent.send_hello(Hello(NAME, (BEARER,), tunnels=EXTRAS))
    with pytest.raises(LocalProtocolError):
        agent.send_hello(Hello(NAME, tunnels=EXTRAS[:1]))
