"""Shared-memory snapshots: segments captured from live VCL apps, rebuilt for offline decoding.

A snapshot is a pair ``NAME.bin`` + ``NAME.json`` (format ``pyvcl-shm-snapshot/1``).  The
``.bin`` is the concatenation of the captured regions; the JSON lists them (``regions[]``: the
segment each belongs to, its ``seg_offset`` from the start of the mapping and its ``length``)
and describes the segments (``segments[]``: memfd name, mapping length, known handles).  The
``.bin`` may be stored gzipped as ``NAME.bin.gz`` (what `pyvcl.snapshot_record` writes: a
captured VPP queue is mostly zeros, so ~350 KB become ~2 KB); `read_blob` gives the same bytes
from either form.

`Snapshot.load` rebuilds every segment as a sparse buffer the size of the original mapping (an
anonymous private mmap, so the untouched gigabytes cost no memory), places each region at its
``seg_offset`` and wraps it in a `SnapshotSegment`, a `pyvcl.segment.Segment` whose `at` also
refuses bytes that were not captured (`NotCapturedError`): a decoder walking a list into memory
the snapshot does not hold stops with an error instead of reading zeros as data.

The JSON's own decoded fields (``mqs``, ``fifos``, the decoded ``segments`` headers) are kept
in `Snapshot.meta` but nothing here relies on them; `pyvcl.shmview` decodes the bytes.
"""

from __future__ import annotations

import bisect
import errno
import gzip
import mmap
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import RecordingError, SharedMemoryError
from .recording import U64_MAX, int_field, need, read_json, shallow, typed
from .recording import field as json_field
from .segment import Segment
from .shmview import describe_fifo, describe_mq, describe_segment, fifo_refs, guarded
from .wire.enums import SessionEvent

SNAPSHOT_FORMAT = "pyvcl-shm-snapshot/1"

# Region kinds (``regions[].what``) the capture tool writes.
REGION_SEGMENT_HEADER = "segment-header-region"
REGION_MQ = "svm_msg_q"
REGION_FIFO = "svm_fifo_shared_t"
REGION_CHUNK = "svm_fifo_chunk_t+data-sample"
REGION_FIFO_DATA = "fifo-data-at-head"

ROLE_APP_MQ = "app worker mq"  # ``regions[].role`` of the app's own mq

_REGION_KEYS = ("id", "what", "segment", "seg_offset", "fsh_offset", "length", "bin_offset")
MAX_SEGMENT_SIZE = 1 << 47
"""Largest segment a snapshot may describe (the x86-64 user address space, 128 TiB)."""
BIN_SUFFIX = ".bin"
PACKED_BIN_SUFFIX = ".bin.gz"
MAX_PACKED_BLOB = 1 << 30
"""Most bytes a ``.bin.gz`` may unpack to (a snapshot holds a few MB at most: more is a bomb)."""
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib's way of saying "a gzip header and trailer"


class NotCapturedError(SharedMemoryError):
    """A decoder asked for snapshot bytes that lie inside the segment but were not captured."""


@dataclass(frozen=True)
class Region:
    """One captured byte range: ``length`` bytes of segment ``segment`` at ``seg_offset``
    (mapping offset) = ``fsh_offset`` (from the fifo segment header), stored in the ``.bin`` at
    ``bin_offset``.  ``info`` holds the remaining JSON keys (``role``, ``fifo``, ...)."""

    id: int
    what: str
    segment: int
    seg_offset: int
    fsh_offset: int
    length: int
    bin_offset: int
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, entry: Any, where: str = "region") -> Region:
        """A ``regions[]`` entry, every field checked (`RecordingError` if one is wrong)."""
        entry = typed(entry, dict, where)
        json_field(entry, "role", where, str, default="")  # shown by describe_snapshot
        info = {k: v for k, v in entry.items() if k not in _REGION_KEYS}
        return cls(
            id=int_field(entry, "id", where),
            what=json_field(entry, "what", where, str),
            segment=int_field(entry, "segment", where),
            seg_offset=int_field(entry, "seg_offset", where, 0, MAX_SEGMENT_SIZE),
            fsh_offset=int_field(entry, "fsh_offset", where, -MAX_SEGMENT_SIZE, MAX_SEGMENT_SIZE),
            length=int_field(entry, "length", where, 0, MAX_SEGMENT_SIZE),
            bin_offset=int_field(entry, "bin_offset", where),
            info=info,
        )


