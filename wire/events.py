"""Events that :meth:`wire.Connection.receive` returns. Frozen, slotted; don't subclass."""

from __future__ import annotations

import dataclasses

from wire.codes import ErrorCode, StreamKind
from wire.frames import Hello, Welcome


@dataclasses.dataclass(frozen=True, slots=True)
class HelloReceived:
    """Relay side: the agent introduced itself. Answer with ``send_welcome`` or close.

    If the connection is already ``established``, this is a HELLO sent again to replace
    ``hello.caller_auth`` (the name was checked to be unchanged): apply it, don't answer.
    """

    hello: Hello


@dataclasses.dataclass(frozen=True, slots=True)
class WelcomeReceived:
    """Agent side: the session is up; ``welcome.urls`` are the public URLs."""

    welcome: Welcome


@dataclasses.dataclass(frozen=True, slots=True)
class StreamOpened:
    """Agent side: the relay opened ``stream_id``. ``data`` is the stream's first bytes
    (flow-controlled like DATA: ``consumed`` them too); ``end_stream``: they are all."""

    stream_id: int
    kind: StreamKind
    data: bytes
    end_stream: bool
    tunnel: int = 0  # shared session: which tunnel (0: its own name; i: extra i)


@dataclasses.dataclass(frozen=True, slots=True)
class DataReceived:
    """Body bytes. The receiver must call ``consumed(stream_id, len(data))`` once the
    bytes have left its hands (delivered or dropped); that is what returns credit."""

    stream_id: int
    data: bytes
    end_stream: bool
    close: bool = False  # with end_stream, from the agent: close the public connection


@dataclasses.dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer aborted ``stream_id``; it is closed on both sides."""

    stream_id: int
    code: ErrorCode
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class WindowUpdated:
    """Send credit grew on ``stream_id`` (0: the session). Wake senders waiting for it."""

    stream_id: int
    increment: int


@dataclasses.dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer will take no new streams; streams up to ``last_stream_id`` may finish."""

    last_stream_id: int
    code: ErrorCode
    reason: str


Event = (
    HelloReceived
    | WelcomeReceived
    | StreamOpened
    | DataReceived
    | StreamReset
    | WindowUpdated
    | GoAwayReceived
)
