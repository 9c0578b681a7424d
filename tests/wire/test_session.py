"""Session frames: HELLO/WELCOME (including HELLO sent again) and GOAWAY semantics."""

from __future__ import annotations

import pytest

from tests.wire.helpers import (
    GET,
    HTTP,
    NAME,
    OK,
    WELCOME,
    open_frame,
    open_pair,
    pair,
    pump,
    raw,
    settle,
    u32,
)
from wire import (
    CallerCredential,
    Connection,
    ErrorCode,
    FrameError,
    FrameType,
    GoAwayReceived,
    Hello,
    HelloReceived,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    StreamKind,
    StreamOpened,
    StreamReset,
    Welcome,
    WelcomeReceived,
)
from wire.frames import encode_goaway, encode_hello, encode_welcome

BEARER = CallerCredential("bearer", "ab" * 32)
BASIC = CallerCredential("basic", "cd" * 32)


# -- HELLO and WELCOME ---------------------------------------------------------------------


def test_handshake_events_and_limits() -> None:
    relay, agent = Connection(Role.RELAY), Connection(Role.AGENT)
    assert not (relay.established or agent.established)
    agent.send_hello(Hello(NAME, (BEARER,), "edge-agent/0.1"))
    assert pump(agent, relay) == [HelloReceived(Hello(NAME, (BEARER,), "edge-agent/0.1"))]
    assert not relay.established
    relay.send_welcome(Welcome(NAME, ("https://r/a/demo/",), 3, 100))
    assert relay.established and relay.max_streams == 3
    assert pump(relay, agent) == [WelcomeReceived(Welcome(NAME, ("https://r/a/demo/",), 3, 100))]
    assert agent.established and agent.max_streams == 3


def test_hello_sent_again_replaces_caller_auth_and_gets_no_answer() -> None:
    relay, agent = pair()
    agent.send_hello(Hello(NAME, (BEARER, BASIC)))
    assert pump(agent, relay) == [HelloReceived(Hello(NAME, (BEARER, BASIC)))]
    assert relay.data_to_send() == []  # the relay does not answer
    agent.send_hello(Hello(NAME))  # and again: clearing caller auth
    assert pump(agent, relay) == [HelloReceived(Hello(NAME))]
    assert relay.established and agent.established


def test_hello_again_with_another_name() -> None:
    relay, agent = pair()
    with pytest.raises(LocalProtocolError):
        agent.send_hello(Hello("other"))
    assert agent.data_to_send() == []
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive(raw(FrameType.HELLO, 0, encode_hello(Hello("other"))))
    assert info.value.code is ErrorCode.PROTOCOL_ERROR


def test_hello_says_the_tunnel_kind_and_keeps_it() -> None:
    relay, agent = Connection(Role.RELAY), Connection(Role.AGENT)
    agent.send_hello(Hello(NAME, tunnel=StreamKind.TCP))
    assert pump(agent, relay) == [HelloReceived(Hello(NAME, tunnel=StreamKind.TCP))]
    relay.send_welcome(Welcome(NAME, ("tcp://r:30000",), 4, 0, tunnel=StreamKind.TCP))
    assert pump(relay, agent) == [
        WelcomeReceived(Welcome(NAME, ("tcp://r:30000",), 4, 0, tunnel=StreamKind.TCP))
    ]
    agent.send_hello(Hello(NAME, (BEARER,), tunnel=StreamKind.TCP))  # same kind: fine
    pump(agent, relay)
    with pytest.raises(LocalProtocolError):
        agent.send_hello(Hello(NAME))  # an HTTP HELLO on a TCP session
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive(raw(FrameType.HELLO, 0, encode_hello(Hello(NAME))))
    assert info.value.code is ErrorCode.PROTOCOL_ERROR


def test_an_http_hello_is_the_same_bytes_as_before_the_tunnel_key() -> None:
    assert encode_hello(Hello(NAME)) == b'{"name":"demo","caller_auth":[],"agent":""}'
    assert b'"tunnel":"tls"' in encode_hello(Hello(NAME, tunnel=StreamKind.TLS))


