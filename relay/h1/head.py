"""Parsing one complete request head: the rules a head must pass to be forwarded.

:func:`parse_head` takes the bytes from the request line to the first CRLF CRLF
(:class:`~relay.h1.RequestReader` finds them) and either returns a
:class:`~relay.h1.Head` or raises. It is the hot path of every request, so the checks
are a handful of C-level passes over the whole head rather than a loop per byte or per
line: ``translate`` for the request line's parts, one anchored ``findall`` that matches
only valid header lines (token name, colon, value of allowed bytes, CRLF), ``count`` of
CR and LF against the lines it matched (any other CR or LF, or a line it did not match,
shows as a difference), and one Python loop over the few headers whose meaning the
relay needs. When a check fails, the slower
:func:`_diagnose` says which rule broke (that path is never hot).

The rules (each one refuses with :class:`~relay.h1.BadRequest` unless said otherwise):

* only HTTP/1.0 and HTTP/1.1; the request line is exactly ``method SP target SP
  version``, the method a token;
* the target in origin form (``/...``, no control bytes, no spaces). Absolute form,
  authority form (CONNECT) and asterisk form (``OPTIONS *``) are refused: the relay
  routes by path and has no use for them, and an absolute form's authority would be a
  second, conflicting route;
* every line ends in CRLF: a bare CR or LF anywhere is refused, as are NUL and every
  other control byte except HTAB (RFC 9110 section 5.5 allows a recipient to refuse them;
  no browser sends them);
* a header line is ``token ":" OWS value OWS``: whitespace before the colon, an empty
  name, a line without a colon and obs-fold (a line starting with whitespace) are refused;
* more than ``max_headers`` header lines: :class:`~relay.h1.HeadTooLarge` (431);
* HTTP/1.1 needs exactly one Host, HTTP/1.0 at most one, and its value must be a valid
  ``host[:port]`` (RFC 9112 section 3.2);
* framing: Transfer-Encoding is allowed only as exactly one line whose value is exactly
  ``chunked``, never with Content-Length, never in HTTP/1.0 (RFC 9112 section 6.1);
  Content-Length is 1-19 digits, repeated lines must be identical (``5, 5`` is refused).
"""

from __future__ import annotations

import re
from typing import Final

from relay.h1.errors import BadRequest, HeadTooLarge
from relay.h1.events import Framing, Head, make_head

# Token characters (RFC 9110 section 5.6.2), for translate(None, _TCHAR): a name made of
# them comes out empty.
_TCHAR: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Control bytes a head may never contain (HTAB, CR and LF are checked separately).
_CTL: Final = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_TARGET_BYTES: Final = bytes([*range(0x21, 0x7F), *range(0x80, 0x100)])
_VERSIONS: Final = frozenset({b"HTTP/1.1", b"HTTP/1.0"})

# A header line: token ":" OWS value CRLF, anchored at line starts so that a line that
# does not match costs one failed attempt per byte, never a rescan, and possessive
# quantifiers never backtrack (linear in the head, whatever it holds).
_FIELDS: Final = re.compile(
    rb"(?m)^([!#$%&'*+\-.^_`|~0-9A-Za-z]++):[ \t]*+([\t\x20-\x7e\x80-\xff]*+)\r\n"
)
_DIGITS: Final = re.compile(rb"[0-9]{1,19}")
# host [":" port]: an IP literal, or reg-name characters (RFC 3986 section 3.2.2).
_HOST: Final = re.compile(
    rb"(?:\[[0-9A-Za-z:._~!$&'()*+,;=%-]+\]|[0-9A-Za-z._~!$&'()*+,;=%-]*)(?::[0-9]*)?"
)

_REG_NAME: Final = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-._~!$&'()*+,;=%"

# The headers whose meaning the relay needs; the others are only carried.
_SPECIAL: Final = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect"}
)


def parse_head(head: bytes, max_headers: int) -> Head:
    """The :class:`Head` of ``head`` (request line through the final CRLF CRLF).

    Raises:
        BadRequest: a rule in the module docstring is broken.
        HeadTooLarge: more than ``max_headers`` header lines.
    """
    eol = head.index(b"\r\n")
    method, target, version = _request_line(head[:eol])
    block = head[eol + 2 : -2]
    pairs = _FIELDS.findall(block)
    # Each matched line holds exactly one CR and one LF, as do the request line (its
    # parts admit neither) and the final empty line: any other CR or LF, or a line that
    # did not match (it ends in an LF of its own), makes the counts differ.
    lines = len(pairs) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        if head.count(b"\r\n") - 2 > max_headers:
            raise HeadTooLarge(f"more than {max_headers} header lines")
        raise _diagnose(block)
    if lines - 2 > max_headers:
        raise HeadTooLarge(f"more than {max_headers} header lines")
    headers = [(n.lower(), v) for n, v in pairs]
    if b" \r\n" in block or b"\t\r\n" in block:  # trailing OWS is rare: strip only then
        headers = [(n, v.rstrip(b" \t")) for n, v in headers]
    return _meaning(method, target, version, headers, head)


