"""The fuzz harness in CI: replay the committed corpus, every saved crash, and a bounded
batch of pseudo-random inputs through ``one_input`` (no atheris needed).

A long coverage-guided run is ``scripts/fuzz``; see docs/fuzzing.md for the last one.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.fuzz.fuzz_wire import one_input

HERE = Path(__file__).parent
SAVED = sorted(p for d in ("corpus", "crashes") for p in (HERE / d).glob("*") if p.is_file())
SAVED = [p for p in SAVED if not p.name.startswith(".")]


@pytest.mark.parametrize("path", SAVED, ids=[p.name[:12] for p in SAVED])
def test_saved_inputs(path: Path) -> None:
    one_input(path.read_bytes())


def test_random_inputs() -> None:
    rng = random.Random(20261126)
    for _ in range(3000):
        one_input(rng.randbytes(rng.randrange(400)))