def test_hello_again_before_welcome() -> None:
    relay, agent = Connection(Role.RELAY), Connection(Role.AGENT)
    agent.send_hello(Hello(NAME))
    with pytest.raises(LocalProtocolError):
        agent.send_hello(Hello(NAME))
    pump(agent, relay)
    with pytest.raises(RemoteProtocolError):
        relay.receive(raw(FrameType.HELLO, 0, encode_hello(Hello(NAME))))


@pytest.mark.parametrize(("again", "ok"), [(None, True), ("granted", True), ("zzz", False)])
def test_hello_again_in_open_mode_may_name_the_granted_tunnel(again: str | None, ok: bool) -> None:
    relay, agent = Connection(Role.RELAY), Connection(Role.AGENT)
    agent.send_hello(Hello(None))
    pump(agent, relay)
    relay.send_welcome(Welcome("granted", ("u",), 4, 0))
    pump(relay, agent)
    message = raw(FrameType.HELLO, 0, encode_hello(Hello(again, (BEARER,))))
    if ok:
        agent.send_hello(Hello(again, (BEARER,)))
        assert agent.data_to_send() == [message]
        assert relay.receive(message) == [HelloReceived(Hello(again, (BEARER,)))]
    else:
        with pytest.raises(LocalProtocolError):
            agent.send_hello(Hello(again))
        with pytest.raises(RemoteProtocolError):
            relay.receive(message)


def test_welcome_out_of_order() -> None:
    relay, agent = Connection(Role.RELAY), Connection(Role.AGENT)
    with pytest.raises(LocalProtocolError):
        relay.send_welcome(WELCOME)  # before HELLO
    with pytest.raises(RemoteProtocolError):
        agent.receive(raw(FrameType.WELCOME, 0, encode_welcome(WELCOME)))  # before HELLO
    relay, agent = pair()
    with pytest.raises(LocalProtocolError):
        relay.send_welcome(WELCOME)  # twice
    with pytest.raises(RemoteProtocolError):
        agent.receive(raw(FrameType.WELCOME, 0, encode_welcome(WELCOME)))  # twice


@pytest.mark.parametrize(
    "hello",
    [
        Hello(NAME, (BEARER,) * 9),
        Hello(NAME, agent="x" * 201),
        Hello(NAME, (CallerCredential("digest", "ab" * 32),)),
        Hello(NAME, (CallerCredential("bearer", "AB" * 32),)),
        Hello(NAME, (CallerCredential("bearer", "ab"),)),
        Hello(NAME * 20_000),
    ],
)
def test_invalid_hello_is_refused_before_sending(hello: Hello) -> None:
    agent = Connection(Role.AGENT)
    with pytest.raises(LocalProtocolError):
        agent.send_hello(hello)
    assert agent.data_to_send() == []
    agent.send_hello(Hello(NAME))  # the refused one did not count as the first HELLO


@pytest.mark.parametrize(
    "welcome",
    [
        Welcome(NAME, ("u",), 0, 0),
        Welcome(NAME, ("u",), 1, -1),
        Welcome(NAME, ("u",), True, 0),
        Welcome(NAME, (1,), 1, 0),  # type: ignore[arg-type]
    ],
)
def test_invalid_welcome_is_refused_before_sending(welcome: Welcome) -> None:
    relay = Connection(Role.RELAY)
    relay.receive(raw(FrameType.HELLO, 0, encode_hello(Hello(NAME))))
    with pytest.raises(LocalProtocolError):
        relay.send_welcome(welcome)
    assert relay.data_to_send() == [] and not relay.established


# -- GOAWAY --------------------------------------------------------------------------------