class SnapshotSegment(Segment):
    """A segment rebuilt from a snapshot.  Offsets and size are the original mapping's; `at`
    additionally raises `NotCapturedError` for bytes outside every captured region."""

    def __init__(
        self,
        buf: Any,
        *,
        name: str,
        handle: int | None,
        index: int,
        kind: str,
        regions: list[Region],
    ) -> None:
        super().__init__(buf, name=name, handle=handle)
        self.index = index
        self.kind = kind
        self.regions = tuple(regions)
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in _merge((r.seg_offset, r.seg_offset + r.length) for r in regions):
            self._starts.append(start)
            self._ends.append(end)

    def captured(self, offset: int, length: int) -> bool:
        """Whether ``length`` bytes at fsh-relative ``offset`` were all captured."""
        start = self.fsh + offset
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and start + length <= self._ends[i]

    def at(self, offset: int, length: int, what: str = "object") -> int:
        mapping_offset = super().at(offset, length, what)
        if not self.captured(offset, length):
            raise NotCapturedError(
                f"segment {self.name!r}: {what} at offset {offset:#x} (+{length}) was not "
                "captured in the snapshot"
            )
        return mapping_offset

    def __repr__(self) -> str:
        return (
            f"<SnapshotSegment {self.index} {self.name!r} handle={self.handle} "
            f"size={self.size} regions={len(self.regions)}>"
        )


class Snapshot:
    """A loaded snapshot: ``segments`` (one `SnapshotSegment` per ``segments[]`` entry, in
    order), ``regions`` and the JSON document as ``meta``.  Close it (or use ``with``) to
    release the buffers."""

    def __init__(
        self,
        path: Path,
        meta: dict[str, Any],
        segments: list[SnapshotSegment],
        regions: list[Region],
    ) -> None:
        self.path = path
        self.meta = meta
        self.segments = segments
        self.regions = regions

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name)

    @property
    def json_path(self) -> Path:
        return self.path.with_name(self.path.name + ".json")

    @property
    def bin_path(self) -> Path:
        """The ``.bin`` file, or the ``.bin.gz`` when that is the form on disk (`read_blob`)."""
        return snapshot_files(self.path)[1]

    @property
    def note(self) -> str:
        return str(self.meta.get("note", ""))

    @classmethod
    def load(cls, path: str | Path) -> Snapshot:
        """Load ``NAME.json`` + ``NAME.bin`` (or ``NAME.bin.gz``); ``path`` may name any of
        them or the common stem.

        Every field used is checked first: a malformed snapshot raises `RecordingError` naming
        the file and what is wrong (a missing or unreadable file the usual `OSError`)."""
        json_path, bin_path = snapshot_files(path)
        try:
            meta = typed(read_json(json_path), dict, "the document")
            fmt = meta.get("format")
            need(fmt == SNAPSHOT_FORMAT, f"format {fmt!r}, expected {SNAPSHOT_FORMAT!r}")
            for key in ("name", "note", "vpp_version", "arch"):
                json_field(meta, key, "the document", str, default="")
            shallow(json_field(meta, "process", "the document", dict, default={}), "'process'")
            regions = [
                Region.from_json(r, f"regions[{k}]")
                for k, r in enumerate(json_field(meta, "regions", "the document", list))
            ]
            specs = [
                _SegmentSpec.from_json(k, e)
                for k, e in enumerate(json_field(meta, "segments", "the document", list))
            ]
            indices = [spec.index for spec in specs]
            need(len(set(indices)) == len(indices), f"segment indices repeat: {indices}")
            for r in regions:
                need(r.segment in indices, f"region {r.id}: segment {r.segment} is not listed")
            blob = read_blob(bin_path)
            segments: list[SnapshotSegment] = []
            try:
                for spec in specs:
                    segments.append(_build_segment(spec, regions, blob))
                _check_fsh_offsets(segments, regions)
            except BaseException:
                for seg in segments:
                    seg.close()
                raise
        except RecordingError as e:
            raise e.at(json_path) from None
        return cls(json_path.with_name(json_path.stem), meta, segments, regions)

    # -- lookup ---------------------------------------------------------------------------------
    def segment(self, index: int) -> SnapshotSegment:
        for seg in self.segments:
            if seg.index == index:
                return seg
        raise KeyError(f"snapshot {self.name!r} has no segment {index}")

    def segment_by_handle(self, handle: int) -> SnapshotSegment | None:
        for seg in self.segments:
            if seg.handle == handle:
                return seg
        return None

    def regions_of(self, what: str) -> list[Region]:
        return [r for r in self.regions if r.what == what]

    def mq_regions(self) -> list[Region]:
        """The captured message queues (``info['role']`` says whose)."""
        return self.regions_of(REGION_MQ)

    def fifo_regions(self) -> list[Region]:
        """The captured ``svm_fifo_shared_t`` headers."""
        return self.regions_of(REGION_FIFO)

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        for seg in self.segments:
            seg.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Snapshot {self.name!r} segments={len(self.segments)} regions={len(self.regions)}>"


