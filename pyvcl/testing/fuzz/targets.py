"""The fuzz targets: each builds one structure as VPP would, applies a `Mutation`, and runs
every pyvcl path that reads it.

A target's `Target.template` (built once per process) gives the clean bytes of each space and
the `Layout` of fields to mutate; `Target.run` rebuilds the structure from the template with
the mutation applied, exercises it, and releases everything it made (the runner checks that
no fd or shared mapping outlives it).  An exception of pyvcl's own classes is the expected
answer to hostile input; anything else escaping `run` is a bug.
"""

from __future__ import annotations

import contextlib
import functools
import json
import mmap
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ...fifo import Fifo
from ...fifo.chunks import MIN_CHUNK_SIZE, ChunkAllocator
from ...mq.events import encode_ctrl, encode_io
from ...mq.queue import MessageQueue
from ...segment import Segment
from ...shmview import (
    describe_fifo,
    describe_mq,
    describe_segment,
    describe_slice,
    discover_vpp_mqs,
)
from ...snapshot import describe_snapshot, find_snapshots, read_blob, snapshot_files
from ...wire.enums import MqRing, SessionEvent
from ...wire.fifo import SVM_FIFO_CHUNK, SVM_FIFO_SHARED
from ...wire.mq import (
    PTHREAD_COND_FIELDS,
    PTHREAD_MUTEX_FIELDS,
    SVM_MSG_Q_MSG,
    SVM_MSG_Q_RING_SHARED,
    SVM_MSG_Q_SHARED,
    SVM_MSG_Q_SHARED_QUEUE,
)
from ...wire.segment import FIFO_SEGMENT_HEADER, FIFO_SEGMENT_SLICE, SSVM_SHARED_HEADER
from ...wire.session import CTRL_PAYLOADS, SESSION_EVENT
from ..vppshm import FSH_OFFSET, alloc_fifo, alloc_mq, format_segment, mq_size, session_rings
from .mutate import FieldRef, Layout, Mutation, fields_of

SHORT = 0.02  # seconds: every blocking call a target makes is bounded by this
SHOWN_SLOTS = 8  # handles and slots per queue offered to the mutator
SEG_SPACE = "seg"
META_SPACE = "meta"


@dataclass
class Template:
    spaces: dict[str, bytes]
    layout: Layout
    info: dict[str, Any]  # what the target needs to know about its clean structure


class Target:
    name: ClassVar[str] = ""
    _template: Template | None = None

    @property
    def template(self) -> Template:
        if self._template is None:
            self._template = self.build_template()
        return self._template

    def build_template(self) -> Template:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, mutation: Mutation) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def mutated(self, mutation: Mutation) -> dict[str, bytearray]:
        spaces = {k: bytearray(v) for k, v in self.template.spaces.items()}
        mutation.apply(spaces)
        return spaces


# -- helpers ------------------------------------------------------------------------------------
def _shared_copy(data: bytes | bytearray) -> mmap.mmap:
    """An anonymous MAP_SHARED mapping holding ``data`` (what a segment is, minus the fd)."""
    mm = mmap.mmap(-1, len(data))
    mm[:] = data
    return mm


@contextlib.contextmanager
def _segment(data: bytes | bytearray) -> Iterator[Segment]:
    mm = _shared_copy(data)
    seg: Segment | None = None
    try:
        seg = Segment(mm, name="fuzz")
        yield seg
    finally:
        if seg is not None:
            seg.close()
        mm.close()


class PathErrors:
    """How many paths of the current input ended in a pyvcl error (the runner resets it)."""

    count = 0


def _attempt(fn: Callable[[], Any]) -> None:
    """Run one path; a pyvcl error ends that path only (the runner judges what escapes)."""
    from ...errors import VclError

    try:
        fn()
    except VclError:
        PathErrors.count += 1


def segment_fields(
    data: bytes | bytearray, space: str = SEG_SPACE, base: int = 0
) -> list[FieldRef]:
    """The ssvm header, fifo segment header and slices of a clean segment at ``base``."""
    fsh = base + FSH_OFFSET
    n_slices = int(FIFO_SEGMENT_HEADER["n_slices"].get(data, fsh))
    out = fields_of(SSVM_SHARED_HEADER, space, base) + fields_of(FIFO_SEGMENT_HEADER, space, fsh)
    for i in range(n_slices):
        at = fsh + FIFO_SEGMENT_HEADER.size + i * FIFO_SEGMENT_SLICE.size
        out += fields_of(FIFO_SEGMENT_SLICE, space, at, f"slice[{i}]")
    return out


