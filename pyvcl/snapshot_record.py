"""Record a snapshot (format ``pyvcl-shm-snapshot/1``, read by `pyvcl.snapshot`) of a live process.

``pyvcl inspect PID --snapshot PATH`` and ``tools/record_fixtures.py`` use it.  It takes what a
`pyvcl.procview.ProcessView` found in the process and copies a small part of each segment:

- the **segment header region** of every segment: from byte 0 (the ssvm header) to the end of
  the last ``fifo_segment_slice_t``;
- every **message queue** whole (shared header, queue, both rings with every slot), with its
  ``role``: ``app worker mq`` for the app's own queue, ``vpp worker mq N`` for VPP's;
- every **fifo** the queues' events name: its ``svm_fifo_shared_t``, each chunk header with the
  first ``data_sample`` bytes of its data, and up to ``head_bytes`` bytes from ``head``.

So a snapshot of an app with 256 MiB segments takes a few hundred KB, nearly all of it the
queues' rings (VPP's worker queue has at least 2048 slots: 315 KB, mostly zeros), the rest a
few KB; gzipped (``NAME.bin.gz``, the form written unless ``packed=False``) about 2 KB.  The
segments are read while the process runs (no lock is taken): stop it first (SIGSTOP) for a
consistent picture.

Besides the regions, the JSON keeps under ``live`` what the live view showed when the bytes
were copied -- each queue's depth and pending event types, each fifo's head, tail and unread
bytes -- so a test can check that decoding the snapshot shows the same
(`live_summary`).  A segment's handle is only known to the app; the recorder takes the one the
events that name a fifo found in that segment carry (``segment_handles``), which is what
`pyvcl.snapshot.describe_snapshot` needs to place the fifos.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from .errors import SharedMemoryError
from .procview import ProcessView
from .segment import Segment
from .snapshot import (
    BIN_SUFFIX,
    PACKED_BIN_SUFFIX,
    REGION_CHUNK,
    REGION_FIFO,
    REGION_FIFO_DATA,
    REGION_MQ,
    REGION_SEGMENT_HEADER,
    ROLE_APP_MQ,
    SNAPSHOT_FORMAT,
    pack_blob,
    snapshot_stem,
)
from .wire.fifo import CHUNK_DATA_OFFSET, SVM_FIFO_SHARED
from .wire.segment import FIFO_SEGMENT_HEADER, FIFO_SEGMENT_SLICE

__all__ = ["live_summary", "record_snapshot"]

DATA_SAMPLE = 64
"""Data bytes kept after each chunk header."""
HEAD_BYTES = 256
"""Data bytes kept from each fifo's head position (the next bytes the reader gets)."""
VPP_MQ_ROLE = "vpp worker mq {}"
_POS_MASK = 0xFFFFFFFF


class _Writer:
    """Collects regions and their bytes, in order."""

    def __init__(self) -> None:
        self.regions: list[dict[str, Any]] = []
        self.blob = bytearray()

    def add(
        self, seg: Segment, index: int, what: str, fsh_offset: int, length: int, **info: Any
    ) -> int:
        start = seg.fsh + fsh_offset
        if start < 0 or length <= 0 or start + length > seg.size:
            raise SharedMemoryError(
                f"segment {seg.name!r}: {what} (+{length} at {fsh_offset:#x}) is outside it"
            )
        region = {
            "id": len(self.regions),
            "what": what,
            "segment": index,
            "seg_offset": start,
            "fsh_offset": fsh_offset,
            "length": length,
            "bin_offset": len(self.blob),
            **info,
        }
        self.blob += seg.view[start : start + length]
        self.regions.append(region)
        return int(region["id"])


