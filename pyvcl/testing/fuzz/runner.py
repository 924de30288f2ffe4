"""Running inputs in worker processes, judging them, and minimising what they find.

The parent (`execute`) writes a batch of inputs to a file and starts a worker process
(``python -m pyvcl.testing.fuzz --child``) under an address-space limit, reading one verdict
line per input.  A worker that dies attributes a *crash* to the input after the last one it
answered; one that answers nothing for ``timeout`` seconds is a *hang* for that input (its
Python stacks are dumped through faulthandler first, then it is killed).  Either way a fresh
worker goes on with the rest of the batch, so every verdict belongs to exactly one input.

In the worker (`child_main`) each input's verdict is one of `VERDICTS`: ``ok``; ``pyvcl`` (a
pyvcl error escaped: the expected answer to hostile input); ``bug`` (any other exception);
``leak`` (more fds, shared mappings or threads after the target cleaned up than before).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import random
import re
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ...errors import VclError
from .mutate import Mutation, generate, summary
from .targets import PathErrors, Target

VERDICTS = ("ok", "pyvcl", "bug", "leak", "crash", "hang", "harness")
FINE = frozenset({"ok", "pyvcl"})
DEFAULT_TIMEOUT = 5.0  # seconds one input may take (every blocking call in a target is short)
STALL_LIMIT = 0.5  # MessageQueue.stall_limit in the fuzz children
DEFAULT_MEMORY = 2 << 30  # RLIMIT_AS of a worker process
STARTUP = 15.0  # extra seconds for a worker's imports and the target's template
BATCH = 400  # inputs per worker process
STACK_SHOWN = 12  # pyvcl frames a hang's or crash's detail shows
_HERE = str(Path(__file__).resolve().parent)
_PYVCL = str(Path(__file__).resolve().parents[2])


def target_classes() -> dict[str, type[Target]]:
    from .appsock import AttachTarget, WorkerTarget
    from .targets import FifoTarget, MqTarget, SegmentTarget, SelfTestTarget, SnapshotTarget

    classes: list[type[Target]] = [
        SegmentTarget,
        MqTarget,
        FifoTarget,
        SnapshotTarget,
        AttachTarget,
        WorkerTarget,
        SelfTestTarget,
    ]
    return {c.name: c for c in classes}


FIXTURE_KEY = "fixture"
"""A saved finding's key for its form on one of the project's own snapshots (docs/fuzzing.md)."""

FUZZ_TARGETS = ("segment", "mq", "fifo", "snapshot", "attach", "worker")
"""What a fuzz run covers by default (``selftest`` only checks the runner)."""


def make_target(name: str, snapshots: str | None = None) -> Target:
    from .targets import SnapshotTarget, default_snapshot_dir

    target = target_classes()[name]()
    if isinstance(target, SnapshotTarget):
        target.directory = Path(snapshots) if snapshots else default_snapshot_dir()
    return target


def input_mutation(target: Target, seed: int, index: int) -> Mutation:
    """Input ``index`` of ``seed`` for ``target``: the same on every machine and Python."""
    rng = random.Random(f"{target.name}:{seed}:{index}")
    return generate(rng, target.template.layout, target.template.spaces)


# -- the worker process -------------------------------------------------------------------------
def _resources() -> tuple[int, int, int]:
    """(open fds, shared mappings, threads): what a target must give back."""
    fds = len(os.listdir("/proc/self/fd"))
    with open("/proc/self/maps") as f:
        shared = sum(1 for line in f if "memfd:" in line or "/dev/zero" in line)
    return fds, shared, threading.active_count()


def _where(error: BaseException | None) -> str:
    """The innermost frame in pyvcl proper (not this harness) where ``error`` surfaced, or
    where the error it was raised while handling did (a harness cleanup that fails because
    pyvcl left a buffer exported)."""
    while error is not None:
        place = ""
        for frame in traceback.extract_tb(error.__traceback__):
            if frame.filename.startswith(_PYVCL) and not frame.filename.startswith(_HERE):
                rel = os.path.relpath(frame.filename, Path(_PYVCL).parent)
                place = f"{rel}:{frame.lineno} {frame.name}"
        if place:
            return place
        error = error.__context__
    return ""


def judge(target: Target, mutation: Mutation) -> tuple[str, str, str]:
    """(verdict, detail, where) of one input, run in this process."""
    before = _resources()
    verdict, detail, where = "ok", "", ""
    PathErrors.count = 0
    try:
        target.run(mutation)
        if PathErrors.count:
            verdict = "pyvcl"
    except VclError as e:
        verdict, detail = "pyvcl", f"{type(e).__name__}: {e}"
    except Exception as e:  # the point: anything else escaping is a bug
        verdict, detail, where = "bug", f"{type(e).__name__}: {e}"[:300], _where(e)
        del e
    after = _resources()
    if after != before:
        gc.collect()
        time.sleep(0.01)  # a thread the target joined with a timeout may be just ending
        after = _resources()
    if verdict in FINE and any(a > b for a, b in zip(after, before, strict=True)):
        verdict = "leak"
        detail = "fds {} -> {}, shared mappings {} -> {}, threads {} -> {}".format(
            *(x for pair in zip(before, after, strict=True) for x in pair)
        )
    return verdict, detail, where


def child_main(stdin: IO[str], stdout: IO[str]) -> None:
    """Answer one JSON line per input line: ``{"i", "verdict", "detail", "where"}``, after a
    ``{"ready": target}`` line once each target is built and warmed up."""
    import faulthandler

    faulthandler.enable(sys.stderr)
    faulthandler.register(signal.SIGUSR1, sys.stderr, all_threads=True)
    # A queue whose peer stops consuming, or a mutex held by a frozen peer, ends in
    # PeerStalled after stall_limit (5 s by default): well inside an input's timeout here,
    # so that only a wait with no end at all is judged a hang.
    from ...mq.queue import MessageQueue

    MessageQueue.stall_limit = STALL_LIMIT
    targets: dict[tuple[str, str | None], Target] = {}
    for line in stdin:
        task = json.loads(line)
        name, snapshots = task["target"], task.get("snapshots")
        target = targets.get((name, snapshots))
        if target is None:
            target = targets[name, snapshots] = make_target(name, snapshots)
            verdict, detail, where = judge(target, Mutation())  # warm up: lazy one-time setup
            if verdict not in FINE:
                stdout.write(
                    json.dumps(
                        {"i": task["i"], "verdict": "harness", "detail": detail, "where": where}
                    )
                    + "\n"
                )
                stdout.flush()
                return
            stdout.write(json.dumps({"ready": name}) + "\n")  # the per-input clock starts now
            stdout.flush()
        if "mutation" in task:
            mutation = Mutation.from_json(task["mutation"])
        else:
            mutation = input_mutation(target, task["seed"], task["i"])
        verdict, detail, where = judge(target, mutation)
        stdout.write(
            json.dumps({"i": task["i"], "verdict": verdict, "detail": detail, "where": where})
            + "\n"
        )
        stdout.flush()


# -- the parent -----------------------------------------------------------------------------------
@dataclass
class Result:
    target: str
    index: int
    verdict: str
    detail: str = ""
    where: str = ""
    seed: int | None = None
    mutation: Mutation | None = None  # given for replays; else regenerated from the seed

    def signature(self) -> str:
        """What makes two findings the same bug: target, verdict, exception type or signal,
        and where in pyvcl it surfaced."""
        kind = self.detail.split(":", 1)[0] if self.verdict == "bug" else ""
        if self.verdict == "crash":
            kind = self.detail.split(";", 1)[0]
        return f"{self.target} {self.verdict} {kind} {self.where}".strip()


@dataclass
class Limits:
    timeout: float = DEFAULT_TIMEOUT
    memory: int = DEFAULT_MEMORY
    snapshots: str | None = None


def _limit_memory(memory: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _pyvcl_frames(dump: str) -> list[str]:
    """From a faulthandler dump, the pyvcl frames (not this harness's) of the thread that was
    running, innermost first."""
    for block in dump.split("\n\n"):
        if "most recent call first" not in block or "Current thread" not in block:
            continue
        frames = []
        for m in re.finditer(r'File "([^"]+)", line (\d+) in (\S+)', block):
            path = m.group(1)
            if path.startswith(_PYVCL) and not path.startswith(_HERE):
                rel = os.path.relpath(path, Path(_PYVCL).parent)
                frames.append(f"{rel}:{m.group(2)} {m.group(3)}")
        return frames
    return []


def execute(tasks: Sequence[dict[str, Any]], limits: Limits) -> list[Result]:
    """Run ``tasks`` (``{"target", "i", "seed"}`` or ``{"target", "i", "mutation"}``, with an
    optional ``"snapshots"`` that overrides ``limits.snapshots`` for that task) in worker
    processes; one `Result` per task, in order."""
    results: list[Result] = []
    todo = list(tasks)
    while todo:
        batch, todo = todo[:BATCH], todo[BATCH:]
        while batch:
            done, rest = _run_worker(batch, limits)
            results += done
            batch = rest
    return results


def _run_worker(
    batch: list[dict[str, Any]], limits: Limits
) -> tuple[list[Result], list[dict[str, Any]]]:
    """One worker over ``batch``: the results it gave (plus the crash/hang that ended it) and
    the tasks it did not reach."""
    done: list[Result] = []
    with tempfile.TemporaryFile("w+") as inputs, tempfile.TemporaryFile("w+") as errors:
        for task in batch:
            # a task may name its own snapshot (a finding re-derived on another recording)
            inputs.write(json.dumps({"snapshots": limits.snapshots, **task}) + "\n")
        inputs.seek(0)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(Path(_PYVCL).parent), os.environ.get("PYTHONPATH")])
            ),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyvcl.testing.fuzz", "--child"],
            stdin=inputs,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
            preexec_fn=lambda: _limit_memory(limits.memory),
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + limits.timeout + STARTUP
        try:
            while len(done) < len(batch):
                ready, _, _ = select.select(
                    [proc.stdout], [], [], max(0.0, deadline - time.monotonic())
                )
                if not ready:
                    proc.send_signal(signal.SIGUSR1)  # faulthandler: where is it stuck?
                    time.sleep(0.5)
                    proc.kill()
                    proc.wait()
                    errors.seek(0)
                    frames = _pyvcl_frames(errors.read()) or [""]
                    stack = " < ".join(frames[:STACK_SHOWN])
                    detail = f"no answer within {limits.timeout} s; {stack}"
                    done.append(_result(batch[len(done)], "hang", detail, frames[0]))
                    break
                line = proc.stdout.readline()
                if not line:
                    rc = proc.wait()
                    errors.seek(0)
                    dump = errors.read()
                    task = batch[len(done)]
                    how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
                    tail = " | ".join(dump.strip().splitlines()[-3:])[-300:]
                    frames = _pyvcl_frames(dump) or [""]
                    stack = " < ".join(frames[:STACK_SHOWN])
                    done.append(_result(task, "crash", f"{how}; {stack or tail}", frames[0]))
                    break
                answer = json.loads(line)
                deadline = time.monotonic() + limits.timeout
                if "ready" in answer:
                    continue
                done.append(
                    _result(batch[len(done)], answer["verdict"], answer["detail"], answer["where"])
                )
                if answer["verdict"] == "harness":
                    raise RuntimeError(
                        f"fuzz target {batch[0]['target']} is broken: {answer['detail']}"
                    )
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            proc.stdout.close()
    return done, batch[len(done) :]


def _result(task: dict[str, Any], verdict: str, detail: str, where: str) -> Result:
    mutation = Mutation.from_json(task["mutation"]) if "mutation" in task else None
    return Result(task["target"], task["i"], verdict, detail, where, task.get("seed"), mutation)


# -- minimising -----------------------------------------------------------------------------------
def minimise(target: str, mutation: Mutation, signature: str, limits: Limits) -> Mutation:
    """Drop writes while the finding keeps its signature: the fewest writes that reproduce."""
    current = mutation
    while len(current.writes) > 1:
        candidates = [
            Mutation(current.writes[:j] + current.writes[j + 1 :])
            for j in range(len(current.writes))
        ]
        tasks = [
            {"target": target, "i": j, "mutation": c.to_json()} for j, c in enumerate(candidates)
        ]
        kept = [r for r in execute(tasks, limits) if r.signature() == signature]
        if not kept:
            break
        current = candidates[kept[0].index]
    return current


# -- a whole run ----------------------------------------------------------------------------------
@dataclass
class Finding:
    result: Result
    mutation: Mutation
    minimised: Mutation
    count: int = 1
    indices: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {
            "target": r.target,
            "seed": r.seed,
            "index": r.index,
            "verdict": r.verdict,
            "detail": r.detail,
            "where": r.where,
            "signature": r.signature(),
            "count": self.count,
            "writes": summary(self.minimised),
            "mutation": self.minimised.to_json(),
            "original_mutation": self.mutation.to_json(),
        }


def fuzz(
    targets: Iterable[str],
    inputs: int,
    seed: int,
    jobs: int,
    limits: Limits,
    out: Path | None = None,
    do_minimise: bool = True,
    progress: IO[str] | None = None,
) -> tuple[dict[str, dict[str, int]], list[Finding]]:
    """``inputs`` inputs spread evenly over ``targets``; counts per target and verdict, and
    one `Finding` per signature (the first input that showed it, minimised)."""
    names = list(targets)
    tasks = [
        {"target": name, "i": i, "seed": seed}
        for name in names
        for i in range(inputs // len(names) + (1 if names.index(name) < inputs % len(names) else 0))
    ]
    chunks = [tasks[k : k + BATCH] for k in range(0, len(tasks), BATCH)]
    results: list[list[Result]] = [[] for _ in chunks]
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))  # each thread drives one worker process
    try:
        futures = {pool.submit(execute, chunk, limits): k for k, chunk in enumerate(chunks)}
        answered = 0
        for future in as_completed(futures):
            results[futures[future]] = future.result()  # a broken target raises here
            answered += len(results[futures[future]])
            if progress is not None:
                progress.write(
                    f"{answered}/{len(tasks)} inputs, {time.monotonic() - started:.0f} s\n"
                )
                progress.flush()
    finally:
        pool.shutdown(cancel_futures=True)
    counts: dict[str, dict[str, int]] = {n: dict.fromkeys(VERDICTS, 0) for n in names}
    by_signature: dict[str, Finding] = {}
    for r in (r for chunk in results for r in chunk):
        counts[r.target][r.verdict] += 1
        if r.verdict in FINE:
            continue
        sig = r.signature()
        if sig in by_signature:
            by_signature[sig].count += 1
            continue
        mutation = input_mutation(make_target(r.target, limits.snapshots), seed, r.index)
        by_signature[sig] = Finding(r, mutation, mutation)
    findings = list(by_signature.values())
    for f in findings:
        if do_minimise:
            f.minimised = minimise(f.result.target, f.mutation, f.result.signature(), limits)
        if out is not None:
            save_finding(f, out / "findings")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)  # a clean run saves no finding to make it
        (out / "summary.json").write_text(
            json.dumps(
                {
                    "seed": seed,
                    "inputs": inputs,
                    "counts": counts,
                    "findings": [f.to_json() for f in findings],
                },
                indent=1,
            )
        )
    return counts, findings


def save_finding(finding: Finding, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    entry = finding.to_json()
    digest = hashlib.sha1(entry["signature"].encode()).hexdigest()[:10]
    path = directory / f"{finding.result.target}-{finding.result.verdict}-{digest}.json"
    path.write_text(json.dumps(entry, indent=1) + "\n")
    return path


def replay(paths: Sequence[Path], limits: Limits, *, fixtures: Path | None = None) -> list[Result]:
    """Run saved findings (their minimised mutation) again; one `Result` each.

    With ``fixtures`` (a folder of snapshots: the project's own), a finding that carries a
    ``fixture`` form runs that instead: the same field corrupted the same way, in the snapshot
    of that folder it names (a finding made on the shared data's snapshot replays without it).
    """
    tasks = []
    for k, p in enumerate(paths):
        entry = json.loads(p.read_text())
        task = {"target": entry["target"], "i": k, "mutation": entry["mutation"]}
        fixture = entry.get(FIXTURE_KEY)
        if fixtures is not None and fixture is not None:
            task["mutation"] = fixture["mutation"]
            task["snapshots"] = str(fixtures / fixture["snapshot"])
        tasks.append(task)
    return execute(tasks, limits)
