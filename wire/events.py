"""Events that :meth:`wire.Connection.receive` returns. Frozen, slotted; don't subclass."""

from __future__ import annotations

import dataclasses

from wire.codes import ErrorCode
from wire.frames import Hello, RequestHead, ResponseHead, Welcome


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
class RequestReceived:
    """Agent side: the relay opened ``stream_id`` for a public request."""

    stream_id: int
    head: RequestHead
    end_stream: bool


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseReceived:
    """Relay side: the agent's response head for ``stream_id``."""

    stream_id: int
    head: ResponseHead
    end_stream: bool


@dataclasses.dataclass(frozen=True, slots=True)
class DataReceived:
    """Body bytes. The receiver must call ``consumed(stream_id, len(data))`` once the
    bytes have left its hands (delivered or dropped); that is what returns credit."""

    stream_id: int
    data: bytes
    end_stream: bool


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
    | RequestReceived
    | ResponseReceived
    | DataReceived
    | StreamReset
    | WindowUpdated
    | GoAwayReceived
)
