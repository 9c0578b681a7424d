"""The errors of :mod:`relay.h1`: what a public caller's bytes did wrong.

The tree::

    H1Error                  (relay.errors.PublicError) base of everything relay.h1 raises
    ├── BadRequest           400 bad_request: the bytes are not a request the relay forwards
    │   └── ClosedMidRequest 400 bad_request: the caller closed inside a message
    └── HeadTooLarge         431 headers_too_large: a head, or a trailer section, over its limit

They are :class:`relay.errors.PublicError` subclasses, so :func:`relay.errors.http_error`
answers them like any other refusal. A :class:`~relay.h1.RequestReader` that raised one
is dead: every later call raises a copy of the same error, so a caller that missed the
first raise cannot go on parsing a desynchronised stream.
"""

from __future__ import annotations

from relay.errors import PublicError


class H1Error(PublicError):
    """Base class of every error raised by :mod:`relay.h1`."""


class BadRequest(H1Error):
    """400: malformed or refused request bytes. ``message`` says which rule they broke."""

    code, status, default_message = "bad_request", 400, "the request is malformed"


class ClosedMidRequest(BadRequest):
    """The caller closed the connection inside a request (no one is left to answer)."""

    default_message = "the connection closed in the middle of a request"


class HeadTooLarge(H1Error):
    """431: a request head or trailer section over its byte limit, or too many lines."""

    code, status, default_message = "headers_too_large", 431, "the request headers are too large"