def load(path: str | Path) -> Snapshot:
    """`Snapshot.load`."""
    return Snapshot.load(path)


def describe_snapshot(source: str | Path | Snapshot, *, peek: int = 64) -> dict[str, Any]:
    """Everything `pyvcl.shmview` decodes from a snapshot, as plain data: each segment,
    each captured mq (with every event), and each fifo (captured headers plus those named by
    mq events, with ``found_via``; ``peek`` bytes at each fifo's head when captured)."""
    snap = source if isinstance(source, Snapshot) else Snapshot.load(source)
    try:
        out: dict[str, Any] = {
            k: snap.meta.get(k) for k in ("name", "note", "vpp_version", "arch", "process")
        }
        out["segments"] = [
            {"index": seg.index, "kind": seg.kind, **guarded(describe_segment, seg)}
            for seg in snap.segments
        ]
        mqs, refs = [], []
        for r in snap.mq_regions():
            mq = guarded(describe_mq, snap.segment(r.segment), r.fsh_offset)
            mqs.append({"segment": r.segment, "role": r.info.get("role", ""), **mq})
            if "rings" in mq:
                refs += [{"mq": len(mqs) - 1, **ref} for ref in fifo_refs(mq)]
        out["mqs"] = mqs
        fifos: dict[tuple[int, int], list[dict[str, Any]]] = {
            (r.segment, r.fsh_offset): [] for r in snap.fifo_regions()
        }
        unresolved = []
        first, announced = _first_segment(snap, mqs), _announced(mqs)
        for ref in refs:
            handle = int(ref["segment_handle"] or 0)
            seg = snap.segment_by_handle(handle)
            if seg is None and first is not None and handle not in announced:
                # Never announced on the mq: the app's first segment, whose handle only the
                # attach reply carried.
                seg, ref = first, {**ref, "segment_inferred": True}
            if seg is None:
                unresolved.append(ref)  # announced, then deleted: no longer mapped
            else:
                fifos.setdefault((seg.index, ref["fifo"]), []).append(ref)
        out["fifos"] = [
            {
                "segment": index,
                **guarded(describe_fifo, snap.segment(index), offset, peek=peek),
                "found_via": found,
            }
            for (index, offset), found in sorted(fifos.items())
        ]
        out["unresolved_fifo_refs"] = unresolved
        return out
    finally:
        if snap is not source:
            snap.close()


