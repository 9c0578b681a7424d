"""HTTP/1.1 request reading for the relay's public side, sans I/O: bytes in, events out.

Placeholder docstring: see the package docstring written below.
"""

from __future__ import annotations

from relay.h1.errors import BadRequest, ClosedMidRequest, H1Error, HeadTooLarge
from relay.h1.events import END, Body, End, Event, Framing, Head
from relay.h1.reader import RequestReader
from relay.h1.rewrite import parse_cidrs, rewrite_head, status_of, trusted_proxy

__all__ = [
    "END",
    "BadRequest",
    "Body",
    "ClosedMidRequest",
    "End",
    "Event",
    "Framing",
    "H1Error",
    "Head",
    "HeadTooLarge",
    "RequestReader",
    "parse_cidrs",
    "rewrite_head",
    "status_of",
    "trusted_proxy",
]