def test_relay_goaway_stops_new_streams_and_lets_old_ones_finish() -> None:
    relay, agent, sid = open_pair()
    relay.send_goaway(ErrorCode.NO_ERROR, "shutting down")
    assert not relay.can_open()
    with pytest.raises(LocalProtocolError):
        relay.open_stream(HTTP, GET)
    [message] = relay.data_to_send()
    assert message == raw(FrameType.GOAWAY, 0, u32(sid) + u32(0) + b"shutting down")
    assert agent.receive(message) == [GoAwayReceived(sid, ErrorCode.NO_ERROR, "shutting down")]
    # The open stream still completes, both ways.
    relay.send_data(sid, b"body", end_stream=True)
    agent.send_data(sid, OK)
    agent.send_data(sid, b"hello", end_stream=True)
    pump(relay, agent)
    pump(agent, relay)
    assert relay.open_streams == agent.open_streams == 0


def test_agent_receiving_open_after_the_relays_goaway() -> None:
    relay, agent, sid = open_pair()
    relay.send_goaway()
    pump(relay, agent)
    with pytest.raises(RemoteProtocolError) as info:
        agent.receive(open_frame(sid + 2, GET))
    assert info.value.code is ErrorCode.PROTOCOL_ERROR


def test_agent_goaway_drains_and_refuses_opens_that_crossed_it() -> None:
    relay, agent, sid = open_pair()
    agent.send_goaway(ErrorCode.NO_ERROR, "draining")
    crossing = relay.open_stream(HTTP, GET, end_stream=True)  # sent before the GOAWAY arrives
    assert pump(agent, relay) == [GoAwayReceived(sid, ErrorCode.NO_ERROR, "draining")]
    assert not relay.can_open()
    with pytest.raises(LocalProtocolError):
        relay.open_stream(HTTP, GET)
    # The agent still gets the crossing OPEN; it answers REFUSED_STREAM (safe to retry).
    assert pump(relay, agent) == [StreamOpened(crossing, StreamKind.HTTP, GET, True)]
    agent.send_reset(crossing, ErrorCode.REFUSED_STREAM, "draining")
    assert pump(agent, relay) == [StreamReset(crossing, ErrorCode.REFUSED_STREAM, "draining")]


def test_goaway_graceful_then_error_each_at_most_once() -> None:
    relay, agent = pair()
    relay.send_goaway()
    relay.send_goaway()  # graceful again: no-op
    relay.send_goaway(ErrorCode.PROTOCOL_ERROR, "bad frame")
    relay.send_goaway(ErrorCode.INTERNAL_ERROR)  # an error again: no-op
    relay.send_goaway()
    assert pump(relay, agent) == [
        GoAwayReceived(0, ErrorCode.NO_ERROR, ""),
        GoAwayReceived(0, ErrorCode.PROTOCOL_ERROR, "bad frame"),
    ]
    assert agent.goaway_received and relay.goaway_sent


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (ErrorCode.NO_ERROR, ErrorCode.NO_ERROR),
        (ErrorCode.PROTOCOL_ERROR, ErrorCode.PROTOCOL_ERROR),
        (ErrorCode.PROTOCOL_ERROR, ErrorCode.INTERNAL_ERROR),
        (ErrorCode.REPLACED, ErrorCode.NO_ERROR),  # an error GOAWAY is never followed
    ],
)
def test_a_second_goaway_of_the_same_kind_is_a_protocol_error(
    first: ErrorCode, second: ErrorCode
) -> None:
    relay, agent = pair()
    assert agent.receive(raw(FrameType.GOAWAY, 0, encode_goaway(0, first, ""))) == [
        GoAwayReceived(0, first, "")
    ]
    with pytest.raises(RemoteProtocolError) as info:
        agent.receive(raw(FrameType.GOAWAY, 0, encode_goaway(0, second, "again")))
    assert info.value.code is ErrorCode.PROTOCOL_ERROR
    assert relay.goaway_received is False