def _announced(mqs: list[dict[str, Any]]) -> set[int]:
    """Segment handles VPP announced (APP_ADD_SEGMENT) or withdrew (APP_DEL_SEGMENT).  Such an
    event without its payload (a control event type in an IO ring slot) is added to the mq's
    ``problems``."""
    handles = set()
    for mq in mqs:
        for ring in mq.get("rings", []):
            for slot in ring["slots"]:
                if slot.get("event_type") not in (
                    SessionEvent.CTRL_APP_ADD_SEGMENT,
                    SessionEvent.CTRL_APP_DEL_SEGMENT,
                ):
                    continue
                payload = slot.get("payload")
                if payload is None:
                    # Not decoded (describe_event reported why), or decoded without its
                    # payload (a control event type in an IO slot).
                    name = slot.get("type_name", f"event type {slot['event_type']}")
                    why = slot.get("error", "a control event type in an IO slot")
                    mq.setdefault("problems", []).append(
                        f"ring {ring['index']} slot {slot['elt']}: {name} without its payload "
                        f"({why})"
                    )
                else:
                    handles.add(int(payload["segment_handle"]))
    return handles


def _first_segment(snap: Snapshot, mqs: list[dict[str, Any]]) -> SnapshotSegment | None:
    """The segment holding the app worker mq (the app's first segment)."""
    for mq in mqs:
        if mq["role"] == ROLE_APP_MQ:
            return snap.segment(mq["segment"])
    return None


def snapshot_files(path: str | Path) -> tuple[Path, Path]:
    """(``NAME.json``, ``NAME.bin``) for ``NAME``, ``NAME.json``, ``NAME.bin`` or
    ``NAME.bin.gz``; the second is ``NAME.bin.gz`` when only that form exists.  Both must
    exist."""
    stem = snapshot_stem(path)
    json_path = stem.with_name(stem.name + ".json")
    bin_path = stem.with_name(stem.name + BIN_SUFFIX)
    if not bin_path.is_file() and stem.with_name(stem.name + PACKED_BIN_SUFFIX).is_file():
        bin_path = stem.with_name(stem.name + PACKED_BIN_SUFFIX)
    for f in (json_path, bin_path):
        if not f.is_file():
            raise FileNotFoundError(errno.ENOENT, "snapshot file not found", str(f))
    return json_path, bin_path


def snapshot_stem(path: str | os.PathLike[str]) -> Path:
    """``NAME`` for ``NAME``, ``NAME.json``, ``NAME.bin`` or ``NAME.bin.gz``."""
    p = Path(path)
    for suffix in (PACKED_BIN_SUFFIX, BIN_SUFFIX, ".json"):
        if p.name.endswith(suffix) and p.name != suffix:
            return p.with_name(p.name[: -len(suffix)])
    return p


def read_blob(bin_path: str | Path) -> bytes:
    """A snapshot's captured bytes: the ``.bin`` as stored, or a ``.bin.gz`` unpacked.  A
    damaged or oversized ``.bin.gz`` raises `RecordingError` naming it."""
    p = Path(bin_path)
    data = p.read_bytes()
    if not p.name.endswith(PACKED_BIN_SUFFIX):
        return data
    unpacker = zlib.decompressobj(_GZIP_WBITS)
    try:
        blob = unpacker.decompress(data, MAX_PACKED_BLOB + 1)
    except zlib.error as e:
        raise RecordingError(f"not a valid gzip stream: {e}", p) from None
    if len(blob) > MAX_PACKED_BLOB:
        raise RecordingError(f"unpacks to more than {MAX_PACKED_BLOB} bytes", p)
    if not unpacker.eof:
        raise RecordingError("the gzip stream is cut short", p)
    return blob


def pack_blob(blob: bytes) -> bytes:
    """``blob`` in the ``.bin.gz`` form: the same bytes for the same content (no timestamp)."""
    return gzip.compress(blob, compresslevel=9, mtime=0)


