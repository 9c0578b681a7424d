"""``python -m bench [MODE] [options]``: the benchmark harness (``scripts/bench`` runs it).

Modes:

* ``paths`` (default): direct, nginx, ssh -R and molecule-edge side by side.
* ``idle-agents``: relay memory per idle connected agent (simulated agents).
* ``busy-tunnel``: small GET p99 on a tunnel during a 1 GiB download, against idle.
* ``relay-restart``: time for simulated agents to come back after a relay restart.
* ``websocket``: WebSocket echo through molecule-edge (pass-through and ``--app``)
  against direct: round trip and messages/s.
* ``attacks``: the hostile-input attacks against a real relay, with a bystander tunnel's
  p99 and the relay's memory during and after each (``--attacks`` picks some).
* ``tcp``: raw TCP throughput, direct, ssh -R and ``edge-agent tcp`` (bench.tcp).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from bench import attacks, cluster, compare, scale, tcp, wsecho
from bench.paths import ALL_PATHS, path_keys
from bench.procs import BenchError, Children
from bench.profile import profile


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    p.add_argument(
        "mode",
        nargs="?",
        default="paths",
        choices=[
            "paths",
            "idle-agents",
            "busy-tunnel",
            "relay-restart",
            "websocket",
            "attacks",
            "tcp",
            "cluster",
        ],
    )
    p.add_argument("--quick", action="store_true", help="short runs (under 3 minutes)")
    p.add_argument("--out", type=Path, help="write the markdown results to this file")
    p.add_argument("--json", type=Path, help="write the raw samples to this file")
    p.add_argument(
        "--paths",
        default=None,
        help=f"comma-separated subset of {','.join(ALL_PATHS)} "
        "(paths: all of them; busy-tunnel: edge,ssh)",
    )
    p.add_argument("--rounds", type=int, help="override the number of rounds")
    p.add_argument("--seconds", type=float, help="override each load's duration")
    p.add_argument(
        "--agents",
        default=None,
        help="idle-agents: comma-separated counts (default 1000,10000); "
        "relay-restart: one count (default 1000)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="paths mode: after the rounds, py-spy profiles of molecule-edge into this folder",
    )
    p.add_argument(
        "--attacks",
        default=None,
        help="attacks: comma-separated subset of " + ",".join(attacks.DESCRIPTIONS),
    )
    p.add_argument(
        "--relay-args",
        default="",
        help="attacks: more edge-relay serve flags, e.g. '--max-client-streams 64'",
    )
    p.add_argument("--mib", type=int, help="tcp: MiB moved each way per round (default 512)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return p


def _paths_mode(args: argparse.Namespace, children: Children, workdir: Path) -> str:
    plan = compare.Plan.quick() if args.quick else compare.Plan.full()
    if args.rounds or args.seconds:
        plan = compare.Plan(
            rounds=args.rounds or plan.rounds,
            seconds=args.seconds or plan.seconds,
            sse_runs=plan.sse_runs,
            warmup=plan.warmup,
        )
    keys = path_keys(args.paths, ",".join(ALL_PATHS))
    cmp = compare.Comparison(plan, children, workdir)
    port = cmp.start_origin()
    paths = cmp.start_paths(keys, port)
    if not paths:
        raise BenchError("no path could be started")
    cmp.run(paths)
    if args.json:
        args.json.write_text(compare.raw_json(cmp))
    text = compare.markdown(cmp, _command())
    edge = [path for path in paths if path.key == "edge"]
    if args.profile and edge:
        summary = profile(edge[0], cmp.script, plan.seconds, args.profile)
        text += f"\nProfile of molecule-edge (py-spy, folded stacks in {args.profile}):\n\n"
        text += summary
    return text


def _command() -> str:
    return "scripts/bench " + shlex.join(sys.argv[1:])


def main() -> int:
    args = _parser().parse_args()
    for target in (args.out, args.json):
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="molecule-edge-bench-"))
    children = Children(workdir)
    try:
        if args.mode == "paths":
            text = _paths_mode(args, children, workdir)
        elif args.mode == "websocket":
            text = wsecho.run(args, children, workdir, _command())
        elif args.mode == "attacks":
            text = attacks.run(args, children, workdir, _command())
        elif args.mode == "cluster":
            text = cluster.run(args, children, workdir, _command())
        elif args.mode == "tcp":
            mib = args.mib or (128 if args.quick else 512)
            rounds = args.rounds or (3 if args.quick else 5)
            text = tcp.run(mib, rounds, children, workdir, _command())
        else:
            text = scale.run(args.mode, args, children, workdir, _command())
    except BenchError as exc:
        print(f"bench failed: {exc} (logs in {workdir})", file=sys.stderr)
        return 1
    finally:
        children.close()
    print(text)
    if args.out:
        args.out.write_text(text)
    print(f"finished in {time.monotonic() - started:.0f} s; logs in {workdir}", file=sys.stderr)
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
