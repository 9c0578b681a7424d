"""The cyclic garbage collector, set for a long-running tunnel process.

Measured with ``perf`` on the relay and the agent under small-GET load (c=64): the
collector took about 7 % of their CPU, most of it in collections of the older
generations that walked every object made at start-up (click, prometheus-client,
websockets, the app's own tables) again and again. :func:`settle` is called once, when
a program has started and before it serves: it collects what start-up left behind and
moves everything alive to the permanent generation (``gc.freeze()``), which the
collector never walks again. Objects made later are collected as before.
"""

from __future__ import annotations

import gc

#: Net allocations of tracked objects between two young collections (CPython's default
#: is 700). Under load a relay holds more objects than that in requests in flight (about
#: 15 each), so with the default every turnover of them started a collection that
#: found nothing: the data path makes no cyclic garbage (streams let go of their
#: handlers, exchanges of their parsers). The bound on uncollected garbage stays small.
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Collect start-up garbage, freeze what is left, and collect the young generation
    less often (see the module docstring and :data:`YOUNG_THRESHOLD`)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