def mq_fields(data: bytes | bytearray, space: str, mq_m: int, label: str = "mq") -> list[FieldRef]:
    """Every field of the queue at mapping offset ``mq_m``: headers, glibc lock words, the
    handles, ring headers and the event header (and ctrl payload) of every used slot."""
    q = mq_m + SVM_MSG_Q_SHARED.size
    out = fields_of(SVM_MSG_Q_SHARED, space, mq_m, label)
    out += [
        f
        for f in fields_of(SVM_MSG_Q_SHARED_QUEUE, space, q, f"{label}.q")
        if not f.name.endswith((".mutex", ".condvar"))
    ]
    mutex, cond = (q + SVM_MSG_Q_SHARED_QUEUE.offset(n) for n in ("mutex", "condvar"))
    out += fields_of(PTHREAD_MUTEX_FIELDS, space, mutex, f"{label}.q.mutex")
    out += fields_of(PTHREAD_COND_FIELDS, space, cond, f"{label}.q.condvar")
    maxsize = int(SVM_MSG_Q_SHARED_QUEUE["maxsize"].get(data, q))
    handles = q + SVM_MSG_Q_SHARED_QUEUE.size
    # the first handles and the last (a recording's queue may hold thousands)
    for i in sorted({*range(min(maxsize, SHOWN_SLOTS)), maxsize - 1}):
        out += fields_of(
            SVM_MSG_Q_MSG, space, handles + i * SVM_MSG_Q_MSG.size, f"{label}.msg[{i}]"
        )
    ring = handles + maxsize * SVM_MSG_Q_MSG.size
    for r in range(int(SVM_MSG_Q_SHARED["n_rings"].get(data, mq_m))):
        out += fields_of(SVM_MSG_Q_RING_SHARED, space, ring, f"{label}.ring[{r}]")
        nitems = int(SVM_MSG_Q_RING_SHARED["nitems"].get(data, ring))
        elsize = int(SVM_MSG_Q_RING_SHARED["elsize"].get(data, ring))
        slots = ring + SVM_MSG_Q_RING_SHARED.size
        for e in range(min(nitems, SHOWN_SLOTS)):
            slot = slots + e * elsize
            event_type = data[slot]
            if event_type == 0 and e:
                continue
            name = f"{label}.ring[{r}].slot[{e}]"
            out += fields_of(SESSION_EVENT, space, slot, name)
            decl = CTRL_PAYLOADS.get(event_type)
            if r == MqRing.CTRL_EVT and decl is not None:
                out += fields_of(decl, space, slot + SESSION_EVENT.offset("session_index"), name)
        ring = slots + nitems * elsize
    return out


def fifo_fields(
    data: bytes | bytearray, space: str, fsh: int, fifo: int, label: str
) -> list[FieldRef]:
    """The fifo header at fsh-relative ``fifo`` and every chunk header of its chain."""
    out = fields_of(SVM_FIFO_SHARED, space, fsh + fifo, label)
    c, seen = int(SVM_FIFO_SHARED["start_chunk"].get(data, fsh + fifo)), 0
    while c and seen < 16:
        out += fields_of(SVM_FIFO_CHUNK, space, fsh + c, f"{label}.chunk[{seen}]")
        c, seen = int(SVM_FIFO_CHUNK["next"].get(data, fsh + c)), seen + 1
    return out


def _sizes(size: int) -> list[int]:
    return [size, size - FSH_OFFSET, FSH_OFFSET, 1 << 32, MIN_CHUNK_SIZE]


