"""What a :class:`~relay.h1.RequestReader` reports: frozen, slotted dataclasses.

A message is ``Head``, zero or more ``Body``, then ``End``. Don't subclass these.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Final

#: Request fields that say where a request came from: set by the relay (and by a trusted
#: front proxy), never believed from a caller, never accepted in a trailer.
FORWARDING_FIELDS: Final = (
    b"forwarded",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-forwarded-port",
    b"x-forwarded-prefix",
    b"x-real-ip",
)


class Framing(enum.Enum):
    """How the body of a request is delimited (RFC 9112 section 6.3)."""

    NONE = "none"  # no Content-Length, no Transfer-Encoding: no body at all
    LENGTH = "length"  # Content-Length: ``Head.length`` bytes
    CHUNKED = "chunked"  # Transfer-Encoding: chunked, up to the last chunk and trailers


@dataclasses.dataclass(frozen=True, slots=True)
class Head:
    """A complete, validated request head.

    ``headers`` are ``(name, value)`` with names lowercased, values without the optional
    whitespace around them (RFC 9110 section 5.5) and otherwise as sent, in order, with
    duplicates. ``raw`` is the head exactly as received, request line to the final CRLF
    CRLF: :func:`~relay.h1.rewrite_head` splices from it. ``length`` is meaningful for
    ``Framing.LENGTH`` only (0 otherwise). ``upgrade`` is the lowercased value of the
    Upgrade header(s) when Connection lists ``upgrade`` (HTTP/1.1 only), else None.
    ``host`` is the Host value (b"" if an HTTP/1.0 request has none). ``connection`` holds
    the lowercased tokens of the Connection header(s).
    """

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    raw: bytes
    framing: Framing
    length: int
    keep_alive: bool
    upgrade: bytes | None
    expect_continue: bool
    host: bytes
    connection: tuple[bytes, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Body:
    """Request body bytes exactly as received, to be forwarded verbatim.

    For a chunked request ``data`` includes the chunk framing and the trailer section;
    ``decoded`` counts only the payload bytes in it (what a body-size limit counts).
    After :meth:`~relay.h1.RequestReader.switch_to_raw` every byte comes as ``Body``
    with ``decoded == len(data)``.
    """

    data: bytes
    decoded: int


@dataclasses.dataclass(frozen=True, slots=True)
class End:
    """The request is complete; what follows belongs to the next request."""


Event = Head | Body | End

#: The one ``End`` the reader emits (they are all equal; this saves an allocation).
END: Final = End()


def _slot_setters() -> tuple[Callable[[Head, object], None], ...]:
    return tuple(getattr(Head, f.name).__set__ for f in dataclasses.fields(Head))


(
    _SET_METHOD,
    _SET_TARGET,
    _SET_VERSION,
    _SET_HEADERS,
    _SET_RAW,
    _SET_FRAMING,
    _SET_LENGTH,
    _SET_KEEP_ALIVE,
    _SET_UPGRADE,
    _SET_EXPECT,
    _SET_HOST,
    _SET_CONNECTION,
) = _slot_setters()
_new = object.__new__


def make_head(
    method: bytes,
    target: bytes,
    version: bytes,
    headers: list[tuple[bytes, bytes]],
    raw: bytes,
    framing: Framing,
    length: int,
    keep_alive: bool,
    upgrade: bytes | None,
    expect_continue: bool,
    host: bytes,
    connection: tuple[bytes, ...],
) -> Head:
    """``Head(...)``, built in about a third of the time (it runs once per request).

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``
    (1.0-2.2 us for these 12 fields on the reference machine); setting the slots through
    their descriptors gives the same object (equal, still frozen) in 0.4-0.7 us.
    """
    head: Head = _new(Head)
    _SET_METHOD(head, method)
    _SET_TARGET(head, target)
    _SET_VERSION(head, version)
    _SET_HEADERS(head, headers)
    _SET_RAW(head, raw)
    _SET_FRAMING(head, framing)
    _SET_LENGTH(head, length)
    _SET_KEEP_ALIVE(head, keep_alive)
    _SET_UPGRADE(head, upgrade)
    _SET_EXPECT(head, expect_continue)
    _SET_HOST(head, host)
    _SET_CONNECTION(head, connection)
    return head
