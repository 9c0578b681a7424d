"""Session resumption, sans I/O: what a side keeps so that a new WebSocket can carry on
a session whose old one dropped, and the HELLO/WELCOME keys that agree on it.

Theory of operation
-------------------
A session's frames travel on one ordered byte stream (the WebSocket's TCP connection),
so what a peer received when the connection dropped is a *prefix* of what was sent: the
first ``n`` messages, for some ``n``. Each side counts the messages it processed; on a
new connection it tells the other that count, and the other sends every message from
that index on again, exactly as it was sent. Both :class:`wire.Connection` objects then
carry on as if the old connection had never dropped: no stream state, window or offset
has to be rebuilt, and no byte is lost, duplicated or reordered.

What a side must keep is what the peer may not have received, and flow-control credit
says which that is: the peer grants session credit back only for stream bytes its
consumer took, and a byte taken was received. So once the session credit granted back
totals ``acked`` bytes, the peer received at least ``acked`` stream bytes, hence every
message up to the one that carried the ``acked``-th byte (messages arrive in order).
:class:`ResendLog` drops those. What it holds is therefore bounded by the session window
the peer granted (stream bytes sent and not yet credited back never exceed it: 16 MiB),
plus the byte-less messages (WINDOW, RESET, empty FINs) sent since the last grant, of
which it keeps at most :data:`MAX_RESEND_FRAMES`; past that the session is no longer
resumable (it still works; a drop then ends it as before).

The agreement: the agent asks for resumption in its first HELLO (``"resume": {}``); a
relay that offers it answers in WELCOME with a session id, a secret (the relay keeps
only its SHA-256) and its grace period. After a drop the agent's HELLO on a new
connection carries ``"resume": {"session", "secret", "received"}``; a relay that still
holds the session answers a WELCOME whose ``resume`` has ``received`` (the messages it
processed), and both re-send. A WELCOME without ``received`` is a fresh session: the
old one is gone (the grace ran out, or the relay restarted).
"""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import Any, Final

from wire.codes import HEADER_SIZE, FrameType
from wire.errors import FrameError

#: Byte-less messages (WINDOW, RESET, GOAWAY, empty DATA) a log keeps between two
#: session grants of the peer. A download-only session sends a WINDOW per half window
#: its consumer took and may get no grant back for long (the agent grants the relay
#: session credit only for request bytes); 65,536 such frames are a few MiB of
#: memory and, at one per 2 MiB of a grown window, over 100 GiB of download.
MAX_RESEND_FRAMES: Final = 65_536

#: Longest grace a relay may announce, in seconds (a WELCOME with more is refused).
MAX_GRACE: Final = 3600

#: Largest message count a HELLO or WELCOME may carry (JSON integers beyond 2**53 lose
#: precision in some decoders).
MAX_RECEIVED: Final = 2**53

_SESSION_ID: Final = re.compile(r"[0-9a-f]{32}")
_SECRET: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_OPEN: Final = int(FrameType.OPEN)
_DATA: Final = int(FrameType.DATA)


class ResumeError(Exception):
    """The session cannot be resumed from the count the peer gave (see :meth:`ResendLog.replay`)."""


def stream_bytes(message: bytes | tuple[bytes, bytes]) -> int:
    """How many stream bytes (flow-controlled payload) one sent message carries."""
    if isinstance(message, tuple):  # a bulk DATA frame, header and payload apart
        return len(message[1])
    kind = message[0]
    if kind == _DATA:
        return len(message) - HEADER_SIZE
    if kind == _OPEN:
        return len(message) - HEADER_SIZE - 1  # the kind byte is not stream bytes
    return 0


