"""Errors raised by the sans-I/O tunnel protocol.

The tree::

    WireError                      base of everything ``wire`` raises
    └── ProtocolError              an illegal move, with the ErrorCode that names it
        ├── LocalProtocolError     *we* asked for something illegal (a bug on our side)
        │   └── StreamClosedError  we sent on a stream that is closed (e.g. the peer
        │                          reset it): a race, not a bug; the session is fine
        └── RemoteProtocolError    the *peer* sent something illegal: close the session
            ├── FrameError         a message that does not decode as a frame
            └── FlowControlError   the peer sent DATA beyond the credit we granted

A :class:`RemoteProtocolError` ends the session: the I/O layer sends GOAWAY with the
error's :attr:`~ProtocolError.code` and closes the WebSocket. A
:class:`LocalProtocolError` leaves the session as it was (nothing was queued, no state
changed): it is a bug on our side, except in two documented cases the caller handles
per stream: :class:`StreamClosedError`, and a HELLO or WELCOME that fails validation
(code LIMIT_EXCEEDED for a size limit, FRAME_ERROR for a malformed field).

Internally the state machine raises :class:`LocalProtocolError`;
:meth:`wire.Connection.receive` re-raises those as :class:`RemoteProtocolError`, because
a bad move found while processing received bytes is the peer's fault (the h11 strategy).
"""

from __future__ import annotations

from wire.codes import ErrorCode


class WireError(Exception):
    """Base class of every error raised by the ``wire`` package."""


class ProtocolError(WireError):
    """An illegal move; :attr:`code` is the error code that names it on the wire."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class LocalProtocolError(ProtocolError):
    """This side tried an illegal move (sending on a closed stream, beyond credit...)."""


class StreamClosedError(LocalProtocolError):
    """``send_data`` on a stream that is no longer open.

    The peer may reset a stream at any time, so a sender that awaited between checking
    :meth:`wire.Connection.is_open` and sending can hit this. Nothing was queued and the
    session stays usable: drop the stream's remaining work.
    """

    def __init__(self, stream_id: int) -> None:
        super().__init__(f"stream {stream_id} is closed")
        self.stream_id = stream_id


class RemoteProtocolError(ProtocolError):
    """The peer sent something illegal: send GOAWAY with :attr:`code` and close."""


class FrameError(RemoteProtocolError):
    """Bytes that are not a valid frame (short header, unknown type, bad payload)."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.FRAME_ERROR) -> None:
        super().__init__(message, code)


class FlowControlError(RemoteProtocolError):
    """The peer sent more DATA than the window we granted."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.FLOW_CONTROL_ERROR)