def record_snapshot(
    view: ProcessView,
    path: str | os.PathLike[str],
    *,
    name: str = "",
    note: str = "",
    vpp_version: str = "",
    data_sample: int = DATA_SAMPLE,
    head_bytes: int = HEAD_BYTES,
    packed: bool = True,
) -> Path:
    """Write ``PATH.json`` + ``PATH.bin.gz`` (``PATH.bin`` unless ``packed``: the same bytes,
    unpacked; ``path`` may end in ``.json``, ``.bin`` or ``.bin.gz``) from what ``view`` maps
    now; returns the stem.  ``name`` defaults to the stem's name.  Raises
    `SharedMemoryError` if a region the decoders found lies outside its segment (the process
    changed it meanwhile: stop the process and record again)."""
    if data_sample < 0 or head_bytes < 0:
        raise ValueError("data_sample and head_bytes must be 0 or more")
    stem = snapshot_stem(path)
    state = view.describe(peek=0)
    mapped = view.segments
    index_of = {m.name: k for k, m in enumerate(mapped)}
    w = _Writer()
    segments: list[dict[str, Any]] = []
    for k, m in enumerate(mapped):
        seg = m.segment
        end = seg.slice_at(seg.n_slices - 1) + FIFO_SEGMENT_SLICE.size if seg.n_slices else 0
        end = max(end, seg.fsh + FIFO_SEGMENT_HEADER.size)
        w.add(seg, k, REGION_SEGMENT_HEADER, -seg.fsh, end)
        segments.append(
            {
                "index": k,
                "memfd_name": m.name,
                "kind": "vpp-mqs" if m.role == "vpp" else "app",
                "map_length": seg.size,
                "map_file_offset": 0,
                "fsh_offset": seg.fsh,
                "segment_handles": {},
            }
        )
    n_vpp = 0
    for mq in state["mqs"]:
        if mq["fsh_offset"] is None:
            continue
        k = index_of[mq["segment"]]
        if mq["role"] == "vpp":
            role, n_vpp = VPP_MQ_ROLE.format(n_vpp), n_vpp + 1
        else:
            role = ROLE_APP_MQ
        mq["snapshot_role"] = role
        w.add(mapped[k].segment, k, REGION_MQ, mq["fsh_offset"], mq["detail"]["length"], role=role)
    for n, f in enumerate(state["fifos"]):
        k = index_of[f["segment"]]
        seg, detail = mapped[k].segment, f["detail"]
        if f["segment_handle"]:
            handles = segments[k]["segment_handles"]
            handles.setdefault(f"{int(f['segment_handle']):#x}", "named with its fifos by events")
        w.add(seg, k, REGION_FIFO, f["fsh_offset"], SVM_FIFO_SHARED.size, fifo=n)
        for c in detail["chunks"]:
            sample = min(data_sample, int(c["length"]))
            w.add(seg, k, REGION_CHUNK, c["fsh_offset"], CHUNK_DATA_OFFSET + sample, fifo=n,
                  data_sample=sample)  # fmt: skip
        head_chunk = next(
            (c for c in detail["chunks"] if c["fsh_offset"] == detail["head_covered_by"]), None
        )
        take = min(head_bytes, int(detail["bytes_present"]))
        if head_chunk is not None and take:
            skip = (int(detail["head"]) - int(head_chunk["start_byte"])) & _POS_MASK
            take = min(take, int(head_chunk["length"]) - skip)
            w.add(seg, k, REGION_FIFO_DATA, head_chunk["fsh_offset"] + CHUNK_DATA_OFFSET + skip,
                  take, fifo=n)  # fmt: skip
    doc = {
        "format": SNAPSHOT_FORMAT,
        "name": name or stem.name,
        "note": note,
        "vpp_version": vpp_version,
        "arch": platform.machine(),
        "process": {"comm": _comm(view.pid), "recorded_by": "pyvcl.snapshot_record"},
        "segments": segments,
        "regions": w.regions,
        "live": _live(state, index_of),
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    packed_path = stem.with_name(stem.name + PACKED_BIN_SUFFIX)
    plain_path = stem.with_name(stem.name + BIN_SUFFIX)
    stale, keep = (plain_path, packed_path) if packed else (packed_path, plain_path)
    stale.unlink(missing_ok=True)  # a loader takes the plain .bin first: no leftover of either
    keep.write_bytes(pack_blob(bytes(w.blob)) if packed else bytes(w.blob))
    stem.with_name(stem.name + ".json").write_text(json.dumps(doc, indent=1) + "\n")
    return stem


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _live(state: dict[str, Any], index_of: dict[str, int]) -> dict[str, Any]:
    """What the live view showed: the facts `live_summary` gives of the snapshot."""
    mqs = [
        {
            "segment": index_of[mq["segment"]],
            "role": mq["snapshot_role"],
            "fsh_offset": mq["fsh_offset"],
            "queued": mq["queued"],
            "pending": [e.get("type_name") for e in mq["pending"]],
        }
        for mq in state["mqs"]
        if "snapshot_role" in mq
    ]
    fifos = [
        {
            "segment": index_of[f["segment"]],
            "fsh_offset": f["fsh_offset"],
            "role": f["role"],
            "unread": f["unread"],
            "head": f["head"],
            "tail": f["tail"],
            "size": f["size"],
            "chunks": f["chunks"],
        }
        for f in state["fifos"]
    ]
    return {"mqs": mqs, "fifos": sorted(fifos, key=_where)}


def live_summary(described: dict[str, Any]) -> dict[str, Any]:
    """The ``live`` facts of a `pyvcl.snapshot.describe_snapshot` result, in the form the
    recorder stored them: equal when the snapshot holds what the live process showed."""
    mqs = []
    for mq in described["mqs"]:
        if "queue" not in mq:
            continue
        slots = {(r["index"], s["elt"]): s for r in mq["rings"] for s in r["slots"]}
        pending = [
            slots.get((h["ring_index"], h["elt_index"]), {}).get("type_name")
            for h in mq["queue"]["pending_handles"]
        ]
        mqs.append(
            {
                "segment": mq["segment"],
                "role": mq["role"],
                "fsh_offset": mq["fsh_offset"],
                "queued": mq["queue"]["cursize"],
                "pending": pending,
            }
        )
    fifos = []
    for f in described["fifos"]:
        if "bytes_present" not in f:
            continue
        fifos.append(
            {
                "segment": f["segment"],
                "fsh_offset": f["fsh_offset"],
                "role": f["found_via"][0]["field"] if f["found_via"] else None,
                "unread": f["bytes_present"],
                "head": f["head"],
                "tail": f["tail"],
                "size": f["size"],
                "chunks": len(f["chunks"]),
            }
        )
    return {"mqs": mqs, "fifos": sorted(fifos, key=_where)}


def _where(fifo: dict[str, Any]) -> tuple[int, int]:
    return int(fifo["segment"]), int(fifo["fsh_offset"])