def test_graceful_then_error_goaway_is_accepted_once_each() -> None:
    relay, _agent = pair()
    graceful = raw(FrameType.GOAWAY, 0, encode_goaway(0, ErrorCode.NO_ERROR, "bye"))
    error = raw(FrameType.GOAWAY, 0, encode_goaway(0, ErrorCode.ENHANCE_YOUR_CALM, "calm"))
    assert relay.receive(graceful) == [GoAwayReceived(0, ErrorCode.NO_ERROR, "bye")]
    assert relay.receive(error) == [GoAwayReceived(0, ErrorCode.ENHANCE_YOUR_CALM, "calm")]
    with pytest.raises(RemoteProtocolError):
        relay.receive(error)


def test_what_send_goaway_emits_the_peer_always_accepts() -> None:
    relay, agent = pair()
    for code in (ErrorCode.NO_ERROR, ErrorCode.CANCEL, ErrorCode.NO_ERROR, ErrorCode.CANCEL):
        relay.send_goaway(code)
        agent.send_goaway(code)
        settle(relay, agent)  # raises if either side sent a GOAWAY the other refuses
    assert relay.goaway_received and agent.goaway_received


def test_goaway_before_the_handshake_refuses_the_session() -> None:
    relay, agent = Connection(Role.RELAY), Connection(Role.AGENT)
    agent.send_hello(Hello(NAME))
    pump(agent, relay)
    relay.send_goaway(ErrorCode.UNAUTHORIZED, "token revoked")
    assert pump(relay, agent) == [GoAwayReceived(0, ErrorCode.UNAUTHORIZED, "token revoked")]


@pytest.mark.parametrize(
    "message",
    [
        raw(FrameType.GOAWAY, 0, u32(0)),  # no code
        raw(FrameType.GOAWAY, 0, b"\0\0\0\0\0\0\0"),
        raw(FrameType.GOAWAY, 1, u32(0) + u32(0)),  # not on stream 0
        raw(FrameType.GOAWAY, 0, u32(0) + u32(0) + bytes(1025)),  # reason too long
    ],
)
def test_malformed_goaway(message: bytes) -> None:
    relay, _ = pair()
    with pytest.raises(FrameError):
        relay.receive(message)


def test_relay_receiving_goaway_may_not_open_but_keeps_its_streams() -> None:
    relay, agent, sid = open_pair()
    message = raw(FrameType.GOAWAY, 0, encode_goaway(sid, ErrorCode.REPLACED, "newer"))
    assert relay.receive(message) == [GoAwayReceived(sid, ErrorCode.REPLACED, "newer")]
    assert relay.goaway_received and not relay.can_open()
    relay.send_data(sid, b"still flowing", end_stream=True)
    assert pump(relay, agent)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"name": 5}',
        b'{"name": "demo", "caller_auth": ["bearer"]}',
        b'{"name": "demo", "caller_auth": {"scheme": "bearer"}}',
        b'{"name": "demo", "agent": 7}',
        b'{"name": "demo", "caller_auth": [{"scheme": "bearer", "sha256": 1}]}',
    ],
)
def test_malformed_hello_payloads(payload: bytes) -> None:
    relay = Connection(Role.RELAY)
    with pytest.raises(FrameError):
        relay.receive(raw(FrameType.HELLO, 0, payload))


@pytest.mark.parametrize(
    "payload",
    [
        b'{"name": 1, "urls": [], "max_streams": 1, "max_request_body": 0}',
        b'{"name": "d", "urls": "u", "max_streams": 1, "max_request_body": 0}',
        b'{"name": "d", "urls": [], "max_streams": 1.5, "max_request_body": 0}',
        b'{"name": "d", "urls": []}',
    ],
)
def test_malformed_welcome_payloads(payload: bytes) -> None:
    agent = Connection(Role.AGENT)
    agent.send_hello(Hello(NAME))
    with pytest.raises(FrameError):
        agent.receive(raw(FrameType.WELCOME, 0, payload))
    assert not agent.established


def test_unencodable_hello_is_a_local_error() -> None:
    agent = Connection(Role.AGENT)
    with pytest.raises(LocalProtocolError):
        agent.send_hello(Hello(b"demo"))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        agent.send_hello(Hello(NAME, ("not a credential",)))  # type: ignore[arg-type]
