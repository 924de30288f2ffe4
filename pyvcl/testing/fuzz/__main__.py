"""``python -m pyvcl.testing.fuzz``: run the fuzzer, or replay saved findings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .runner import (
    DEFAULT_MEMORY,
    DEFAULT_TIMEOUT,
    FINE,
    FUZZ_TARGETS,
    Limits,
    child_main,
    fuzz,
    replay,
    target_classes,
)


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--child"]:
        child_main(sys.stdin, sys.stdout)
        return 0
    p = argparse.ArgumentParser(prog="python -m pyvcl.testing.fuzz", description=__doc__)
    p.add_argument(
        "--inputs", type=int, default=2000, help="inputs in all (spread over the targets)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="worker processes at a time")
    p.add_argument(
        "--targets", default="all", help=f"comma-separated, of: {', '.join(target_classes())}"
    )
    p.add_argument("--out", type=Path, help="write summary.json and findings/*.json here")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per input")
    p.add_argument("--memory", type=int, default=DEFAULT_MEMORY, help="address-space limit, bytes")
    p.add_argument(
        "--snapshots",
        help="directory of recorded snapshots, or one snapshot's DIR/NAME (default: the shared "
        "data's, else the project's own ct-pyvcl-client-blocked)",
    )
    p.add_argument("--no-minimise", action="store_true")
    p.add_argument(
        "--replay", type=Path, nargs="+", metavar="FINDING", help="re-run saved findings"
    )
    p.add_argument(
        "--fixtures",
        type=Path,
        metavar="DIR",
        help="with --replay: run a snapshot finding's form on the snapshots in DIR (the "
        "project's own, tests/fixtures/vpp-v26.06/snapshots) instead of the shared data's",
    )
    args = p.parse_args(argv)
    limits = Limits(args.timeout, args.memory, args.snapshots)
    if args.replay:
        bad = 0
        results = replay(args.replay, limits, fixtures=args.fixtures)
        for path, r in zip(args.replay, results, strict=True):
            print(f"{path}: {r.verdict} {r.where} {r.detail}")
            bad += r.verdict not in FINE
        return 1 if bad else 0
    names = list(FUZZ_TARGETS) if args.targets == "all" else args.targets.split(",")
    if unknown := set(names) - set(target_classes()):
        p.error(f"unknown targets: {', '.join(sorted(unknown))}")
    counts, findings = fuzz(
        names, args.inputs, args.seed, args.jobs, limits, args.out, not args.no_minimise, sys.stderr
    )
    print(json.dumps(counts, indent=1))
    for f in findings:
        print(f"\n{f.result.signature()}  ({f.count} inputs, first: index {f.result.index})")
        print(f"  {f.result.detail}")
        for w in f.to_json()["writes"]:
            print(f"  write {w}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