# -- segment: the allocator's free lists and the inspector ---------------------------------------
class SegmentTarget(Target):
    name = "segment"
    size = 1 << 17

    def build_template(self) -> Template:
        buf = bytearray(self.size)
        format_segment(buf, n_slices=2)
        fifos: list[int] = []
        with _segment(buf) as seg:
            alloc = ChunkAllocator(seg)
            alloc.carve_batch(0, 0, 3)
            alloc.carve_batch(1, 1, 2)
            fifos = [alloc_fifo(seg, 0), alloc_fifo(seg, 1)]
            data = bytes(seg.buf)
        fields = segment_fields(data)
        chunks: list[FieldRef] = []
        for i, f in enumerate(fifos):
            fields += fifo_fields(data, SEG_SPACE, FSH_OFFSET, f, f"fifo[{i}]")
        with _segment(data) as seg:
            for s in range(2):
                for fl in range(2):
                    for k, c in enumerate(ChunkAllocator(seg).free_list(s, fl)):
                        chunks += fields_of(
                            SVM_FIFO_CHUNK, SEG_SPACE, FSH_OFFSET + c, f"free[{s}][{fl}][{k}]"
                        )
        layout = Layout(fields + chunks, [(SEG_SPACE, 0, FSH_OFFSET + 1024)], _sizes(self.size))
        return Template({SEG_SPACE: data}, layout, {"fifos": fifos})

    def run(self, mutation: Mutation) -> None:
        spaces = self.mutated(mutation)
        with _segment(spaces[SEG_SPACE]) as seg:
            describe_segment(seg)
            for i in range(min(seg.n_slices, 4)):
                _attempt(functools.partial(describe_slice, seg, i))
            _attempt(lambda: discover_vpp_mqs(seg))
            for f in self.template.info["fifos"]:
                _attempt(functools.partial(describe_fifo, seg, f, peek=64))
            alloc = ChunkAllocator(seg)
            # one chunk of each carved list, and more than any free chunk holds
            for s, want in ((0, MIN_CHUNK_SIZE), (1, 2 * MIN_CHUNK_SIZE), (0, 5 * MIN_CHUNK_SIZE)):
                _attempt(functools.partial(self._alloc_free, alloc, s, want))
            _attempt(alloc.n_free_bytes)
            _attempt(lambda: alloc.alloc_aligned(MIN_CHUNK_SIZE))

    @staticmethod
    def _alloc_free(alloc: ChunkAllocator, slice_index: int, want: int) -> None:
        chunk = alloc.alloc(slice_index, want)
        if chunk:
            alloc.free(slice_index, chunk)


# -- mq: a message queue with pending events in both rings ----------------------------------------
class MqTarget(Target):
    name = "mq"
    size = 1 << 16
    q_nitems = 8

    def build_template(self) -> Template:
        buf = bytearray(self.size)
        format_segment(buf, n_mqs=1)
        with _segment(buf) as seg:
            off = alloc_mq(seg, self.q_nitems, session_rings(self.q_nitems, app=True))
            mq = MessageQueue(seg, off)
            mq.send(encode_io(SessionEvent.IO_RX, 3))
            mq.send(encode_io(SessionEvent.IO_TX, 4))
            mq.send(
                encode_ctrl(SessionEvent.CTRL_CONNECTED, context=1, handle=7, server_rx_fifo=0x4000)
            )
            mq.send(encode_ctrl(SessionEvent.CTRL_DISCONNECTED, handle=7))
            data = bytes(seg.buf)
        fields = mq_fields(data, SEG_SPACE, FSH_OFFSET + off)
        fields += [FieldRef(META_SPACE, "meta.use_eventfd", 0, 1)]
        sizes = [*_sizes(self.size), mq_size(self.q_nitems, session_rings(self.q_nitems, True))]
        layout = Layout(fields, [(SEG_SPACE, FSH_OFFSET + off, FSH_OFFSET + off + 512)], sizes)
        return Template({SEG_SPACE: data, META_SPACE: bytes(1)}, layout, {"mq": off})

    def run(self, mutation: Mutation) -> None:
        spaces = self.mutated(mutation)
        off = self.template.info["mq"]
        efd = os.eventfd(1, os.EFD_CLOEXEC | os.EFD_NONBLOCK) if spaces[META_SPACE][0] & 1 else None
        try:
            with _segment(spaces[SEG_SPACE]) as seg:
                _attempt(lambda: describe_mq(seg, off))
                _attempt(lambda: self._queue(seg, off, efd))
        finally:
            if efd is not None:
                os.close(efd)

    @staticmethod
    def _queue(seg: Segment, off: int, efd: int | None) -> None:
        mq = MessageQueue(seg, off, eventfd=efd)
        try:
            for path in (
                mq.describe,
                mq.pending,
                lambda: mq.peek_slot(1, 0),
                lambda: mq.drain(1),
                lambda: mq.wait(SHORT),
                mq.drain,
                lambda: mq.send(encode_io(SessionEvent.IO_TX, 1), timeout=SHORT),
                lambda: mq.send_ctrl(SessionEvent.CTRL_DISCONNECT, handle=9, timeout=SHORT),
                lambda: mq.send(encode_io(SessionEvent.IO_RX, 2), block=False),
                lambda: mq.recv(SHORT),
                mq.clear_signal,
                mq.drain,
                lambda: mq.wait(SHORT),  # on an empty queue: the timed condvar wait
            ):
                _attempt(path)
        finally:
            mq.close()


