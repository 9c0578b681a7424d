"""Hypothesis strategies for valid frames and payloads of every kind."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from wire import (
    MAX_AGENT_INFO,
    MAX_CALLER_AUTH,
    MAX_PAYLOAD,
    CallerCredential,
    ErrorCode,
    Flag,
    FrameType,
    Hello,
    RequestHead,
    ResponseHead,
    Welcome,
)
from wire.codes import ALLOWED_FLAGS
from wire.frames import Frame

TOKEN = st.text(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1, max_size=20)
LATIN1 = "".join(chr(c) for c in range(256) if chr(c) not in "\r\n\0")
VALUE = st.text(LATIN1, max_size=40)
HEADERS = st.lists(st.tuples(TOKEN, VALUE), max_size=12).map(tuple)
TARGET = st.text("".join(chr(c) for c in [*range(0x21, 0x7F), *range(0x80, 0x100)]), max_size=60)

REQUEST_HEADS = st.builds(RequestHead, TOKEN, TARGET.map(lambda t: "/" + t), HEADERS)
RESPONSE_HEADS = st.builds(ResponseHead, st.integers(200, 599), HEADERS)
CREDENTIALS = st.builds(
    CallerCredential,
    st.sampled_from(["bearer", "basic"]),
    st.text("0123456789abcdef", min_size=64, max_size=64),
)
HELLOS = st.builds(
    Hello,
    st.none() | st.text(max_size=63),
    st.lists(CREDENTIALS, max_size=MAX_CALLER_AUTH).map(tuple),
    st.text(max_size=MAX_AGENT_INFO),
)
WELCOMES = st.builds(
    Welcome,
    st.text(max_size=63),
    st.lists(st.text(max_size=80), max_size=3).map(tuple),
    st.integers(1, 2**31),
    st.integers(0, 2**40),
)
CODES = st.sampled_from(ErrorCode)
REASONS = st.text(max_size=256)  # at most 1024 bytes of UTF-8: never cut
STREAM_IDS = st.integers(1, 2**32 - 1)
INCREMENTS = st.integers(1, 2**31 - 1)

_SESSION = {FrameType.HELLO, FrameType.WELCOME, FrameType.GOAWAY}


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    """Any frame the decoder accepts (payload not interpreted)."""
    ftype = draw(st.sampled_from(FrameType))
    if ftype in _SESSION:
        sid = 0
    elif ftype is FrameType.WINDOW:
        sid = draw(st.integers(0, 2**32 - 1))
    else:
        sid = draw(STREAM_IDS)
    flags = draw(st.sampled_from([Flag.NONE, ALLOWED_FLAGS.get(ftype, Flag.NONE)]))
    size = draw(st.sampled_from([0, 1, 100, MAX_PAYLOAD]) | st.integers(0, MAX_PAYLOAD))
    payload = draw(st.binary(min_size=min(size, 64), max_size=min(size, 64)))
    return Frame(ftype, sid, payload * (size // max(len(payload), 1)) if payload else b"", flags)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
