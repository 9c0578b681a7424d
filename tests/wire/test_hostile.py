"""A Connection fed arbitrary messages raises RemoteProtocolError and nothing else.

The messages are mostly well-formed frames with fuzzed fields and payloads (random bytes
rarely get past the header), fed to a fresh or an established relay or agent.
"""

from __future__ import annotations

import json
import struct

from hypothesis import given
from hypothesis import strategies as st

from tests.wire import strategies as s
from tests.wire.helpers import GET, WIRE, pair
from wire import (
    MAX_PAYLOAD,
    Connection,
    DataReceived,
    FrameType,
    RemoteProtocolError,
    Role,
    StreamKind,
    StreamOpened,
)
from wire.frames import (
    encode_goaway,
    encode_hello,
    encode_open,
    encode_reason,
    encode_welcome,
)

_HEADER = struct.Struct("!BBHI")

PAYLOADS = {
    FrameType.HELLO: s.HELLOS.map(encode_hello),
    FrameType.WELCOME: s.WELCOMES.map(encode_welcome),
    FrameType.OPEN: st.builds(encode_open, s.KINDS, s.FIRST_BYTES)
    | st.sampled_from([b"", b"\x00", b"\x04GET"]),
    FrameType.DATA: st.sampled_from([0, 1, 1000, MAX_PAYLOAD]).map(bytes),
    FrameType.RESET: st.builds(encode_reason, s.CODES, s.REASONS),
    FrameType.WINDOW: st.sampled_from([0, 1, 2**16, 2**31 - 1, 2**31]).map(
        struct.Struct("!I").pack
    ),
    FrameType.GOAWAY: st.builds(encode_goaway, st.integers(0, 9), s.CODES, s.REASONS),
}


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    ftype = draw(st.sampled_from(FrameType))
    sid = draw(st.sampled_from([0, 1, 2, 3, 5]) | st.integers(0, 2**32 - 1))
    flags = draw(st.sampled_from([0, 0, 1, 2, 3]))
    payload = draw(PAYLOADS[ftype] | st.binary(max_size=40) | s.JSON.map(_json))
    return _HEADER.pack(ftype, flags, 0, sid) + payload


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


ANY_MESSAGE = messages() | st.binary(max_size=30)


def feed(conn: Connection, batch: list[bytes]) -> None:
    for message in batch:
        try:
            events = conn.receive(message)
        except RemoteProtocolError:
            return  # the session is over
        for event in events:
            if isinstance(event, DataReceived | StreamOpened):
                conn.consumed(event.stream_id, len(event.data))
        conn.data_to_send()


@WIRE
@given(st.sampled_from(Role), st.booleans(), st.lists(ANY_MESSAGE, max_size=12))
def test_connection_raises_only_remote_protocol_errors(
    role: Role, established: bool, batch: list[bytes]
) -> None:
    relay, agent = pair() if established else (Connection(Role.RELAY), Connection(Role.AGENT))
    conn = relay if role is Role.RELAY else agent
    if established and role is Role.RELAY:
        conn.open_stream(StreamKind.HTTP, GET)  # so DATA for stream 1 gets past the id check
        conn.data_to_send()
    feed(conn, batch)