# -- fifo: an rx fifo with data in a two-chunk chain ----------------------------------------------
class FifoTarget(Target):
    name = "fifo"
    size = 1 << 17

    def build_template(self) -> Template:
        buf = bytearray(self.size)
        format_segment(buf)
        with _segment(buf) as seg:
            one = alloc_fifo(seg)
            two = alloc_fifo(seg)
            self._grow(seg, two)
            for f, n, m in ((one, 3000, 1000), (two, 7000, 2500)):
                fifo = Fifo(seg, f)
                fifo.enqueue(bytes(range(256)) * (n // 256 + 1))
                fifo.dequeue(m)
            data = bytes(seg.buf)
        fields = fifo_fields(data, SEG_SPACE, FSH_OFFSET, one, "fifo[0]")
        fields += fifo_fields(data, SEG_SPACE, FSH_OFFSET, two, "fifo[1]")
        fields += fields_of(FIFO_SEGMENT_HEADER, SEG_SPACE, FSH_OFFSET)
        flips = [
            (SEG_SPACE, FSH_OFFSET + f, FSH_OFFSET + f + SVM_FIFO_SHARED.size) for f in (one, two)
        ]
        return Template(
            {SEG_SPACE: data}, Layout(fields, flips, _sizes(self.size)), {"fifos": [one, two]}
        )

    @staticmethod
    def _grow(seg: Segment, fifo: int) -> None:
        """Append a second 4 KiB chunk (as ``svm_fifo_try_grow`` does for a larger size)."""
        m, fsh = seg.fsh + fifo, seg.fsh
        first = int(SVM_FIFO_SHARED["end_chunk"].get(seg.view, m))
        second = ChunkAllocator(seg).alloc(0, MIN_CHUNK_SIZE)
        SVM_FIFO_CHUNK["next"].put(seg.view, fsh + first, second)
        SVM_FIFO_CHUNK["start_byte"].put(seg.view, fsh + second, MIN_CHUNK_SIZE)
        SVM_FIFO_SHARED["end_chunk"].put(seg.view, m, second)
        SVM_FIFO_SHARED["size"].put(seg.view, m, 2 * MIN_CHUNK_SIZE)

    def run(self, mutation: Mutation) -> None:
        spaces = self.mutated(mutation)
        with _segment(spaces[SEG_SPACE]) as seg:
            for off in self.template.info["fifos"]:
                _attempt(functools.partial(describe_fifo, seg, off, peek=64))
                _attempt(functools.partial(self._fifo, seg, off))

    @staticmethod
    def _fifo(seg: Segment, off: int) -> None:
        f = Fifo(seg, off)
        buf = bytearray(300)
        for path in (
            f.max_dequeue,
            f.max_enqueue,
            f.chunks,
            lambda: f.peek(100),
            lambda: f.peek(50, offset=700),
            lambda: f.peek_into(buf, 10),
            lambda: f.segments(200),
            lambda: f.dequeue(500),
            lambda: f.dequeue_into(buf),
            lambda: f.enqueue(b"z" * 1500),
            lambda: f.commit(len(f.reserve(100)) and 100),
            lambda: f.drop(10),
            f.set_event,
            f.unset_event,
            lambda: f.needs_deq_ntf(100),
            f.clear_deq_ntf,
        ):
            _attempt(path)


# -- snapshot: recorded VPP memory and its JSON description ---------------------------------------
class SnapshotTarget(Target):
    """Mutates one recorded snapshot.  ``directory`` is a snapshot's stem (``DIR/NAME``), or the
    snapshots folder of the shared data, where it takes ``stem``, or any folder of snapshots,
    where it takes the first."""

    name = "snapshot"
    directory: Path | None = None
    stem: ClassVar[str] = "ct-client-connected"

    def build_template(self) -> Template:
        if self.directory is None:
            raise RuntimeError("SnapshotTarget.directory is not set (no recorded snapshots)")
        stem = self._stem(self.directory)
        meta = json.loads(stem.with_name(stem.name + ".json").read_text())
        blob = read_blob(snapshot_files(stem)[1])
        fields: list[FieldRef] = []
        json_fields: list[tuple[str, Any]] = []
        for i, r in enumerate(meta["regions"]):
            base, what = r["bin_offset"], r["what"]
            for key in ("seg_offset", "length", "bin_offset", "segment", "fsh_offset"):
                json_fields.append((f"regions.{i}.{key}", r[key]))
            if what == "segment-header-region":
                fields += segment_fields(blob, "bin", base)
            elif what == "svm_msg_q":
                fields += mq_fields(blob, "bin", base, f"region[{r['id']}]")
            elif what == "svm_fifo_shared_t":
                fields += fields_of(SVM_FIFO_SHARED, "bin", base, f"region[{r['id']}]")
            elif what.startswith("svm_fifo_chunk_t"):
                fields += fields_of(SVM_FIFO_CHUNK, "bin", base, f"region[{r['id']}]")
        for i, s in enumerate(meta["segments"]):
            for key in ("index", "map_length", "map_file_offset"):
                json_fields.append((f"segments.{i}.{key}", s.get(key)))
        flips = [("bin", r["bin_offset"], r["bin_offset"] + r["length"]) for r in meta["regions"]]
        layout = Layout(fields, flips, _sizes(1 << 20), json_fields)
        return Template({"bin": blob, "json": json.dumps(meta).encode()}, layout, {})

    def _stem(self, path: Path) -> Path:
        if path.with_name(path.name + ".json").is_file():
            return path  # one snapshot, named
        if (path / f"{self.stem}.json").is_file():
            return path / self.stem
        # Another set of snapshots (the project's own, tests/fixtures): its first one.
        found = find_snapshots(path)
        if not found:
            raise RuntimeError(f"no snapshot in {path}")
        return found[0]

    def run(self, mutation: Mutation) -> None:
        spaces = self.mutated(mutation)
        meta = json.loads(bytes(spaces["json"]))
        for path, value in mutation.json_edits():
            _set_path(meta, path, value)
        with tempfile.TemporaryDirectory(prefix="pyvcl-fuzz-") as d:
            stem = Path(d) / "snap"
            stem.with_suffix(".json").write_text(json.dumps(meta))
            stem.with_suffix(".bin").write_bytes(spaces["bin"])
            _attempt(lambda: describe_snapshot(stem, peek=64))


def _set_path(doc: Any, dotted: str, value: Any) -> None:
    """Set ``doc[k1][k2]...`` (list indices as decimal keys; regions by their ``id``)."""
    keys = dotted.split(".")
    node = doc
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


OWN_SNAPSHOT = "ct-pyvcl-client-blocked"
"""The project's own snapshot the fuzzer takes without the shared data: a connected
cut-through client, as the shared data's ``ct-client-connected`` is."""


def default_snapshot_dir() -> Path | None:
    """The recorded snapshots: ``PYVCL_SHARED_DIR`` (default ``../shared`` beside the
    checkout, as for the tests) / vpp-v26.06/snapshots, else the project's own
    (tests/fixtures/vpp-v26.06/snapshots/`OWN_SNAPSHOT` in a checkout), else None."""
    root = Path(__file__).resolve().parents[3]
    shared = os.environ.get("PYVCL_SHARED_DIR") or root.parent / "shared"
    d = Path(shared) / "vpp-v26.06" / "snapshots"
    if d.is_dir() and (d / f"{SnapshotTarget.stem}.json").is_file():
        return d
    own = root / "tests" / "fixtures" / "vpp-v26.06" / "snapshots" / OWN_SNAPSHOT
    return own if own.with_name(own.name + ".json").is_file() else None


# -- selftest: proves the runner's verdicts (not part of a fuzz run) ------------------------------
class SelfTestTarget(Target):
    """Does what byte 0 of its ``meta`` space says: 0 nothing, 1 abort, 2 hang, 3 leak an fd,
    4 raise KeyError, 5 raise a pyvcl error, 6 allocate beyond the memory limit."""

    name = "selftest"
    HANG = 3600.0

    def build_template(self) -> Template:
        fields = [
            FieldRef(META_SPACE, "meta.action", 0, 1),
            FieldRef(META_SPACE, "meta.spare", 1, 3),
        ]
        return Template({META_SPACE: bytes(4)}, Layout(fields, [], [1, 2, 3, 4, 5, 6]), {})

    def run(self, mutation: Mutation) -> None:
        from ...errors import LocalError

        action = self.mutated(mutation)[META_SPACE][0]
        if action == 1:
            os.abort()
        elif action == 2:
            time.sleep(self.HANG)
        elif action == 3:
            os.open(os.devnull, os.O_RDONLY)
        elif action == 4:
            raise KeyError("selftest")
        elif action == 5:
            raise LocalError("selftest")
        elif action == 6:
            bytearray(1 << 40)
