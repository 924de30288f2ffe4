"""The fuzz harness (pyvcl.testing.fuzz): its verdicts, a short run over every target, and the
saved findings replayed as regression tests.

The long run is a command (docs/fuzzing.md): ``python -m pyvcl.testing.fuzz --inputs 200000``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import pytest

from pyvcl.testing.fuzz.mutate import JSON_SPACE, Mutation, Write, generate, summary
from pyvcl.testing.fuzz.runner import (
    FUZZ_TARGETS,
    Finding,
    Limits,
    Result,
    execute,
    fuzz,
    input_mutation,
    make_target,
    minimise,
    replay,
)
from pyvcl.testing.fuzz.targets import default_snapshot_dir

from .shared_data import OWN

FINDINGS = Path(__file__).parent / "fuzz_findings"
SHORT_RUN = 120  # inputs per target
SHORT_SEED = 20261204
TEST_LIMITS = Limits(timeout=2.0)  # seconds per input; the inputs take milliseconds


def _selftest(action: int, spare: int = 0) -> Mutation:
    return Mutation(
        [
            Write("meta", 0, bytes([action]), "meta.action"),
            Write("meta", 1, bytes([spare]), "meta.spare"),
        ]
    )


def _run_selftest(*mutations: Mutation, limits: Limits = TEST_LIMITS) -> list[Result]:
    tasks = [
        {"target": "selftest", "i": k, "mutation": m.to_json()} for k, m in enumerate(mutations)
    ]
    return execute(tasks, limits)


# -- the runner's verdicts ------------------------------------------------------------------------
def test_each_verdict_goes_to_the_input_that_caused_it() -> None:
    """A batch survives a crash and a hang and still judges every input exactly once."""
    actions = [0, 4, 1, 5, 3, 2, 0, 6]
    results = _run_selftest(*map(_selftest, actions), limits=Limits(timeout=1.0, memory=1 << 30))
    assert [r.index for r in results] == list(range(len(actions)))
    assert [r.verdict for r in results] == [
        "ok",
        "bug",
        "crash",
        "pyvcl",
        "leak",
        "hang",
        "ok",
        "bug",
    ]
    assert results[1].detail.startswith("KeyError")
    assert "SIGABRT" in results[2].detail
    assert results[7].detail.startswith("MemoryError")


def test_minimise_keeps_only_the_write_that_matters() -> None:
    mutation = Mutation(
        [
            Write("meta", 1, b"\x07", "meta.spare"),
            Write("meta", 0, b"\x04", "meta.action"),
            Write("meta", 2, b"\x09", "meta.spare"),
        ]
    )
    (found,) = _run_selftest(mutation)
    smaller = minimise("selftest", mutation, found.signature(), TEST_LIMITS)
    assert [w.field for w in smaller.writes] == ["meta.action"]


def test_inputs_are_a_function_of_target_seed_and_index() -> None:
    target = make_target("mq")
    first = [input_mutation(target, 7, i).to_json() for i in range(20)]
    assert first == [input_mutation(target, 7, i).to_json() for i in range(20)]
    assert len({json.dumps(m) for m in first}) > 15
    assert first != [input_mutation(target, 8, i).to_json() for i in range(20)]


def test_mutations_write_whole_declared_fields() -> None:
    target = make_target("fifo")
    layout = target.template.layout
    by_offset = {(f.space, f.offset): f.size for f in layout.fields}
    rng = random.Random(1)
    for _ in range(200):
        for w in generate(rng, layout, target.template.spaces).writes:
            assert w.space != JSON_SPACE
            if w.field != "flip":
                assert by_offset[(w.space, w.offset)] == len(w.data), w


# -- a short run -------------------------------------------------------------------------------
def _family(signature: str) -> str:
    """A finding's signature without line numbers (which move as the code around them does)."""
    return re.sub(r":\d+ ", " ", signature)


def _open_families() -> set[str]:
    """Bugs found before and not fixed yet: the saved findings marked ``open``."""
    entries = [json.loads(p.read_text()) for p in sorted(FINDINGS.glob("*.json"))]
    return {_family(e["signature"]) for e in entries if e.get("open")}


@pytest.fixture(scope="module")
def short_run() -> tuple[dict[str, dict[str, int]], list[Finding]]:
    # The snapshot target mutates ../shared's snapshot when present, else one of the project's.
    limits = TEST_LIMITS
    if default_snapshot_dir() is None:
        limits = dataclasses.replace(limits, snapshots=str(OWN / "vpp-v26.06" / "snapshots"))
    names = list(FUZZ_TARGETS)
    return fuzz(names, SHORT_RUN * len(names), SHORT_SEED, 2, limits, do_minimise=False)


@pytest.mark.parametrize("target", FUZZ_TARGETS)
def test_short_run_finds_nothing_new(
    short_run: tuple[dict[str, dict[str, int]], list[Finding]], target: str
) -> None:
    """No bug, crash, hang or leak but those of open findings (tests/fuzz_findings, below)."""
    counts, findings = short_run
    assert target in counts
    known = _open_families()
    new = [
        f"{f.result.signature()}: {f.result.detail} {summary(f.mutation)}"
        for f in findings
        if f.result.target == target and _family(f.result.signature()) not in known
    ]
    assert not new
    assert sum(counts[target].values()) == SHORT_RUN
    assert counts[target]["pyvcl"] > 0, "no input reached a pyvcl check: the mutations miss"


# -- saved findings are regression tests -----------------------------------------------------------
def _findings() -> list[Path]:
    return sorted(FINDINGS.glob("*.json"))


def _replayable(path: Path) -> bool:
    target = json.loads(path.read_text())["target"]
    return target != "snapshot" or default_snapshot_dir() is not None


@pytest.fixture(scope="module")
def replayed() -> dict[Path, Result]:
    paths = [p for p in _findings() if _replayable(p)]
    return dict(zip(paths, replay(paths, TEST_LIMITS), strict=True))


def _finding_param(path: Path) -> object:
    entry = json.loads(path.read_text())
    open_bug = entry.get("open")
    marks = [pytest.mark.xfail(strict=True, reason=open_bug)] if open_bug else []
    return pytest.param(path, marks=marks, id=path.stem)


@pytest.mark.parametrize("path", [_finding_param(p) for p in _findings()])
def test_finding_is_fixed(replayed: dict[Path, Result], path: Path) -> None:
    if not _replayable(path):
        pytest.skip(
            "a mutation of ../shared's snapshot ct-client-connected: replayable with it only"
        )
    r = replayed[path]
    assert r.verdict in ("ok", "pyvcl"), f"{r.verdict}: {r.detail} at {r.where}"


def test_a_clean_run_still_writes_its_summary(tmp_path: Path) -> None:
    """--out DIR gets summary.json even when the run saved no finding (it used to fail at the
    very end of a clean 200 000-input run, losing the counts)."""
    out = tmp_path / "run"
    counts, findings = fuzz(["fifo"], 20, SHORT_SEED, 1, TEST_LIMITS, out=out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == counts and summary["inputs"] == 20
    assert findings == [] and not (out / "findings").exists()
