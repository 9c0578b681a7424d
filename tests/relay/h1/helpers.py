"""Driving a RequestReader with byte literals: no event loop, no sockets."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from relay.h1 import Body, End, Event, Head, RequestReader

# Hypothesis budgets: "ci" keeps tests/relay/h1 to seconds; H1_HYPOTHESIS=long fuzzes.
settings.register_profile(
    "h1-ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "h1-long", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck)
)
H1 = settings.get_profile(f"h1-{os.environ.get('H1_HYPOTHESIS', 'ci')}")

GET = b"GET /a/demo/ HTTP/1.1\r\nHost: relay.test\r\n\r\n"


def feed(*chunks: bytes, reader: RequestReader | None = None) -> list[Event]:
    reader = reader or RequestReader()
    events: list[Event] = []
    for chunk in chunks:
        events += reader.feed(chunk)
    return events


def bytewise(data: bytes, reader: RequestReader | None = None) -> list[Event]:
    return feed(*(data[i : i + 1] for i in range(len(data))), reader=reader)


def merged(events: list[Event]) -> list[Event]:
    """Events with consecutive Body merged: what every way of splitting the input yields."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, Body) and out and isinstance(out[-1], Body):
            last = out[-1]
            out[-1] = Body(last.data + event.data, last.decoded + event.decoded)
        elif not (isinstance(event, Body) and not event.data):
            out.append(event)
    return out


def heads(events: list[Event]) -> list[Head]:
    return [e for e in events if isinstance(e, Head)]


def body_of(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Body))


def ends(events: list[Event]) -> int:
    return sum(isinstance(e, End) for e in events)


def head_of(data: bytes) -> Head:
    (head,) = heads(feed(data))
    return head
