"""Reading the server name (SNI) from a TLS ClientHello, without decrypting anything.

The relay routes a TLS passthrough tunnel by the name the caller asks for in its
ClientHello (RFC 8446 section 4.1.2, RFC 6066 section 3), read from bytes it peeked at
and never consumed. The parser trusts nothing: every length is checked against what is
there, and against :data:`MAX_CLIENT_HELLO`; anything malformed, truncated past the
limit or without a host name reads as "no name" (the relay then answers the connection
with its own TLS, which fails the handshake of a client that was not speaking TLS).

Only a ClientHello in one TLS record is read (up to 16 KiB, the record limit, which
holds every browser's and library's ClientHello including post-quantum key shares); a
ClientHello split over several records reads as "no name".
"""

from __future__ import annotations

from typing import Final

#: TLS record header: type (22 = handshake), version (3, x), length (u16).
_RECORD_HEADER: Final = 5

#: Largest TLS plaintext record (RFC 8446 section 5.1).
MAX_RECORD: Final = 16 * 1024

#: Most bytes the relay reads ahead to find a name: one whole record.
MAX_CLIENT_HELLO: Final = _RECORD_HEADER + MAX_RECORD

#: Longest DNS name (RFC 1035).
MAX_NAME: Final = 253

_HANDSHAKE: Final = 22
_CLIENT_HELLO: Final = 1
_EXT_SERVER_NAME: Final = 0
_HOST_NAME: Final = 0


class _Malformed(Exception):
    pass


class _Reader:
    """Bounds-checked big-endian reads over one buffer."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _Malformed
        piece = self.data[self.pos : self.pos + n]
        self.pos += n
        return piece

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, size: int) -> bytes:
        """A length-prefixed field (``size``-byte length)."""
        return self.take(self.uint(size))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def read_sni(data: bytes) -> tuple[bool, str | None]:
    """``(complete, name)`` for the first bytes a caller sent.

    ``complete`` is False while more bytes could still change the answer (fewer than the
    ClientHello's record): wait for more, up to :data:`MAX_CLIENT_HELLO` bytes. ``name``
    is the lowercase host name asked for, without a trailing dot; None when the bytes
    are not a TLS ClientHello, are malformed, or carry no host name.
    """
    if len(data) < _RECORD_HEADER:
        maybe_tls = data[:1] in (b"", bytes((_HANDSHAKE,))) and data[1:2] in (b"", b"\x03")
        return (not maybe_tls, None)
    if data[0] != _HANDSHAKE or data[1] != 3:
        return (True, None)
    length = int.from_bytes(data[3:5], "big")
    if length > MAX_RECORD:
        return (True, None)
    if len(data) < _RECORD_HEADER + length:
        return (False, None)
    try:
        return (True, _client_hello(data[_RECORD_HEADER : _RECORD_HEADER + length]))
    except _Malformed:
        return (True, None)


def _client_hello(record: bytes) -> str | None:
    reader = _Reader(record)
    if reader.uint(1) != _CLIENT_HELLO:
        return None
    hello = _Reader(reader.take(reader.uint(3)))  # longer than the record: _Malformed
    hello.take(2 + 32)  # legacy_version, random
    if len(hello.vector(1)) > 32:  # legacy_session_id
        return None
    hello.vector(2)  # cipher_suites
    hello.vector(1)  # legacy_compression_methods
    if not hello.left:
        return None  # no extensions
    extensions = _Reader(hello.vector(2))
    while extensions.left:
        kind = extensions.uint(2)
        body = extensions.vector(2)
        if kind == _EXT_SERVER_NAME:
            return _server_name(body)
    return None


def _server_name(body: bytes) -> str | None:
    names = _Reader(_Reader(body).vector(2))
    while names.left:
        kind = names.uint(1)
        name = names.vector(2)
        if kind == _HOST_NAME:
            return _host(name)
    return None


def _host(raw: bytes) -> str | None:
    if not raw or len(raw) > MAX_NAME + 1 or not raw.isascii():
        return None
    name = raw.decode("ascii").lower().removesuffix(".")
    if not name or any(c.isspace() or not c.isprintable() for c in name):
        return None
    return name
