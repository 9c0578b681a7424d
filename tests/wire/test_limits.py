"""Limits and head validation, on the sending side (LocalProtocolError before anything is
queued) and on the receiving side (RemoteProtocolError with FRAME_ERROR)."""

from __future__ import annotations

import json

import pytest

from tests.wire.helpers import GET, OK, POST, open_pair, pair, pump, raw, u32
from wire import (
    MAX_HEAD_SIZE,
    MAX_HEADERS,
    MAX_PAYLOAD,
    MAX_REASON,
    ErrorCode,
    FrameError,
    FrameType,
    LocalProtocolError,
    RemoteProtocolError,
    RequestHead,
    ResponseHead,
    StreamReset,
)
from wire.frames import decode_frame, decode_request_head, decode_reset, encode_reason

BAD_NAMES = ["", "a b", "a:b", "x\r", "x\n", "x\0", "é", "(x)", "a\tb", "a/b"]
BAD_VALUES = ["a\r\nb", "a\nb", "a\rb", "a\0b", "\u0100", "😀"]
GOOD_VALUES = ["", " padded ", "é latin-1", "a\tb", 'quoted "x"']


# -- frame size --------------------------------------------------------------------------


def test_largest_payload_is_accepted_and_one_more_byte_is_not() -> None:
    _relay, agent, sid = open_pair()
    agent.receive(raw(FrameType.DATA, sid, bytes(MAX_PAYLOAD)))
    with pytest.raises(FrameError) as info:
        agent.receive(raw(FrameType.DATA, sid, bytes(MAX_PAYLOAD + 1)))
    assert info.value.code is ErrorCode.FRAME_ERROR


# -- heads ---------------------------------------------------------------------------------


def big_head(size: int) -> RequestHead:
    return RequestHead("GET", "/", (("x-big", "a" * size),))


def test_request_head_over_the_size_limit_is_refused_with_limit_exceeded() -> None:
    relay, _ = pair()
    overhead = len(b'{"method":"GET","target":"/","headers":[["x-big",""]]}')
    relay.open_stream(big_head(MAX_HEAD_SIZE - overhead), end_stream=True)  # fits exactly
    [message] = relay.data_to_send()
    assert len(message) == 8 + MAX_HEAD_SIZE
    with pytest.raises(LocalProtocolError) as info:
        relay.open_stream(big_head(MAX_HEAD_SIZE - overhead + 1))
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    assert relay.open_stream(GET) == 3  # the refused head used up no stream id


def test_response_head_over_the_size_limit() -> None:
    _, agent, sid = open_pair()
    with pytest.raises(LocalProtocolError) as info:
        agent.send_response(sid, ResponseHead(200, (("x", "a" * MAX_HEAD_SIZE),)))
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    assert agent.data_to_send() == []
    agent.send_response(sid, OK)  # the stream is still usable


def test_header_count_limit_both_ways() -> None:
    relay, agent = pair()
    most = RequestHead("GET", "/", (("x", "y"),) * MAX_HEADERS)
    relay.open_stream(most, end_stream=True)
    assert pump(relay, agent)[0].head == most  # type: ignore[union-attr]
    too_many = RequestHead("GET", "/", (("x", "y"),) * (MAX_HEADERS + 1))
    with pytest.raises(LocalProtocolError) as info:
        relay.open_stream(too_many)
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    payload = json.dumps({"method": "GET", "target": "/", "headers": [["x", "y"]] * 257})
    with pytest.raises(FrameError):
        agent.receive(raw(FrameType.OPEN, 3, payload.encode()))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_header_names(name: str) -> None:
    relay, agent, sid = open_pair()
    with pytest.raises(LocalProtocolError) as info:
        relay.open_stream(RequestHead("GET", "/", ((name, "v"),)))
    assert info.value.code is ErrorCode.FRAME_ERROR
    with pytest.raises(LocalProtocolError):
        agent.send_response(sid, ResponseHead(200, ((name, "v"),)))
    payload = json.dumps({"status": 200, "headers": [[name, "v"]]}).encode()
    with pytest.raises(FrameError):
        relay.receive(raw(FrameType.RESPONSE, sid, payload))


@pytest.mark.parametrize("value", BAD_VALUES)
def test_invalid_header_values(value: str) -> None:
    relay, agent, sid = open_pair()
    with pytest.raises(LocalProtocolError) as info:
        relay.open_stream(RequestHead("GET", "/", (("x", value),)))
    assert info.value.code is ErrorCode.FRAME_ERROR
    with pytest.raises(LocalProtocolError):
        agent.send_response(sid, ResponseHead(200, (("x", value),)))
    payload = json.dumps({"method": "GET", "target": "/", "headers": [["x", value]]}).encode()
    with pytest.raises(FrameError):
        agent.receive(raw(FrameType.OPEN, 3, payload))


@pytest.mark.parametrize("value", GOOD_VALUES)
def test_valid_header_values_pass_through_unchanged(value: str) -> None:
    relay, agent = pair()
    head = RequestHead("GET", "/", (("x", value), ("x", value)))
    relay.open_stream(head, end_stream=True)
    assert pump(relay, agent)[0].head == head  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["", "G T", "GET\r\n", "é", "(GET)"])
def test_invalid_methods(method: str) -> None:
    relay, _ = pair()
    with pytest.raises(LocalProtocolError):
        relay.open_stream(RequestHead(method, "/"))