def find_snapshots(directory: str | Path) -> list[Path]:
    """The snapshot stems (paths without suffix) in ``directory``, sorted by name."""
    d = Path(directory)
    return sorted(
        p.with_suffix("")
        for p in d.glob("*.json")
        if any(p.with_suffix(s).is_file() for s in (BIN_SUFFIX, PACKED_BIN_SUFFIX))
    )


@dataclass(frozen=True)
class _SegmentSpec:
    """A ``segments[]`` entry, checked: what `_build_segment` needs."""

    index: int
    size: int
    name: str
    kind: str
    handle: int | None

    @classmethod
    def from_json(cls, position: int, entry: Any) -> _SegmentSpec:
        where = f"segments[{position}]"
        entry = typed(entry, dict, where)
        index = int_field(entry, "index", where, default=position)
        size = int_field(entry, "map_length", where, 0, MAX_SEGMENT_SIZE, default=0)
        if not size:
            ssvm = json_field(entry, "ssvm", where, dict, default={})
            size = int_field(ssvm, "ssvm_size", f"{where}: 'ssvm'", 0, MAX_SEGMENT_SIZE, default=0)
        need(size, f"segment {index} has no mapping length ('map_length' or ssvm 'ssvm_size')")
        file_offset = int_field(entry, "map_file_offset", where, default=0)
        need(file_offset == 0, f"segment {index} was not mapped from file offset 0")
        return cls(
            index=index,
            size=size,
            name=json_field(entry, "memfd_name", where, str, default=""),
            kind=json_field(entry, "kind", where, str, default=""),
            handle=_first_handle(
                json_field(entry, "segment_handles", where, dict, default={}), where
            ),
        )


def _build_segment(spec: _SegmentSpec, regions: list[Region], blob: bytes) -> SnapshotSegment:
    index, size = spec.index, spec.size
    mine = [r for r in regions if r.segment == index]
    for r in mine:
        need(
            r.seg_offset + r.length <= size,
            f"region {r.id} (+{r.length} at {r.seg_offset:#x}) lies outside segment {index} "
            f"({size} bytes)",
        )
        need(
            r.bin_offset + r.length <= len(blob),
            f"region {r.id} (+{r.length} at {r.bin_offset:#x}) lies outside the "
            f"{len(blob)}-byte .bin file",
        )
    try:
        buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    except (OSError, OverflowError, ValueError) as e:
        raise RecordingError(f"segment {index}: cannot rebuild its {size}-byte mapping: {e}") from e
    try:
        for r in mine:
            buf[r.seg_offset : r.seg_offset + r.length] = blob[
                r.bin_offset : r.bin_offset + r.length
            ]
        try:
            return SnapshotSegment(
                buf, name=spec.name, handle=spec.handle, index=index, kind=spec.kind, regions=mine
            )
        except SharedMemoryError as e:
            raise RecordingError(f"segment {index}: {e.strerror}") from e
    except BaseException:
        buf.close()
        raise


def _check_fsh_offsets(segments: list[SnapshotSegment], regions: list[Region]) -> None:
    """Each region's ``fsh_offset`` must be its ``seg_offset`` from its segment's fifo segment
    header (decoders use the former)."""
    fsh = {seg.index: seg.fsh for seg in segments}
    for r in regions:
        need(
            r.fsh_offset == r.seg_offset - fsh[r.segment],
            f"region {r.id}: fsh_offset {r.fsh_offset} is not seg_offset {r.seg_offset} minus "
            f"the fifo segment header offset {fsh[r.segment]}",
        )


def _first_handle(handles: dict[str, Any], where: str) -> int | None:
    """``segment_handles`` maps hex handle strings to how they were learned; take the first."""
    for key in handles:
        what = f"{where}: segment handle {key!r}"
        try:
            handle = int(key, 0)
        except ValueError:
            raise RecordingError(f"{what} is not a number") from None
        need(0 <= handle <= U64_MAX, f"{what} is outside 0..2**64-1")
        return handle
    return None


def _merge(spans: Iterator[tuple[int, int]] | Any) -> list[tuple[int, int]]:
    """Sorted, coalesced [start, end) intervals."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
