"""The request-reader fuzz harness in CI: replay its committed corpus, every saved crash,
and a bounded batch of pseudo-random inputs through ``one_input`` (no atheris needed).

A long coverage-guided run is ``scripts/fuzz h1``; see docs/fuzzing.md for the last one.
"""

from __future__ import annotations

import random

from tests.fuzz.fuzz_h1 import one_input
from tests.fuzz.test_fuzz_harness import saved


def test_committed_corpus_replays() -> None:
    corpus = saved("corpus_h1")
    assert len(corpus) > 50
    for path in corpus:
        one_input(path.read_bytes())


def test_every_crash_ever_found_stays_fixed() -> None:
    for path in saved("crashes_h1"):
        one_input(path.read_bytes())


def test_random_inputs() -> None:
    rng = random.Random(20261202)
    heads = [b"GET / HTTP/1.1\r\nHost: h\r\n", b"POST / HTTP/1.1\r\nHost: h\r\n"]
    for _ in range(2000):
        start = rng.choice(heads) if rng.random() < 0.5 else b""
        one_input(bytes([rng.randrange(256)]) + start + rng.randbytes(rng.randrange(300)))
