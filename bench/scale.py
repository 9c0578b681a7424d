"""Scale figures for molecule-edge (placeholder while written)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.procs import BenchError, Children


def run(
    mode: str, args: argparse.Namespace, children: Children, workdir: Path, command: str
) -> str:
    raise BenchError(f"{mode}: not written yet")
