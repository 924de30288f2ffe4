"""Shared-memory snapshots: segments captured from live VCL apps, rebuilt for offline decoding.

A snapshot is a pair ``NAME.bin`` + ``NAME.json`` (format ``pyvcl-shm-snapshot/1``).  The
``.bin`` is the concatenation of the captured regions; the JSON lists them (``regions[]``: the
segment each belongs to, its ``seg_offset`` from the start of the mapping and its ``length``)
and describes the segments (``segments[]``: memfd name, mapping length, known handles).

`Snapshot.load` rebuilds every segment as a sparse buffer the size of the original mapping (an
anonymous private mmap, so the untouched gigabytes cost no memory), places each region at its
``seg_offset`` and wraps it in a `SnapshotSegment`, a `pyvcl.segment.Segment` whose `at` also
refuses bytes that were not captured (`NotCapturedError`): a decoder walking a list into memory
the snapshot does not hold stops with an error instead of reading zeros as data.

The JSON's own decoded fields (``mqs``, ``fifos``, the decoded ``segments`` headers) are kept
in `Snapshot.meta` but nothing here relies on them; `pyvcl.inspect` decodes the bytes.
"""

from __future__ import annotations

import bisect
import json
import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import SharedMemoryError
from .inspect import describe_fifo, describe_mq, describe_segment, fifo_refs
from .segment import Segment
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
    def from_json(cls, entry: dict[str, Any]) -> Region:
        try:
            values = {k: entry[k] for k in _REGION_KEYS}
        except KeyError as e:
            raise SharedMemoryError(f"snapshot region {entry!r} lacks {e}") from None
        info = {k: v for k, v in entry.items() if k not in _REGION_KEYS}
        return cls(**values, info=info)


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
        return self.path.with_name(self.path.name + ".bin")

    @property
    def note(self) -> str:
        return str(self.meta.get("note", ""))

    @classmethod
    def load(cls, path: str | Path) -> Snapshot:
        """Load ``NAME.json`` + ``NAME.bin``; ``path`` may name either file or the common stem."""
        json_path, bin_path = snapshot_files(path)
        meta: dict[str, Any] = json.loads(json_path.read_text())
        if meta.get("format") != SNAPSHOT_FORMAT:
            raise SharedMemoryError(
                f"{json_path}: format {meta.get('format')!r}, expected {SNAPSHOT_FORMAT!r}"
            )
        regions = [Region.from_json(r) for r in meta.get("regions", [])]
        blob = bin_path.read_bytes()
        segments: list[SnapshotSegment] = []
        try:
            for position, entry in enumerate(meta.get("segments", [])):
                segments.append(_build_segment(position, entry, regions, blob, json_path))
        except BaseException:
            for seg in segments:
                seg.close()
            raise
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
    """Everything `pyvcl.inspect` decodes from a snapshot, as plain data: each segment,
    each captured mq (with every event), and each fifo (captured headers plus those named by
    mq events, with ``found_via``; ``peek`` bytes at each fifo's head when captured)."""
    snap = source if isinstance(source, Snapshot) else Snapshot.load(source)
    try:
        out: dict[str, Any] = {
            k: snap.meta.get(k) for k in ("name", "note", "vpp_version", "arch", "process")
        }
        out["segments"] = [
            {"index": seg.index, "kind": seg.kind, **_guarded(describe_segment, seg)}
            for seg in snap.segments
        ]
        mqs, refs = [], []
        for r in snap.mq_regions():
            mq = _guarded(describe_mq, snap.segment(r.segment), r.fsh_offset)
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
                **_guarded(describe_fifo, snap.segment(index), offset, peek=peek),
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
    """Segment handles VPP announced (APP_ADD_SEGMENT) or withdrew (APP_DEL_SEGMENT)."""
    handles = set()
    for mq in mqs:
        for ring in mq.get("rings", []):
            for slot in ring["slots"]:
                if slot.get("event_type") in (
                    SessionEvent.CTRL_APP_ADD_SEGMENT,
                    SessionEvent.CTRL_APP_DEL_SEGMENT,
                ):
                    handles.add(int(slot["payload"]["segment_handle"]))
    return handles


def _first_segment(snap: Snapshot, mqs: list[dict[str, Any]]) -> SnapshotSegment | None:
    """The segment holding the app worker mq (the app's first segment)."""
    for mq in mqs:
        if mq["role"] == ROLE_APP_MQ:
            return snap.segment(mq["segment"])
    return None


def _guarded(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``fn(*args)``, or an error entry if the bytes it needs are bad or missing."""
    try:
        result: dict[str, Any] = fn(*args, **kwargs)
    except SharedMemoryError as e:
        return {"error": str(e), "error_kind": type(e).__name__}
    return result


def snapshot_files(path: str | Path) -> tuple[Path, Path]:
    """(``NAME.json``, ``NAME.bin``) for ``NAME``, ``NAME.json`` or ``NAME.bin``; both must
    exist."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".json", ".bin") else p
    json_path, bin_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".bin")
    for f in (json_path, bin_path):
        if not f.is_file():
            raise FileNotFoundError(f"snapshot file {f} not found")
    return json_path, bin_path


def find_snapshots(directory: str | Path) -> list[Path]:
    """The snapshot stems (paths without suffix) in ``directory``, sorted by name."""
    d = Path(directory)
    return sorted(p.with_suffix("") for p in d.glob("*.json") if p.with_suffix(".bin").is_file())


def _build_segment(
    position: int, entry: dict[str, Any], regions: list[Region], blob: bytes, where: Path
) -> SnapshotSegment:
    index = int(entry.get("index", position))
    size = int(entry.get("map_length") or entry.get("ssvm", {}).get("ssvm_size") or 0)
    if size <= 0:
        raise SharedMemoryError(f"{where}: segment {index} has no mapping length")
    if int(entry.get("map_file_offset", 0)):
        raise SharedMemoryError(f"{where}: segment {index} was not mapped from file offset 0")
    mine = [r for r in regions if r.segment == index]
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    try:
        for r in mine:
            if r.seg_offset < 0 or r.length < 0 or r.seg_offset + r.length > size:
                raise SharedMemoryError(f"{where}: region {r.id} lies outside segment {index}")
            if r.bin_offset < 0 or r.bin_offset + r.length > len(blob):
                raise SharedMemoryError(f"{where}: region {r.id} lies outside the .bin file")
            buf[r.seg_offset : r.seg_offset + r.length] = blob[
                r.bin_offset : r.bin_offset + r.length
            ]
        return SnapshotSegment(
            buf,
            name=str(entry.get("memfd_name", "")),
            handle=_first_handle(entry.get("segment_handles")),
            index=index,
            kind=str(entry.get("kind", "")),
            regions=mine,
        )
    except BaseException:
        buf.close()
        raise


def _first_handle(handles: Any) -> int | None:
    """``segment_handles`` maps hex handle strings to how they were learned; take the first."""
    if not handles:
        return None
    for key in handles:
        try:
            return int(str(key), 0)
        except ValueError:
            continue
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
