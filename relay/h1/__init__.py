"""HTTP/1.1 request reading for the relay's public side, sans I/O: bytes in, events out.

Theory of operation
-------------------

The relay moves bytes, not objects (the v2 data path). Of a public request it
must understand only the head, to route it, authorize it, limit it and rewrite it for
the agent; the body goes down the tunnel as the caller sent it. This package is that
understanding, with no sockets and no asyncio: the relay's Protocol calls
:meth:`RequestReader.feed` with every read and acts on the events:

* :class:`Head`: a complete head, validated (:mod:`relay.h1.head` lists every rule) and
  parsed, with ``raw``, its exact bytes;
* :class:`Body`: body bytes exactly as received, chunk framing and trailers included, so
  they can be forwarded verbatim; ``decoded`` counts the payload in them (for the body
  limit);
* :class:`End`: the request is complete. Bytes after it are the next request
  (pipelining): kept, and parsed when they are a complete head.

Then :func:`rewrite_head` gives the head for the agent by splicing ``raw`` (new target,
hop-by-hop and spoofable headers left out, X-Forwarded-* and Forwarded appended, from
the connection's :class:`Forwarding`, encoded once per connection), and
:func:`status_of` reads the status of the agent's response for metrics. Requests are
never close-delimited: a request with neither Content-Length nor Transfer-Encoding has
no body. After the End of an upgrade request the reader pauses; the relay calls
:meth:`RequestReader.switch_to_raw` when the origin answered 101 (every later byte is
``Body``) or :meth:`RequestReader.resume` when it did not.

A refusal is an exception of one small tree (:mod:`relay.h1.errors`): ``BadRequest``
(400) or ``HeadTooLarge`` (431), both :class:`relay.errors.PublicError`, so the relay
answers them like its other errors. A reader that raised is dead.

Why the body is not re-framed: a relay that decodes chunks and re-encodes them decides
what the agent's framing is; one that forwards them must agree with the agent on every
byte. The second is what moving bytes means, so the chunked parser is strict where
parsers are known to disagree (request smuggling): hex sizes only (no sign, ``0x``,
whitespace, or more than 16 digits), chunk extensions only as tokens or quoted strings
and capped, CRLF exactly after each chunk's data, trailer fields validated, capped, and
refused when they name a field that must come in the head (Host, Content-Length,
Authorization, forwarding headers...). Trailers are never merged into the head: they
reach the agent as trailers, inside the body bytes (issue 18 item 5).

Limits (arguments of :class:`RequestReader`, whose docstring says what happens at each)
----------------------------------------------------------------------------------------

``max_head`` 16 KiB: counted on the bytes received since the request began, whatever
has been parsed, so an unfinished line (a value or a name that never ends) is refused at
the limit, not when it ends (issue 18 item 1). Searches resume where they stopped: cost
is linear in the bytes received however they are cut. ``max_headers`` 100 lines (431).
``max_chunk_ext`` 256 bytes per chunk-size line (400). ``max_trailers`` 8 KiB (431).

Performance, and why a hand-written head parser
-----------------------------------------------

This runs once per request on the hot path (the relay's budget is about 30 us of CPU
per small request; this path's share is about 10 us). ``python -m bench.h1parse`` on the
reference machine (2 shared vCPUs, CPython 3.11.7, min of 7 x 20,000 runs, best of three
rounds; other jobs were using the machine, load average 3-5, so single runs vary by up
to 1.3x), for a 325-byte Firefox-like GET with 8 headers, in four runs:

=====================================  ==========
``RequestReader.feed`` (whole head)    5.8-6.8 us
``rewrite_head``                       2.6-2.9 us
feed + rewrite_head                    8.9-9.4 us
head parser alone, hand-written        5.0-5.5 us
same Head with httptools + our rules   4.2-4.6 us
=====================================  ==========

The choice is the hand-written parser, although httptools (llhttp, C) was 0.6-1.1 us
faster for the head alone once its per-header Python callbacks, the lowercasing of
names and the rules llhttp does not have are counted:

* llhttp accepted 15 of the 53 heads the tests refuse, three of them on syntax (two
  spaces in the request line, a request line without a version, the HTTP/2 preface);
  with it, the rules would be split between Python and a C library whose leniencies
  change between versions (and ``httptools>=0.6`` is all the project pins);
* httptools is a CPython-only dependency (pyproject), so a pure-Python parser is needed
  anyway, and two parsers would disagree somewhere: the smuggling class of bug;
* it does not report where a message starts in the stream, so the reader must find the
  end of the head itself anyway and can feed it only the head; the head limit, the
  linear-time guarantee and the chunked parser are ours in both designs;
* the gain is under 10 % of this path, which is under the budget without it.

The hand-written parser checks in a few C-level passes over the whole head
(``bytes.count``, ``bytes.translate``, one anchored ``re.findall`` with possessive
quantifiers, so no input makes it backtrack), one short Python loop over the headers the
relay needs, and builds the frozen :class:`Head` through its slot descriptors
(:func:`relay.h1.events.make_head`, 3x faster than the dataclass ``__init__``).
"""

from __future__ import annotations

from relay.h1.errors import BadRequest, ClosedMidRequest, H1Error, HeadTooLarge
from relay.h1.events import END, Body, End, Event, Framing, Head
from relay.h1.reader import RequestReader
from relay.h1.rewrite import Forwarding, parse_cidrs, rewrite_head, status_of, trusted_proxy

__all__ = [
    "END",
    "BadRequest",
    "Body",
    "ClosedMidRequest",
    "End",
    "Event",
    "Forwarding",
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
