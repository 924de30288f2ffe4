"""The program-level bench cases (bench/program_cases.py): listed, runnable on the kernel, the
`pyvcl run` variants built as documented, and their ratios in the summary.  No timing is
asserted (figures belong to bench/ runs); each test takes a second or two."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import program_cases
from bench.registry import Config, summarize

ROOT = Path(__file__).resolve().parents[1]

# Stands in for `pyvcl run` until the real command is on this branch: reports its options on
# stderr (the case's "notice"), then runs the script as `python` would, on kernel sockets.
FAKE_RUN = """\
import os, runpy, sys
args = sys.argv[1:]
sapi = os.environ.get("VCL_VPP_SAPI_SOCKET")
print(f"fake-run sapi={sapi} " + " ".join(args), file=sys.stderr, flush=True)
while args[0].startswith("--"):
    if args.pop(0) in ("--app-socket", "--vcl-config"):
        args.pop(0)
sys.argv = args
runpy.run_path(args[0], run_name="__main__")
"""


def bench_run(*args: str) -> list[dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_list_shows_every_program_over_every_stack() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    listed = set(proc.stdout.split())
    for kind, (variant, _) in program_cases.KINDS.items():
        for stack in program_cases.STACKS:
            assert f"{kind}/{stack.name}/{variant}" in listed
    assert "prog-echo/pyvcl-run-busy-ct/64B" in listed
    assert "prog-echo/pyvcl-run-busy-tcp/64B" in listed


def test_kernel_case_gives_a_record_and_run_case_a_record_or_its_skip() -> None:
    cases = "prog-sendall/kernel/1KiB,prog-sendall/pyvcl-run-fallback/1KiB"
    records = bench_run("--quick", "--duration", "0.3", "--cases", cases)
    by_case = {r["case"]: r for r in records if "case" in r}
    kernel = by_case["prog-sendall/kernel/1KiB"]
    assert isinstance(kernel["calls_per_s"], float) and kernel["calls_per_s"] > 0
    assert kernel["bytes"] == kernel["calls"] * 1024  # type: ignore[operator]
    assert kernel["server"] == {"received": kernel["bytes"]}
    fallback = by_case["prog-sendall/pyvcl-run-fallback/1KiB"]
    if program_cases.pyvcl_run_available():
        assert "calls_per_s" in fallback, fallback
        pair = "prog-sendall/pyvcl-run-fallback/1KiB vs prog-sendall/kernel/1KiB"
        assert pair in records[-1]["summary"]  # type: ignore[operator]
    else:
        assert fallback["skipped"] == "pyvcl run not available"


def test_fallback_variant_runs_the_program_under_run_pointed_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake_run.py"
    fake.write_text(FAKE_RUN)
    monkeypatch.setattr(program_cases, "PYVCL_RUN", (str(fake),))
    monkeypatch.setattr(program_cases, "_run_available", True)
    cfg = Config(workdir=tmp_path, duration=0.2, rtt_rounds=200)
    stack = next(s for s in program_cases.STACKS if s.via == "fallback")
    try:
        rec = program_cases.KINDS["prog-echo"][1](cfg, stack, "prog-echo/test/64B")
    finally:
        cfg.close()
    assert rec["rounds"] == 200 and rec["p50_us"] > 0
    assert rec["server"] == {"received": (200 + 20) * 64}
    notice = rec["notice"]
    assert notice.startswith("fake-run sapi=/"), notice
    assert notice.split()[2].endswith("socket_loops.py"), notice  # no option: nothing named
    assert not Path(notice.split()[1].removeprefix("sapi=")).exists()  # where no VPP answers


def test_summary_compares_run_with_ldp_of_its_topology_and_fallback_with_kernel() -> None:
    values = {
        "kernel": 100.0,
        "pyvcl-run-fallback": 96.0,
        "ldp-ct": 50.0,
        "pyvcl-run-ct": 60.0,
        "ldp-tcp": 40.0,
        "pyvcl-run-tcp": 20.0,
    }
    recs = [{"case": f"prog-echo/{s}/64B", "p50_us": v} for s, v in values.items()]
    recs.append({"case": "prog-echo/pyvcl-run-busy-ct/64B", "p50_us": 30.0})
    summary = summarize(recs)["summary"]

    def ratio(a: str, b: str) -> float:
        return float(summary[f"prog-echo/{a}/64B vs prog-echo/{b}/64B"])

    assert ratio("pyvcl-run-fallback", "kernel") == 0.96
    assert ratio("pyvcl-run-ct", "ldp-ct") == 1.2
    assert ratio("pyvcl-run-tcp", "ldp-tcp") == 0.5
    assert ratio("pyvcl-run-ct", "kernel") == 0.6
    assert ratio("pyvcl-run-busy-ct", "pyvcl-run-ct") == 0.5
    assert "prog-echo/pyvcl-run-ct/64B vs prog-echo/ldp-tcp/64B" not in summary
    assert "prog-echo/pyvcl-run-fallback/64B vs prog-echo/ldp-ct/64B" not in summary


@pytest.mark.vpp
def test_ldp_echo_runs_on_vpp(tmp_path: Path) -> None:
    from bench.registry import Skip

    cfg = Config(workdir=tmp_path, duration=0.2, rtt_rounds=200)
    stack = next(s for s in program_cases.STACKS if s.name == "ldp-ct")
    try:
        rec = program_cases.KINDS["prog-echo"][1](cfg, stack, "prog-echo/ldp-ct/64B")
    except Skip as exc:
        pytest.skip(str(exc))
    finally:
        cfg.close()
    assert rec["rounds"] == 200 and rec["p50_us"] > 0
    assert rec["listener_in_vpp"] is True, rec