def _request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[0] or parts[0].translate(None, _TCHAR):
        raise _bad_line(line, "invalid request line")
    method, target, version = parts
    if version not in _VERSIONS:
        if version.startswith(b"HTTP/") and version.translate(None, _TARGET_BYTES) == b"":
            raise BadRequest("unsupported HTTP version (only HTTP/1.0 and HTTP/1.1)")
        raise _bad_line(line, "invalid request line")
    if target[:1] != b"/":
        raise _bad_line(line, "the request target must be in origin form (/path?query)")
    if target.translate(None, _TARGET_BYTES):
        raise _bad_line(line, "invalid request target")
    return method, target, version


def _bad_line(line: bytes, reason: str) -> BadRequest:
    """A bad request line: named after a control byte in it if it has one."""
    if line.translate(None, _CTL + b"\r\n") != line:
        return _diagnose(line)
    return BadRequest(reason)


def _meaning(
    method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]], raw: bytes
) -> Head:
    hosts: list[bytes] = []
    lengths: list[bytes] = []
    codings: list[bytes] = []
    connection: list[bytes] = []
    upgrades: list[bytes] = []
    expect = False
    for name, value in [h for h in headers if h[0] in _SPECIAL]:
        if name == b"host":
            hosts.append(value)
        elif name == b"connection":
            connection += value.lower().split(b",")
        elif name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            codings.append(value)
        elif name == b"upgrade":
            upgrades.append(value.lower())
        elif value.lower() == b"100-continue":
            expect = True
    http11 = version == b"HTTP/1.1"
    host = _host(hosts, http11)
    framing, length = _framing(lengths, codings, http11) if lengths or codings else _NO_BODY
    tokens = _tokens(connection) if connection else ()
    if b"close" in tokens:
        keep_alive = False
    else:
        keep_alive = http11 or b"keep-alive" in tokens
    upgrade = b", ".join(upgrades) if http11 and upgrades and b"upgrade" in tokens else None
    return make_head(
        method,
        target,
        version,
        headers,
        raw,
        framing,
        length,
        keep_alive,
        upgrade,
        expect and http11,
        host,
        tokens,
    )


_NO_BODY: Final = (Framing.NONE, 0)


def _tokens(items: list[bytes]) -> tuple[bytes, ...]:
    if len(items) == 1:
        token = items[0].strip(b" \t")
        return (token,) if token else ()
    return tuple(t for t in (i.strip(b" \t") for i in items) if t)


def _host(hosts: list[bytes], http11: bool) -> bytes:
    if len(hosts) > 1:
        raise BadRequest("more than one Host header")
    if not hosts:
        if http11:
            raise BadRequest("an HTTP/1.1 request needs a Host header")
        return b""
    host = hosts[0]
    if host.translate(None, _REG_NAME) and not _HOST.fullmatch(host):  # no port: one pass
        raise BadRequest("invalid Host header")
    return host


def _framing(lengths: list[bytes], codings: list[bytes], http11: bool) -> tuple[Framing, int]:
    """Framing of a request that has Content-Length or Transfer-Encoding lines."""
    if codings:
        if not http11:
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        if lengths:
            raise BadRequest("Content-Length and Transfer-Encoding together")
        if len(codings) != 1 or codings[0].lower() != b"chunked":
            raise BadRequest("unsupported Transfer-Encoding (only a single chunked)")
        return Framing.CHUNKED, 0
    if any(v != lengths[0] for v in lengths) or not _DIGITS.fullmatch(lengths[0]):
        raise BadRequest("invalid Content-Length")
    return Framing.LENGTH, int(lengths[0])


def _diagnose(head: bytes) -> BadRequest:
    """Which rule a head (or a header block) broke, for a precise 400 message."""
    if b"\0" in head:
        return BadRequest("NUL in the request head")
    if len(head.translate(None, _CTL)) != len(head):
        return BadRequest("control character in the request head")
    stripped = head.replace(b"\r\n", b"")
    if b"\r" in stripped or b"\n" in stripped:
        return BadRequest("bare CR or LF in the request head (lines end in CRLF)")
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            return BadRequest("obs-fold (a header line starting with whitespace)")
        if line and b":" not in line:
            continue
        name = line.partition(b":")[0]
        if line and (not name or name.translate(None, _TCHAR)):
            return BadRequest("invalid header name")
    return BadRequest("invalid header line")


def check_partial(data: bytes | bytearray, start: int, end: int) -> None:
    """Refuse early what no complete head could make valid, in ``data[start:end]``.

    Used on the part of an unfinished head or trailer section that arrived since the last
    look, so a caller sending garbage gets its 400 at once instead of at the head limit or
    timeout. Linear: each byte is looked at once (the complete head is checked again).
    The common case, no control byte and every CR and LF in a pair, is decided by C
    loops (``translate``, ``count``); the regular expression, some 30 times slower per
    byte (a whole 32 KiB head cost 1.5 ms), looks only at a part that has a bad byte.
    """
    part = data[start:end]
    if len(part.translate(None, _CTL)) == len(part):
        pairs = part.count(b"\r\n")
        if part.count(b"\r") == pairs and part.count(b"\n") == pairs:
            return
    m = _BAD_PARTIAL.search(data, start, end)
    if m is not None:
        raise _diagnose(bytes(m.group()))


# A control byte, a CR followed by anything but LF, or an LF without its CR.
_BAD_PARTIAL: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r[^\n]|(?<!\r)\n")
