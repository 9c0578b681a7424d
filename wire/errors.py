"""Errors raised by the sans-I/O tunnel protocol.

The tree::

    WireError                      base of everything ``wire`` raises
    └── ProtocolError              the session broke the protocol; it must be closed
        ├── LocalProtocolError     *we* asked for something illegal (a bug on our side)
        └── RemoteProtocolError    the *peer* sent something illegal
            ├── FrameError         a message that does not decode as a frame
            └── FlowControlError   the peer sent DATA beyond the credit we granted

Every ``ProtocolError`` carries an :class:`wire.codes.ErrorCode` that the I/O layer
puts in the GOAWAY it sends before closing the WebSocket. Internally the state machine
raises :class:`LocalProtocolError`; :meth:`wire.Connection.receive` re-raises those as
:class:`RemoteProtocolError`, because a bad move found while processing received bytes is
the peer's fault (the h11 strategy).
"""

from __future__ import annotations

from wire.codes import ErrorCode


class WireError(Exception):
    """Base class of every error raised by the ``wire`` package."""


class ProtocolError(WireError):
    """The session is no longer usable; send GOAWAY with :attr:`code` and close."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class LocalProtocolError(ProtocolError):
    """This side tried an illegal move (sending on a closed stream, beyond credit...)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something illegal."""


class FrameError(RemoteProtocolError):
    """Bytes that are not a valid frame (short header, unknown type, bad payload)."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.FRAME_ERROR) -> None:
        super().__init__(message, code)


class FlowControlError(RemoteProtocolError):
    """The peer sent more DATA than the window we granted."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.FLOW_CONTROL_ERROR)
