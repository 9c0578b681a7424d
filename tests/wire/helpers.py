"""Shared helpers for the wire tests: an established relay/agent pair and raw frames.

No event loop and no I/O anywhere: a "network" is a list of messages moved by hand.
"""

from __future__ import annotations

import os
import struct

from hypothesis import HealthCheck, settings

from wire import (
    Connection,
    Event,
    Flag,
    FrameType,
    Hello,
    Role,
    StreamKind,
    Welcome,
)

# Hypothesis budgets. "ci" is the default and keeps tests/wire well under 30 s on a small
# shared machine; WIRE_HYPOTHESIS=long runs the same properties for a long fuzzing session.
settings.register_profile(
    "wire-ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "wire-long", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck)
)
PROFILE = os.environ.get("WIRE_HYPOTHESIS", "ci")
WIRE = settings.get_profile(f"wire-{PROFILE}")
# Each stateful example runs up to 40 steps, so it gets fewer examples.
STATEFUL = settings(WIRE, max_examples=60 if PROFILE == "ci" else 2_000, stateful_step_count=40)

NAME = "demo"
WELCOME = Welcome(NAME, ("https://relay.example/a/demo/",), 8, 1 << 20)
HTTP = StreamKind.HTTP
#: An HTTP stream's first bytes as the relay sends them: the head it rewrote, and body.
GET = b"GET / HTTP/1.1\r\nhost: relay.example\r\n\r\n"
POST = b"POST /upload HTTP/1.1\r\nhost: relay.example\r\ncontent-length: 5\r\n\r\n"
#: The agent's response bytes, head and all, untouched.
OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n"

_HEADER = struct.Struct("!BBHI")


def raw(ftype: int, stream_id: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """A message built by hand, bypassing every check of the encoder."""
    return _HEADER.pack(ftype, flags, 0, stream_id) + payload


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


def open_frame(stream_id: int, data: bytes = b"", flags: int = 0, kind: int = HTTP) -> bytes:
    """An OPEN message: the kind byte, then the stream's first bytes."""
    return raw(FrameType.OPEN, stream_id, bytes((kind,)) + data, flags)


def pump(src: Connection, dst: Connection) -> list[Event]:
    """Deliver everything ``src`` queued to ``dst``; return the events it produced."""
    events: list[Event] = []
    for message in src.data_to_send():
        events += dst.receive(message)
    return events


def settle(relay: Connection, agent: Connection) -> list[Event]:
    """Pump both ways until neither side has anything queued; return all events."""
    events: list[Event] = []
    while relay.pending_output or agent.pending_output:
        events += pump(relay, agent) + pump(agent, relay)
    return events


def pair(max_streams: int = WELCOME.max_streams) -> tuple[Connection, Connection]:
    """A relay and an agent after HELLO and WELCOME."""
    relay, agent = Connection(Role.RELAY), Connection(Role.AGENT)
    agent.send_hello(Hello(NAME))
    pump(agent, relay)
    relay.send_welcome(Welcome(NAME, WELCOME.urls, max_streams, WELCOME.max_request_body))
    pump(relay, agent)
    return relay, agent


def open_pair(
    request_fin: bool = False, response: bool = False
) -> tuple[Connection, Connection, int]:
    """An established pair with one HTTP stream open (optionally answered, without FIN).

    The OPEN carries no bytes, so both windows start full.
    """
    relay, agent = pair()
    sid = relay.open_stream(HTTP, end_stream=request_fin)
    pump(relay, agent)
    if response:
        agent.send_data(sid, OK)
        pump(agent, relay)
    return relay, agent, sid


DATA = int(FrameType.DATA)
FIN = int(Flag.FIN)
CLOSE = int(Flag.CLOSE)
