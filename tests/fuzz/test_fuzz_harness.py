"""The fuzz harness in CI: replay the committed corpus, every saved crash, and a bounded
batch of pseudo-random inputs through ``one_input`` (no atheris needed).

A long coverage-guided run is ``scripts/fuzz``; see docs/fuzzing.md for the last one.
"""

from __future__ import annotations

import random
from pathlib import Path

from tests.fuzz.fuzz_wire import one_input

HERE = Path(__file__).parent


def saved(folder: str) -> list[Path]:
    return sorted(p for p in (HERE / folder).iterdir() if p.is_file() and p.name[0] != ".")


def test_committed_corpus_replays() -> None:
    """The minimized corpus of the last run (``scripts/fuzz merge``): about 93 % of the
    lines of ``wire`` in a couple of seconds."""
    corpus = saved("corpus")
    assert len(corpus) > 50
    for path in corpus:
        one_input(path.read_bytes())


def test_every_crash_ever_found_stays_fixed() -> None:
    for path in saved("crashes"):
        one_input(path.read_bytes())


def test_random_inputs() -> None:
    rng = random.Random(20261126)
    for _ in range(3000):
        one_input(rng.randbytes(rng.randrange(400)))