class ResendLog:
    """The messages a session sent that the peer may not have received.

    Call :meth:`record` with every batch of messages handed to the link (in order), and
    :meth:`ack` with every session WINDOW increment received. :meth:`replay` returns what
    to send again on a new link.
    """

    __slots__ = ("_acked", "_base", "_bytes", "_log", "_sent", "max_frames", "overflowed")

    def __init__(self, max_frames: int = MAX_RESEND_FRAMES) -> None:
        # (message, stream bytes before it, stream bytes after it)
        self._log: collections.deque[tuple[bytes | tuple[bytes, bytes], int, int]] = (
            collections.deque()
        )
        self._base = 0  # index of the first message kept
        self._sent = 0  # messages recorded
        self._bytes = 0  # stream bytes recorded
        self._acked = 0  # session credit granted back by the peer
        self.max_frames = max_frames
        #: Too many byte-less messages waited for a grant: the log was dropped and the
        #: session can no longer be resumed.
        self.overflowed = False

    @property
    def sent(self) -> int:
        """Messages recorded so far (the peer's count can be at most this)."""
        return self._sent

    @property
    def kept(self) -> int:
        """Messages held for re-sending."""
        return len(self._log)

    @property
    def kept_bytes(self) -> int:
        """Stream bytes held for re-sending (at most the session window granted)."""
        return self._bytes - self._log[0][1] if self._log else 0

    def record(self, messages: list[bytes | tuple[bytes, bytes]]) -> None:
        """``messages`` were handed to the link, in this order."""
        self._sent += len(messages)
        if self.overflowed:
            return
        log = self._log
        total = self._bytes
        for message in messages:
            before = total
            total += stream_bytes(message)
            log.append((message, before, total))
        self._bytes = total
        if len(log) > self.max_frames:
            self._overflow()

    def ack(self, increment: int) -> None:
        """The peer granted ``increment`` more session credit: it took (so received) that
        many more stream bytes. Drops every message it must therefore have received."""
        self._acked += increment
        acked = self._acked
        log = self._log
        # A message whose first byte is before ``acked`` arrived: the peer received at
        # least ``acked`` bytes, so the message that carried the acked-th byte too.
        while log and log[0][1] < acked:
            log.popleft()
            self._base += 1

    def replay(self, received: int) -> list[bytes | tuple[bytes, bytes]]:
        """The messages to send again after the peer said it processed ``received``.

        Raises:
            ResumeError: the log overflowed, or ``received`` is before what was dropped
                as acknowledged, or beyond what was sent (the peer is wrong).
        """
        if self.overflowed:
            raise ResumeError("too many frames waited for acknowledgement")
        if received < self._base:
            raise ResumeError(f"peer received {received} messages; {self._base} were acknowledged")
        if received > self._sent:
            raise ResumeError(f"peer received {received} messages; only {self._sent} were sent")
        skip = received - self._base
        return [entry[0] for i, entry in enumerate(self._log) if i >= skip]

    def can_replay(self, received: int) -> bool:
        return not self.overflowed and self._base <= received <= self._sent

    def _overflow(self) -> None:
        self.overflowed = True
        self._log.clear()


def replayed_bytes(messages: list[bytes | tuple[bytes, bytes]]) -> int:
    """Stream bytes in a replay (for the "412 KiB re-sent" log line)."""
    return sum(stream_bytes(m) for m in messages)


# --- HELLO and WELCOME keys ---------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ResumeTicket:
    """HELLO's ``resume``: empty (``session == ""``) asks the relay to offer resumption;
    filled, it resumes session ``session`` whose secret is ``secret``, of which the agent
    processed ``received`` messages."""

    session: str = ""
    secret: str = ""
    received: int = 0

    @property
    def resuming(self) -> bool:
        return bool(self.session)


@dataclasses.dataclass(frozen=True, slots=True)
class ResumeOffer:
    """WELCOME's ``resume``. On a fresh session: the id, the secret and the grace in
    seconds. On a resumed one: the id, the grace, no secret, and ``received``: the
    messages of the session the relay processed."""

    session: str
    secret: str = ""
    grace: int = 60
    received: int | None = None

    @property
    def resumed(self) -> bool:
        return self.received is not None


def encode_ticket(ticket: ResumeTicket) -> dict[str, Any]:
    if not ticket.resuming:
        return {}
    return {"session": ticket.session, "secret": ticket.secret, "received": ticket.received}


def decode_ticket(raw: Any) -> ResumeTicket:
    if not isinstance(raw, dict):
        raise FrameError("hello resume must be an object")
    if not raw:
        return ResumeTicket()
    session, secret, received = raw.get("session"), raw.get("secret"), raw.get("received")
    session = _check_id(session, "hello")
    if not (isinstance(secret, str) and _SECRET.fullmatch(secret)):
        raise FrameError("hello resume secret must be 43 base64url characters")
    received = _check_count(received, "hello")
    return ResumeTicket(session, secret, received)


def encode_offer(offer: ResumeOffer) -> dict[str, Any]:
    obj: dict[str, Any] = {"session": offer.session, "grace": offer.grace}
    if offer.secret:
        obj["secret"] = offer.secret
    if offer.received is not None:
        obj["received"] = offer.received
    return obj


def decode_offer(raw: Any) -> ResumeOffer:
    if not isinstance(raw, dict):
        raise FrameError("welcome resume must be an object")
    session, secret, grace = raw.get("session"), raw.get("secret", ""), raw.get("grace")
    received = raw.get("received")
    session = _check_id(session, "welcome")
    if not (isinstance(secret, str) and (secret == "" or _SECRET.fullmatch(secret))):
        raise FrameError("welcome resume secret must be 43 base64url characters")
    if type(grace) is not int or not 1 <= grace <= MAX_GRACE:
        raise FrameError(f"welcome resume grace must be an integer in 1..{MAX_GRACE}")
    if received is not None:
        _check_count(received, "welcome")
    if (received is None) == (secret == ""):
        raise FrameError("welcome resume has a secret (new session) or received (resumed)")
    return ResumeOffer(session, secret, grace, received)


def _check_id(session: Any, what: str) -> str:
    if not (isinstance(session, str) and _SESSION_ID.fullmatch(session)):
        raise FrameError(f"{what} resume session must be 32 lowercase hex digits")
    return session


def _check_count(received: Any, what: str) -> int:
    if type(received) is not int or not 0 <= received <= MAX_RECEIVED:
        raise FrameError(f"{what} resume received must be an integer in 0..2**53")
    return received
