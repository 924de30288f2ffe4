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
from typing import Any

import pytest

from pyvcl.testing.fuzz.mutate import JSON_SPACE, Mutation, Write, generate, summary
from pyvcl.testing.fuzz.runner import (
    FIXTURE_KEY,
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
from pyvcl.testing.fuzz.targets import SnapshotTarget, Template, default_snapshot_dir

from .shared_data import OWN, cross_check, shared_path

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
# A snapshot finding made on ../shared's snapshot also carries its form on one of the project's
# own (``fixture``: the same field of the same struct, corrupted the same way), which every clone
# replays; ../shared's original replays too where it is present (a cross-check).
OWN_SNAPSHOTS = OWN / "vpp-v26.06" / "snapshots"
SHARED_SNAPSHOT = "vpp-v26.06", "snapshots", f"{SnapshotTarget.stem}.json"


def _findings() -> list[Path]:
    return sorted(FINDINGS.glob("*.json"))


def _snapshot_findings() -> list[Path]:
    return [p for p in _findings() if json.loads(p.read_text())["target"] == "snapshot"]


@pytest.fixture(scope="module")
def replayed() -> dict[Path, Result]:
    paths = _findings()
    return dict(zip(paths, replay(paths, TEST_LIMITS, fixtures=OWN_SNAPSHOTS), strict=True))


def _finding_param(path: Path) -> object:
    entry = json.loads(path.read_text())
    open_bug = entry.get("open")
    marks = [pytest.mark.xfail(strict=True, reason=open_bug)] if open_bug else []
    return pytest.param(path, marks=marks, id=path.stem)


@pytest.mark.parametrize("path", [_finding_param(p) for p in _findings()])
def test_finding_is_fixed(replayed: dict[Path, Result], path: Path) -> None:
    r = replayed[path]
    assert r.verdict in ("ok", "pyvcl"), f"{r.verdict}: {r.detail} at {r.where}"


def _own_template(stem: str) -> Template:
    return make_target("snapshot", str(OWN_SNAPSHOTS / stem)).template


def _leaf(field: str) -> str:
    """A field's name without the instance it is in: ``regions.4.bin_offset`` -> ``bin_offset``,
    ``region[4].ring[1].elsize`` -> ``ring[1].elsize``."""
    if field.startswith(("regions.", "segments.")):
        return field.split(".", 2)[2]
    return field.split(".", 1)[1]


@pytest.mark.parametrize("path", _snapshot_findings(), ids=lambda p: p.stem)
def test_snapshot_finding_has_its_form_on_our_snapshot(path: Path) -> None:
    """The ``fixture`` form writes the same bytes into the same field of the same struct as
    the original, at the place that field has in our snapshot."""
    entry = json.loads(path.read_text())
    fixture = entry[FIXTURE_KEY]
    ours = Mutation.from_json(fixture["mutation"]).writes
    theirs = Mutation.from_json(entry["mutation"]).writes
    assert [(_leaf(w.field), w.space, w.data) for w in ours] == [
        (_leaf(w.field), w.space, w.data) for w in theirs
    ]
    assert fixture["writes"] == summary(Mutation(ours))
    template = _own_template(fixture["snapshot"])
    fields = {(f.space, f.offset, f.size): f.name for f in template.layout.fields}
    json_paths = {p for p, _ in template.layout.json_fields}
    for w in ours:
        if w.space == JSON_SPACE:
            assert w.field in json_paths
        else:
            assert fields.get((w.space, w.offset, len(w.data))) == w.field


def _part(meta: dict[str, Any], field: str) -> list[str]:
    """What the region or segment a field lies in is: a region's kind and role; a segment's
    queues (the app's first segment holds the app's, VPP's segment VPP's, others none)."""
    m = re.match(r"(regions|segments)\.(\d+)\.|region\[(\d+)\]\.", field)
    assert m, field
    if m.group(1) == "segments":
        index = meta["segments"][int(m.group(2))]["index"]
        mqs = [r for r in meta["regions"] if r["what"] == "svm_msg_q" and r["segment"] == index]
        return ["segment", *sorted(r.get("role", "") for r in mqs)]
    region = meta["regions"][int(m.group(2) or m.group(3))]
    return ["region", region["what"], region.get("role", "")]


@pytest.mark.parametrize("path", _snapshot_findings(), ids=lambda p: p.stem)
def test_snapshot_finding_form_is_where_it_was_put(path: Path) -> None:
    """Each write of the ``fixture`` form is still in the part of our snapshot it was derived
    for (``parts``): a re-recorded snapshot whose regions moved must have its forms re-derived."""
    fixture = json.loads(path.read_text())[FIXTURE_KEY]
    own = json.loads((OWN_SNAPSHOTS / f"{fixture['snapshot']}.json").read_text())
    assert [_part(own, w["field"]) for w in fixture["mutation"]] == fixture["parts"]


@cross_check(*SHARED_SNAPSHOT)
@pytest.mark.parametrize("path", _snapshot_findings(), ids=lambda p: p.stem)
def test_snapshot_finding_form_is_in_the_same_part(path: Path) -> None:
    """Each write of the ``fixture`` form lies in the same kind of region (or segment) of our
    snapshot as the original's in ../shared's."""
    entry = json.loads(path.read_text())
    shared = json.loads(shared_path(*SHARED_SNAPSHOT).read_text())
    theirs = [_part(shared, w["field"]) for w in entry["mutation"]]
    assert entry[FIXTURE_KEY]["parts"] == theirs


@cross_check(*SHARED_SNAPSHOT)
@pytest.mark.parametrize("path", _snapshot_findings(), ids=lambda p: p.stem)
def test_finding_is_fixed_on_the_shared_snapshot(path: Path) -> None:
    """The original mutation, on ../shared's snapshot where it was found."""
    (r,) = replay([path], TEST_LIMITS)
    assert r.verdict in ("ok", "pyvcl"), f"{r.verdict}: {r.detail} at {r.where}"


def test_a_clean_run_still_writes_its_summary(tmp_path: Path) -> None:
    """--out DIR gets summary.json even when the run saved no finding (it used to fail at the
    very end of a clean 200 000-input run, losing the counts)."""
    out = tmp_path / "run"
    counts, findings = fuzz(["fifo"], 20, SHORT_SEED, 1, TEST_LIMITS, out=out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == counts and summary["inputs"] == 20
    assert findings == [] and not (out / "findings").exists()
