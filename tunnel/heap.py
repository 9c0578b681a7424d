"""Memory settings for a long-running tunnel process: the cyclic collector and malloc.

Measured with ``perf`` on the relay and the agent:

* **The cyclic collector** took about 7 % of their CPU under small-GET load (c=64),
  much of it walking objects made at start-up (click, prometheus-client, websockets)
  again and again, and young collections started by requests in flight. :func:`settle`
  collects what start-up left, moves everything alive to the permanent generation
  (``gc.freeze()``), which the collector never walks again, and starts young collections
  less often (:data:`YOUNG_THRESHOLD`). The data path itself makes no cyclic garbage
  (streams let go of their handlers, exchanges of their parsers).
* **malloc** (glibc) served every buffer over its mmap threshold (128 KiB until the
  first free raises it) with fresh pages from the kernel and gave them back when freed:
  a bulk frame is 256 KiB, and a download allocates a few buffers per frame (the read,
  the frame, the masked copy), so page faults and zeroing were a third of the agent's
  CPU on GET /big. With :data:`MMAP_THRESHOLD` and :data:`TRIM_THRESHOLD` set, those
  buffers are reused from the heap: CPU per 64 MiB download 107-131 ms -> 28-42 ms in
  the agent, 44-49 -> 27-34 ms in the relay. What stays mapped after a burst is bounded
  by the trim threshold. They are set on the first bulk frame (:func:`bulk`), not at
  start: ``ctypes``, which calling ``mallopt`` needs, costs 440 KiB of an idle agent's
  memory.
* **Memory after a burst**: what a burst of connections freed (their read buffers) stays
  in malloc's free lists, scattered through the heap where the trim threshold never
  sees it: a relay went 34 -> 101 MiB under a 10 s flood of unfinished header lines and
  stayed there. :func:`trim` (glibc ``malloc_trim``) gives those free pages back: 101 ->
  42 MiB. The relay calls it every :data:`TRIM_INTERVAL` seconds.
"""

from __future__ import annotations

import gc
import sys
from typing import Any, Final

#: Net allocations of tracked objects between two young collections (CPython's default
#: is 700). Under load a relay holds more objects than that in requests in flight
#: (about 15 each), so with the default every turnover of them started a collection
#: that found nothing. The bound on uncollected garbage stays small.
YOUNG_THRESHOLD: Final = 10_000

#: Buffers at least this large get their own mapping (glibc ``M_MMAP_THRESHOLD``).
MMAP_THRESHOLD: Final = 4 * 1024 * 1024
#: Free memory at the top of the heap beyond this goes back to the kernel
#: (glibc ``M_TRIM_THRESHOLD``).
TRIM_THRESHOLD: Final = 16 * 1024 * 1024

#: Seconds between two :func:`trim` calls of a long-running relay.
TRIM_INTERVAL: Final = 15.0

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3


def settle() -> None:
    """Call once, when the program has started and before it serves (see the module
    docstring): collect start-up garbage, freeze what is left, and collect the young
    generation less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


_bulk_seen = False


def bulk() -> None:
    """A bulk frame goes through: set malloc's thresholds, the first time (glibc only;
    a no-op elsewhere). Cheap to call again."""
    global _bulk_seen
    if not _bulk_seen:
        _bulk_seen = True
        _tune_malloc()


def _tune_malloc() -> bool:
    """Set glibc's thresholds; False where there is no glibc ``mallopt``."""
    import ctypes  # here: see the module docstring

    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mmap_set: int = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trim_set: int = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return mmap_set == 1 and trim_set == 1


def trim() -> bool:
    """Give malloc's free pages back to the kernel (glibc ``malloc_trim(0)``: about a
    millisecond for a heap of 100 MiB). False where there is no glibc."""
    import ctypes  # here: see the module docstring

    malloc_trim = _glibc("malloc_trim")
    if malloc_trim is None:
        return False
    malloc_trim.argtypes = (ctypes.c_size_t,)
    malloc_trim.restype = ctypes.c_int
    malloc_trim(0)
    return True


def _glibc(name: str) -> Any:
    """glibc's function ``name`` through ctypes, or None (not Linux, or a C library
    without it: musl has neither ``mallopt`` nor ``malloc_trim``)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here: see the module docstring

    try:
        return getattr(ctypes.CDLL(None), name)  # the C library the interpreter runs on
    except (OSError, AttributeError, TypeError):
        return None