@pytest.mark.parametrize("target", ["", "x", "*", "http://a/", "/a b", "/a\r\n", "/\0", "/\u0100"])
def test_invalid_targets(target: str) -> None:
    relay, agent = pair()
    with pytest.raises(LocalProtocolError):
        relay.open_stream(RequestHead("GET", target))
    payload = json.dumps({"method": "GET", "target": target}).encode()
    with pytest.raises(FrameError):
        agent.receive(raw(FrameType.OPEN, 1, payload))


def test_raw_targets_are_not_requoted() -> None:
    relay, agent = pair()
    head = RequestHead("GET", "/a/%2e%2E/b?q=%20&x=é#frag")
    relay.open_stream(head, end_stream=True)
    assert pump(relay, agent)[0].head == head  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [199, 600, 100, "200", 200.0, True, None])
def test_invalid_status(status: object) -> None:
    relay, agent, sid = open_pair()
    with pytest.raises(LocalProtocolError):
        agent.send_response(sid, ResponseHead(status, ()))  # type: ignore[arg-type]
    payload = json.dumps({"status": status}).encode()
    with pytest.raises(FrameError):
        relay.receive(raw(FrameType.RESPONSE, sid, payload))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"[]",
        b"null",
        b'"GET"',
        b"{",
        b'{"method": "GET", "target": "/"',
        b"\xff\xfe{}",
        '{"method":"GET","target":"/"}'.encode("utf-16"),
        b"[" * 100_000,  # too large, and too deep
        b"[" * 10_000 + b"]" * 10_000,
        b'{"method":"GET","target":"/","headers":{}}',
        b'{"method":"GET","target":"/","headers":[["a"]]}',
        b'{"method":"GET","target":"/","headers":[["a","b","c"]]}',
        b'{"method":"GET","target":"/","headers":[["a",1]]}',
        b'{"method":"GET","target":"/","headers":"a: b"}',
        b'{"method":"GET","target":"/","headers":[{"a":"b"}]}',
        b'{"method":"GET","target":"/","content-length":' + b"9" * 5000 + b"}",
    ],
)
def test_malformed_request_heads(payload: bytes) -> None:
    _, agent = pair()
    with pytest.raises(FrameError) as info:
        agent.receive(raw(FrameType.OPEN, 1, payload))
    assert info.value.code is ErrorCode.FRAME_ERROR


def test_unknown_head_fields_are_ignored() -> None:
    _, agent = pair()
    payload = b'{"method":"GET","target":"/","x-future":[1,2],"headers":[]}'
    [event] = agent.receive(raw(FrameType.OPEN, 1, payload, 1))
    assert event.head == RequestHead("GET", "/")  # type: ignore[union-attr]


# -- stream limit ---------------------------------------------------------------------------


def test_stream_limit_on_both_sides() -> None:
    relay, agent = pair(max_streams=2)
    first, second = relay.open_stream(GET), relay.open_stream(GET)
    assert not relay.can_open()
    with pytest.raises(LocalProtocolError):
        relay.open_stream(GET)
    pump(relay, agent)
    with pytest.raises(RemoteProtocolError):  # a relay that ignores its own limit
        agent.receive(raw(FrameType.OPEN, second + 2, b'{"method":"GET","target":"/"}'))
    relay.send_reset(first, ErrorCode.CANCEL)
    assert relay.can_open()
    third = relay.open_stream(POST)
    assert pump(relay, agent)[0] == StreamReset(first, ErrorCode.CANCEL, "")
    assert agent.is_open(third)


# -- reasons -----------------------------------------------------------------------------


def test_reason_is_cut_at_the_limit_on_a_character_boundary() -> None:
    payload = encode_reason(ErrorCode.CANCEL, "é" * MAX_REASON)
    assert len(payload) == 4 + MAX_REASON
    assert decode_reset(payload) == (ErrorCode.CANCEL, "é" * (MAX_REASON // 2))
    odd = encode_reason(ErrorCode.CANCEL, "x" + "é" * MAX_REASON)
    assert len(odd) == 4 + MAX_REASON - 1  # the split "é" is dropped, not mangled
    assert decode_reset(odd)[1] == "x" + "é" * (MAX_REASON // 2 - 1)


def test_reset_reason_over_the_limit_is_a_frame_error() -> None:
    relay, agent, sid = open_pair()
    agent.receive(raw(FrameType.RESET, sid, u32(6) + b"x" * MAX_REASON))
    with pytest.raises(FrameError):
        relay.receive(raw(FrameType.RESET, sid, u32(6) + b"x" * (MAX_REASON + 1)))


def test_send_reset_cuts_a_long_reason() -> None:
    relay, _, sid = open_pair()
    relay.send_reset(sid, ErrorCode.CANCEL, "x" * 5000)
    [message] = relay.data_to_send()
    assert decode_reset(decode_frame(message).payload) == (ErrorCode.CANCEL, "x" * MAX_REASON)


@pytest.mark.parametrize("payload", [b"", b"\0\0\0"])
def test_reset_without_a_code(payload: bytes) -> None:
    _, agent, sid = open_pair()
    with pytest.raises(FrameError):
        agent.receive(raw(FrameType.RESET, sid, payload))


def test_payload_decoders_check_the_head_limit_themselves() -> None:
    with pytest.raises(FrameError, match="over"):
        decode_request_head(b" " * (MAX_HEAD_SIZE + 1))
