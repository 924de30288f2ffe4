"""Fifo segments built in memory as VPP builds them, and the recorded snapshots of real VPP
memory: what the fifo, mq and session fixtures (`fifo_fixtures`, `mq_fixtures`, `fake_vpp`)
share.

- `make_segment` formats a buffer (an anonymous MAP_SHARED mmap, so a forked child shares it;
  or a bytearray) the way ``ssvm_server_init`` + ``fifo_segment_init`` leave a fresh memfd:
  the ssvm header with ``opaque[0]`` = `FSH_OFFSET`, then ``fifo_segment_header_t`` two pages
  in (``byte_index``/``start_byte_index``/``n_reserved_bytes`` after the slices,
  ``max_byte_index`` = size - `FSH_OFFSET`, ``max_log2_fifo_size``, ``n_mqs``), zeroed slices.
- `load_snapshot` loads a snapshot of the shared data with `pyvcl.snapshot.Snapshot.load`
  (segments rebuilt sparsely; bytes that were not captured raise ``NotCapturedError``).
"""

from __future__ import annotations

import mmap
from typing import Any

from pyvcl.segment import Segment
from pyvcl.snapshot import Snapshot, find_snapshots
from pyvcl.wire.enums import SsvmSegmentType
from pyvcl.wire.segment import FIFO_SEGMENT_HEADER, FIFO_SEGMENT_SLICE, SSVM_SHARED_HEADER

from .shared_data import SHARED, shared_path

FSH_OFFSET = 2 * 4096  # FIFO_SEGMENT_ALLOC_OVERHEAD: two (4 KiB) pages for the ssvm header
FIFO_SEGMENT_MAX_FIFO_SIZE = 2 << 30


def make_segment(
    size: int = 4 << 20,
    *,
    n_slices: int = 1,
    n_mqs: int = 0,
    pct_first_alloc: int = 0,
    shared: bool = True,
    name: str = "test-seg",
) -> Segment:
    """A fresh fifo segment of ``size`` bytes (the whole ssvm mapping)."""
    buf: Any = mmap.mmap(-1, size) if shared else bytearray(size)
    ssvm = SSVM_SHARED_HEADER.build(
        ssvm_size=size,
        opaque=[FSH_OFFSET, 0, 0, 0, 0, 0, 0],
        ready=1,
        type=int(SsvmSegmentType.MEMFD),
    )
    buf[: len(ssvm)] = ssvm
    seg_sz = size - FSH_OFFSET
    slices_sz = FIFO_SEGMENT_SLICE.size * n_slices
    max_fifo = min((seg_sz - slices_sz) // 2, FIFO_SEGMENT_MAX_FIFO_SIZE)
    byte_index = FIFO_SEGMENT_HEADER.size + slices_sz
    hdr = FIFO_SEGMENT_HEADER.build(
        n_slices=n_slices,
        n_mqs=n_mqs,
        pct_first_alloc=pct_first_alloc,
        byte_index=byte_index,
        max_byte_index=seg_sz,
        max_log2_fifo_size=max_fifo.bit_length() - 1,  # min_log2
        n_reserved_bytes=byte_index,
        start_byte_index=byte_index,
    )
    buf[FSH_OFFSET : FSH_OFFSET + len(hdr)] = hdr
    return Segment(buf, name=name)


# -- snapshots of real VPP memory ------------------------------------------------------------
SNAPSHOTS = "vpp-v26.06", "snapshots"
"""Where the snapshots lie in the shared data."""


def snapshot_names() -> list[str]:
    """Names of the snapshots present (none if the shared data is absent: nothing to test)."""
    return [p.name for p in find_snapshots(SHARED.joinpath(*SNAPSHOTS))]


def load_snapshot(name: str) -> Snapshot:
    """Snapshot ``name`` of the shared data (the test is skipped when it is absent)."""
    return Snapshot.load(shared_path(*SNAPSHOTS, f"{name}.json"))
