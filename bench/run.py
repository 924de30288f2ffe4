"""Throughput and latency: pyvcl vs C VCL vs Python on kernel sockets, in one run.

    python -m bench.run [--quick] [--cases PATTERN] [--duration S] [--rounds N] [--repeat R]
    python -m bench.run --list

Prints one JSON record per line: first ``{"run": {...}}`` (machine, VPP build, parameters),
then one record per case (``{"case": "bulk/kernel/64KiB", "gbps": ...}``, or with
``"skipped"`` / ``"error"``), and last ``{"summary": {"A vs B": ratio, ...}, ...}``.  See
bench/README.md for what each case measures and how to read the ratios.

Cases come from bench/kernel.py, bench/cvcl.py, bench/program_cases.py and, when it exists,
bench/pyvcl_cases.py (see bench/registry.py for how to add one).  Only figures of one run are
comparable: the machine is shared and its absolute numbers move between days.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import cvcl, kernel, program_cases  # noqa: F401  (importing registers their cases)
from bench.procs import PYTHON, CaseError
from bench.registry import CASES, Config, Record, Skip, select, summarize

OPTIONAL_CASE_MODULES = ("bench.pyvcl_cases",)


def emit(record: Record) -> None:
    print(json.dumps(record), flush=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_optional_cases() -> list[Record]:
    """Import the optional case modules that exist; error records for those that fail."""
    errors = []
    for mod in OPTIONAL_CASE_MODULES:
        if importlib.util.find_spec(mod) is None:
            continue
        try:
            importlib.import_module(mod)
        except Exception as exc:
            errors.append({"case": mod, "error": f"import failed: {exc!r}"})
    return errors


def run_case(name: str, cfg: Config, rep: int | None) -> tuple[list[Record], str]:
    """Run one case; returns its records and "ok" / "skipped" / "error"."""
    extra: Record = {} if rep is None else {"rep": rep}
    t0 = time.monotonic()
    out: list[Record] = []
    try:
        for rec in CASES[name](cfg):
            rec = {"case": rec.get("case", name), **rec, **extra}
            emit(rec)
            out.append(rec)
    except Skip as exc:
        emit({"case": name, "skipped": str(exc), **extra})
        return out, "skipped"
    except (CaseError, RuntimeError, OSError) as exc:
        emit({"case": name, "error": str(exc), "after_s": round(time.monotonic() - t0, 1), **extra})
        return out, "error"
    except Exception:
        emit({"case": name, "error": traceback.format_exc(limit=8), **extra})
        return out, "error"
    if not out:
        emit({"case": name, "error": "the case yielded no record", **extra})
        return out, "error"
    return out, "ok"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="1 s bulk runs, 2000 round trips")
    ap.add_argument("--cases", metavar="PATTERN", help="comma-separated globs or substrings")
    ap.add_argument("--duration", type=float, help="seconds per bulk run (default 5, quick 1)")
    ap.add_argument("--rounds", type=int, help="ping-pong round trips (default 20000/2000)")
    ap.add_argument("--repeat", type=int, default=1, help="run the case list R times, "
                    "interleaved; the summary takes medians")  # fmt: skip
    ap.add_argument("--list", action="store_true", help="list the case names and exit")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (process outputs)")
    ap.add_argument("--workers", type=int, default=0, help="VPP worker threads (default 0)")
    args = ap.parse_args(argv)

    errors = load_optional_cases()
    names = select(args.cases)
    if args.list:
        print("\n".join(names))
        return 0
    if not names:
        ap.error(f"no case matches {args.cases!r} (see --list)")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    workdir = Path(tempfile.mkdtemp(prefix="pyvcl-bench-"))
    cfg = Config(
        workdir=workdir,
        duration=args.duration or (1.0 if args.quick else 5.0),
        quick=args.quick,
        rtt_rounds=args.rounds or (2000 if args.quick else 20000),
        workers=args.workers,
    )
    emit(
        {
            "run": {
                "python": platform.python_version(),
                "interpreter": PYTHON,
                "nproc": os.cpu_count(),
                "cpu": cpu_model(),
                "kernel": platform.release(),
                "loadavg": os.getloadavg(),
                "vpp": cfg.vpp_version(),
                "vpp_startup": "private instance, hs_apps plugin, poll-sleep-usec 10, "
                f"{args.workers} worker(s)",
                "duration_s": cfg.duration,
                "rtt_rounds": cfg.rtt_rounds,
                "repeat": args.repeat,
                "cases": names,
            }
        }
    )
    for rec in errors:
        emit(rec)
    records: list[Record] = []
    status: dict[str, str] = {}
    keep = args.keep
    try:
        for rep in range(args.repeat):
            for name in names:
                if status.get(name) == "skipped":
                    continue
                recs, st = run_case(name, cfg, rep if args.repeat > 1 else None)
                records += recs
                if status.get(name) != "error":
                    status[name] = st
    finally:
        cfg.close()
        summary: dict[str, Any] = summarize(records)
        summary["loadavg_at_end"] = os.getloadavg()
        failed = sorted(n for n, st in status.items() if st == "error")
        if failed:
            summary["errors"] = failed
            keep = True
        if keep:
            summary["workdir"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        emit(summary)
    return 1 if errors or any(st == "error" for st in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
