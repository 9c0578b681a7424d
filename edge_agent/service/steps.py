"""What installing or removing a service does to the machine, as data, and doing it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_agent.errors import ConfigError


@dataclasses.dataclass(frozen=True, slots=True)
class Write:
    """Write ``data`` to ``path`` (folders created), mode 0644 or as given."""

    path: Path
    data: bytes
    mode: int = 0o644


@dataclasses.dataclass(frozen=True, slots=True)
class Remove:
    """Delete ``path`` if it exists."""

    path: Path


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """Run a command of the service manager; ``tolerate``: its failure is expected
    sometimes (stopping a service that is not running) and does not stop the rest."""

    argv: tuple[str, ...]
    tolerate: bool = False


Step = Write | Remove | Run

#: Runs a command and returns (exit status, output): subprocess here, a fake in tests.
Runner = Callable[[Sequence[str]], tuple[int, str]]

#: Seconds a service manager command may take (systemctl waits for the unit to start).
COMMAND_TIMEOUT = 60.0


def run_command(argv: Sequence[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return done.returncode, (done.stdout + done.stderr).strip()


def describe(step: Step) -> str:
    """One line for ``--dry-run`` and progress output."""
    if isinstance(step, Write):
        return f"write {step.path}"
    if isinstance(step, Remove):
        return f"remove {step.path}"
    return "run " + " ".join(step.argv)


def apply(
    steps: Sequence[Step],
    runner: Runner = run_command,
    report: Callable[[Step], None] = lambda step: None,
) -> None:
    """Do ``steps`` in order, calling ``report`` before each. Raises ConfigError at the
    first failure that counts; the steps before it stay done."""
    for step in steps:
        report(step)
        if isinstance(step, Write):
            _write(step)
        elif isinstance(step, Remove):
            step.path.unlink(missing_ok=True)
        else:
            status, output = runner(step.argv)
            if status != 0 and not step.tolerate:
                raise ConfigError(f"{' '.join(step.argv)} failed ({status}): {output}")


def _write(step: Write) -> None:
    step.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = step.path.with_name(step.path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, step.mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(step.data)
    os.replace(tmp, step.path)
