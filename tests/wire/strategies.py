"""Hypothesis strategies for valid frames and payloads of every kind."""

from __future__ import annotations

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
    StreamKind,
    Welcome,
)
from wire.codes import ALLOWED_FLAGS
from wire.frames import Frame

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
    st.sampled_from(StreamKind),
)
WELCOMES = st.builds(
    Welcome,
    st.text(max_size=63),
    st.lists(st.text(max_size=80), max_size=3).map(tuple),
    st.integers(1, 2**31),
    st.integers(0, 2**40),
    st.none() | st.text(max_size=200),
    st.sampled_from(StreamKind),
)
CODES = st.sampled_from(ErrorCode)
KINDS = st.sampled_from(StreamKind)
FIRST_BYTES = st.binary(max_size=200)  # an OPEN's first bytes: any, kept short
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
    allowed = ALLOWED_FLAGS.get(ftype, Flag.NONE)
    flags = draw(st.sampled_from([Flag.NONE, allowed & Flag.FIN, allowed]))
    size = draw(st.sampled_from([0, 1, 100, MAX_PAYLOAD]) | st.integers(0, MAX_PAYLOAD))
    payload = draw(st.binary(min_size=min(size, 64), max_size=min(size, 64)))
    return Frame(ftype, sid, payload * (size // max(len(payload), 1)) if payload else b"", flags)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
