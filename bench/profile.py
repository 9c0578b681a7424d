"""``--profile DIR``: py-spy profiles of a path's Python processes under load.

For each load below, ``py-spy record`` samples every process the path started (the
relay and the agent for molecule-edge) while wrk runs, writes the folded stacks to
``DIR/<process>-<load>.txt`` (open them with any flame graph tool), and the report
lists the frames with the most samples of their own and the tunnel's own functions
with the most samples including callees.

py-spy is not a project dependency: ``.venv/bin/pip install py-spy`` to use this.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from bench.load import ECHO_BODY, wrk
from bench.paths import BenchPath
from bench.procs import BenchError

#: Samples per second per process.
RATE: Final = 200
#: Frames listed per process and load.
TOP: Final = 6
#: Loads profiled: name, target, connections, request body size.
LOADS: Final = (
    ("small-c64", "/small", 64, 0),
    ("big", "/big", 1, 0),
    ("echo", "/echo", 4, ECHO_BODY),
)
#: Our own packages, for attributing each sample to our deepest frame.
OWN: Final = ("relay/", "edge_agent/", "wire/")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def profile(path: BenchPath, script: Path, seconds: float, outdir: Path) -> str:
    """Profile ``path`` under each load; returns the markdown summary."""
    tool, sections = py_spy(), []
    outdir.mkdir(parents=True, exist_ok=True)
    for load, target, connections, body in LOADS:
        recorders = []
        for child in path.own():
            out = outdir / f"{child.name}-{load}.txt"
            argv = [tool, "record", "-p", str(child.proc.pid), "-r", str(RATE), "-f", "raw"]
            argv += ["-d", str(round(seconds) + 1), "--nonblocking", "-o", str(out)]
            recorders.append((child.name, out, _start(argv)))
        time.sleep(0.5)  # py-spy attaches before the load starts
        result = wrk(
            path.base_url + target,
            connections=connections,
            seconds=seconds,
            script=script,
            body_size=body,
        )
        lines = [f"**{load}** ({result.rps:,.0f} req/s, {result.mb_per_s:,.0f} MB/s):", ""]
        for name, out, proc in recorders:
            proc.wait(seconds + 30)
            lines.append(f"- {name}: " + summarize(out))
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def _start(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize(folded: Path) -> str:
    """Top frames by own samples, then by our deepest frame in each sample."""
    own: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = 0
    try:
        text = folded.read_text()
    except OSError:
        return "no profile (py-spy could not attach?)"
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        frames, n = stack.split(";"), int(count)
        total += n
        own[frames[-1]] += n
        mine = [frame for frame in frames if any(package in frame for package in OWN)]
        ours[mine[-1] if mine else "(outside our packages)"] += n
    if not total:
        return "no samples"
    top_own = ", ".join(f"`{f}` {n / total:.0%}" for f, n in own.most_common(TOP))
    top_ours = ", ".join(f"`{f}` {n / total:.0%}" for f, n in ours.most_common(TOP))
    return f"{total} samples; own time: {top_own}; under our frames: {top_ours}"
