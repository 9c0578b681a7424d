"""The WebSocket framing fuzz harness in CI: replay its committed corpus, every saved
crash, and a bounded batch of pseudo-random inputs through ``one_input`` (no atheris
needed). Some inputs are built from real frames, so the random batch gets past the
header checks.

A long coverage-guided run is ``scripts/fuzz ws``; see docs/fuzzing.md for the last one.
"""

from __future__ import annotations

import random

from tests.fuzz.fuzz_ws import one_input
from tests.fuzz.test_fuzz_harness import saved
from tunnel.wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, Masks, encode


def test_committed_corpus_replays() -> None:
    corpus = saved("corpus_ws")
    assert len(corpus) > 20
    for path in corpus:
        one_input(path.read_bytes())


def test_every_crash_ever_found_stays_fixed() -> None:
    for path in saved("crashes_ws"):
        one_input(path.read_bytes())


def test_random_inputs() -> None:
    rng = random.Random(20261202)
    ops = (OP_BINARY, OP_TEXT, OP_PING, OP_CLOSE, 0x0, 0x3)
    for _ in range(2000):
        first = rng.randrange(256)
        masks = Masks() if first & 1 else None
        frames = b"".join(
            encode(rng.choice(ops), rng.randbytes(rng.choice((0, 5, 125, 126, 300))), masks)
            for _ in range(rng.randrange(4))
        )
        noise = rng.randbytes(rng.randrange(40))
        body = frames + noise if rng.random() < 0.7 else noise + frames
        one_input(bytes([first]) + body)
