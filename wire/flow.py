"""Flow-control windows: how much each side may send, and when a receiver grants more.

Every stream has a window per direction, and the session has one per direction that
all streams share. A sender may put ``n`` bytes of DATA on the wire only while both its
stream's and the session's send windows hold ``n``; then both shrink by ``n``. A
receiver holds the mirror image (:class:`RecvWindow`) and grants credit back with WINDOW
frames as its consumer *drains* the bytes, not as they arrive: a slow consumer therefore
stops its sender after one window, and a receiver never buffers more than the windows
it granted (per stream, and at most the session window in total).

Grants are batched (a WINDOW frame once half a stream window, or a quarter of the
session window, has been drained) so small reads do not cost a frame each. A stream
whose consumer keeps up has its window doubled each time it drains twice its current
size, up to :data:`wire.codes.MAX_STREAM_WINDOW`, so long downloads over high-latency
links are not capped at one window per round trip; a stream whose consumer lags (more
than a quarter of the window still buffered) keeps its window, so a slow public caller
costs the relay no more than the initial window. The session window never grows.
"""

from __future__ import annotations

from wire.codes import MAX_STREAM_WINDOW, MAX_WINDOW
from wire.errors import FlowControlError, LocalProtocolError


class SendWindow:
    """Credit the peer granted us."""

    __slots__ = ("available",)

    def __init__(self, initial: int) -> None:
        self.available = initial

    def grow(self, increment: int) -> None:
        """Add credit from a WINDOW frame. Raises FlowControlError past MAX_WINDOW."""
        if self.available + increment > MAX_WINDOW:
            raise FlowControlError(f"window would exceed {MAX_WINDOW}")
        self.available += increment

    def spend(self, n: int) -> None:
        if n > self.available:
            raise LocalProtocolError(f"sending {n} bytes with {self.available} of credit")
        self.available -= n


class RecvWindow:
    """Credit we granted the peer, and the bookkeeping that decides new grants.

    Invariant: ``remaining + buffered <= target``; the difference is credit drained by
    our consumer but not yet granted back (held until it is worth a WINDOW frame).

    Args:
        initial: window the peer starts with (protocol constant).
        divisor: grant once ``target // divisor`` bytes are owed to the peer.
        grow: whether to grow the window of a stream whose consumer keeps up.
    """

    __slots__ = ("buffered", "divisor", "drained", "grow", "remaining", "target")

    def __init__(self, initial: int, divisor: int = 2, grow: bool = True) -> None:
        self.remaining = initial  # what the peer may still send
        self.target = initial  # the window size we aim to keep granted
        self.buffered = 0  # received, not yet drained by our consumer
        self.drained = 0  # drained since the last growth
        self.divisor = divisor
        self.grow = grow

    @property
    def owed(self) -> int:
        """Credit drained by our consumer and not yet granted back."""
        return self.target - self.remaining - self.buffered

    def receive(self, n: int) -> None:
        """Account for ``n`` bytes of received DATA. Raises FlowControlError if over."""
        if n > self.remaining:
            raise FlowControlError(f"{n} bytes of DATA with {self.remaining} of credit left")
        self.remaining -= n
        self.buffered += n

    def consume(self, n: int) -> int:
        """Our consumer drained ``n`` bytes. Returns the increment to grant now (0: none)."""
        if not 0 <= n <= self.buffered:
            raise LocalProtocolError(f"consumed {n} bytes but {self.buffered} are held")
        self.buffered -= n
        self.drained += n
        if self.grow and self.drained >= 2 * self.target:
            self._grow()
        increment = self.target - self.remaining - self.buffered
        if increment < self.target // self.divisor:
            return 0
        self.remaining += increment
        return increment

    def _grow(self) -> None:
        # Grow only while the consumer keeps up (little is left in our buffer): then the
        # window, not the consumer, limits the stream (a fast link with a long round
        # trip). A slow consumer gains nothing from more credit but our memory use.
        self.drained = 0
        if self.buffered <= self.target // 4:
            self.target = min(2 * self.target, MAX_STREAM_WINDOW)
