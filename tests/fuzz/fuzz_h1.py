#!/usr/bin/env python3
"""Coverage-guided fuzzing of the relay's public request reader (``relay.h1``).

Run it with ``scripts/fuzz h1 [SECONDS]`` (atheris). The first byte of an input picks
the limits (the defaults, or small ones so the limits are reached quickly) and a seed
for where the rest is cut into reads; the rest is what a public caller sends.

What counts as a crash:

* anything but :class:`relay.h1.H1Error` escaping ``feed`` or ``eof``;
* events that do not give back the caller's bytes: the heads' ``raw`` and the bodies'
  ``data``, in order, must be a prefix of the input (one skipped empty line aside);
* a ``Body.decoded`` larger than its data, or outside a message;
* a different outcome for the same bytes fed whole and cut into reads;
* a dead reader that accepts more bytes;
* a head that :func:`relay.h1.rewrite_head` turns into something the reader refuses,
  or whose target or framing change on the way.

``one_input`` needs no atheris, so ``tests/fuzz/test_fuzz_h1.py`` replays the committed
corpus and every saved crash in CI.
"""

from __future__ import annotations

import random
import sys

if __name__ == "__main__":  # instrument relay.h1 before anything imports it
    import atheris

    with atheris.instrument_imports(include=["relay.h1"]):
        import relay.h1  # noqa: F401

from relay.h1 import Body, End, Event, Forwarding, H1Error, Head, RequestReader, rewrite_head

_LIMITS = ((16384, 100, 256, 8192), (64, 4, 8, 32))


def _reader(small: bool) -> RequestReader:
    return RequestReader(*_LIMITS[small])


def _feed(reader: RequestReader, parts: list[bytes]) -> tuple[list[Event], str | None]:
    events: list[Event] = []
    try:
        for part in parts:
            events += reader.feed(part)
        events += reader.eof()
    except H1Error as exc:
        return events, type(exc).__name__
    return events, None


def _merged(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        if isinstance(e, Body) and out and isinstance(out[-1], Body):
            out[-1] = Body(out[-1].data + e.data, out[-1].decoded + e.decoded)
        elif not (isinstance(e, Body) and not e.data):
            out.append(e)
    return out


def _check_events(events: list[Event], data: bytes) -> None:
    rebuilt = bytearray()
    inside = False
    for e in events:
        if isinstance(e, Head):
            assert not inside, "a Head inside a message"
            inside = True
            rebuilt += e.raw
            _check_rewrite(e)
        elif isinstance(e, Body):
            assert inside, "a Body outside a message"
            assert 0 <= e.decoded <= len(e.data), "decoded over the data"
            rebuilt += e.data
        else:
            assert isinstance(e, End) and inside, "an End outside a message"
            inside = False
    # One empty line may precede each request (ignored, so not in any event).
    stripped = data.replace(b"\r\n", b"")
    assert data.startswith(bytes(rebuilt)) or stripped.startswith(
        bytes(rebuilt).replace(b"\r\n", b"")
    ), "events do not give back the input"


def _check_rewrite(head: Head) -> None:
    out = rewrite_head(
        head,
        target=b"/t",
        forwarding=Forwarding("2001:db8::1", "https", 443),
        host=head.host,
        prefix=b"/a/x",
        trusted=len(head.headers) % 2 == 1,
    )
    events = RequestReader(max_head=1 << 20, max_headers=1000).feed(out)
    again = events[0]
    assert isinstance(again, Head), "the rewritten head is not a head"
    assert (again.target, again.framing, again.length) == (b"/t", head.framing, head.length)


def one_input(data: bytes) -> None:
    if not data:
        return
    small = bool(data[0] & 1)
    rng = random.Random(data[0] >> 1)
    body = data[1:]
    cuts = sorted(rng.randrange(len(body) + 1) for _ in range(rng.randrange(6)))
    parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]

    whole, whole_error = _feed(_reader(small), [body])
    split_reader = _reader(small)
    split, split_error = _feed(split_reader, parts)
    # Which error a caller gets may depend on the reads (a bad byte seen before the head
    # limit is passed, or after), that it gets one may not.
    assert (whole_error is None) == (split_error is None), f"{whole_error} / {split_error}"
    if whole_error is None:
        assert _merged(whole) == _merged(split), "the split changed the events"
    _check_events(split, body)
    if split_error is not None:
        try:
            split_reader.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        except H1Error:
            pass
        else:
            raise AssertionError("a dead reader accepted more bytes")


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
