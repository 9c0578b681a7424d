"""tunnel.heap: the collector and malloc settings of a serving process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import tunnel
from tests.tunnel.pair import Pair, close_pair, make_pair
from tunnel import heap
from wire import ErrorCode


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    made = await make_pair()
    yield made
    await close_pair(made)


def test_settle_freezes_the_heap_and_malloc_is_tuned_at_the_first_bulk_frame() -> None:
    # In a child: settle() changes the whole process's collector.
    code = (
        "import gc, json, sys; from tunnel import heap; heap.settle();"
        "idle = 'ctypes' in sys.modules; heap.bulk(); heap.bulk();"
        "print(json.dumps([gc.get_freeze_count(), gc.get_threshold()[0], idle,"
        " 'ctypes' in sys.modules, heap._tune_malloc()]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],  # the checkout, whatever pytest's cwd
    )
    frozen, young, ctypes_idle, ctypes_bulk, malloc = json.loads(out.stdout)
    assert frozen > 1000  # the modules' objects
    assert young == heap.YOUNG_THRESHOLD
    linux = sys.platform.startswith("linux")
    assert (ctypes_idle, ctypes_bulk) == (False, linux)  # idle: ctypes not even loaded
    assert malloc is linux  # glibc: mallopt took both settings


async def test_a_closed_stream_lets_go_of_its_handler(pair: Pair) -> None:
    stream, mine, theirs = await pair.open(b"request", end=True)
    assert theirs.stream is not None
    theirs.stream.write(b"response")
    theirs.stream.end()
    await mine.wait(lambda: bool(mine.ended))
    assert stream.closed
    assert stream.handler is tunnel.NULL_HANDLER
    assert theirs.stream.handler is tunnel.NULL_HANDLER


async def test_a_reset_stream_still_tells_its_handler_then_lets_go(pair: Pair) -> None:
    stream, mine, theirs = await pair.open(b"request")
    assert theirs.stream is not None
    theirs.stream.reset(ErrorCode.TARGET_ERROR, "gone")
    await mine.wait(lambda: bool(mine.aborts))
    assert mine.aborts == [(ErrorCode.TARGET_ERROR, "gone")]
    assert stream.handler is tunnel.NULL_HANDLER


#: Run in a fresh interpreter: a long test session's heap (malloc thresholds changed by
#: earlier tests, chunks reused) says nothing about what a burst leaves behind.
_BURST = """
from tunnel import heap

def rss():
    with open("/proc/self/status") as status:
        return int(next(x for x in status if x.startswith("VmRSS:")).split()[1]) / 1024

burst, survivors = [], []
for _ in range(2000):
    burst.append(bytearray(b"x" * 64 * 1024))  # touched: resident
    survivors.append(bytearray(1024))  # from malloc too (over 512 B): keeps the top in use
burst.clear()
held = rss()
assert heap.trim()
print(held - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trim_gives_back_what_a_burst_freed_in_the_middle_of_the_heap() -> None:
    """A burst's buffers freed between survivors stay in malloc's free lists (the trim
    threshold only sees the top of the heap): trim() hands them back to the kernel."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _BURST], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    given_back = float(out.stdout)
    assert given_back > 64, f"trim gave back {given_back:.1f} MiB of the 125 MiB freed"
