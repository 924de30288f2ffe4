"""Shared-memory structures built the way VPP builds them, without VPP: for the tests'
fixtures and the fuzz targets (an installed pyvcl cannot import the tests).

`format_segment` is ``ssvm_server_init`` + ``fifo_segment_init`` on a fresh mapping: the ssvm
header with ``opaque[0]`` = `FSH_OFFSET`, then ``fifo_segment_header_t`` two pages in
(``byte_index``/``start_byte_index``/``n_reserved_bytes`` after the slices, ``max_byte_index``
= size - `FSH_OFFSET`, ``max_log2_fifo_size``, ``n_mqs``), zeroed slices.  `alloc_mq` is
``fifo_segment_msg_q_alloc`` (bump allocation, 8-aligned, counted in ``n_reserved_bytes``) +
`init_mq` (``svm_msg_q_init``: queue header, rings, the robust process-shared mutex and the
process-shared condvar).  `alloc_fifo` leaves one fifo with one chunk as
``fs_try_alloc_fifo`` + ``svm_fifo_init`` do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..atomics import init_shared_cond, init_shared_mutex
from ..fifo.chunks import MIN_CHUNK_SIZE, ChunkAllocator
from ..segment import Segment
from ..wire.enums import SsvmSegmentType
from ..wire.fifo import SVM_FIFO_CHUNK, SVM_FIFO_SHARED
from ..wire.mq import (
    SVM_MSG_Q_MSG,
    SVM_MSG_Q_RING_SHARED,
    SVM_MSG_Q_SHARED,
    SVM_MSG_Q_SHARED_QUEUE,
)
from ..wire.segment import FIFO_SEGMENT_HEADER, FIFO_SEGMENT_SLICE, SSVM_SHARED_HEADER
from ..wire.session import CTRL_EVENT_SLOT_SIZE, SESSION_EVENT_SIZE

FSH_OFFSET = 2 * 4096  # FIFO_SEGMENT_ALLOC_OVERHEAD: two pages for the ssvm header
FIFO_SEGMENT_MAX_FIFO_SIZE = 2 << 30
FIFO_HEADER_ALIGN = 64  # svm_fifo_shared_t is cache-line aligned (fsh_try_alloc_fifo_hdr)

Rings = Sequence[tuple[int, int]]  # (nitems, elsize) per ring


def format_segment(
    buf: Any, *, n_slices: int = 1, n_mqs: int = 0, pct_first_alloc: int = 0
) -> None:
    """``ssvm_server_init`` + ``fifo_segment_init`` on the zeroed ``buf`` (the whole mapping)."""
    size = len(buf)
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


def session_rings(q_nitems: int, app: bool) -> Rings:
    """The app worker mq's rings (``segment_manager_alloc_queue``) or a VPP worker mq's
    (``session_vpp_wrk_mqs_alloc``)."""
    ctrl = max(16, q_nitems >> 4) if app else q_nitems >> 1
    return (q_nitems, SESSION_EVENT_SIZE), (ctrl, CTRL_EVENT_SLOT_SIZE)


def mq_size(q_nitems: int, rings: Rings) -> int:
    """``svm_msg_q_size_to_alloc``."""
    q_sz = SVM_MSG_Q_SHARED_QUEUE.size + q_nitems * SVM_MSG_Q_MSG.size
    return SVM_MSG_Q_SHARED.size + q_sz + sum(SVM_MSG_Q_RING_SHARED.size + n * e for n, e in rings)


def alloc_mq(seg: Segment, q_nitems: int, rings: Rings) -> int:
    """``fifo_segment_msg_q_alloc`` + ``svm_msg_q_init``; the queue's fsh-relative offset."""
    size = mq_size(q_nitems, rings)
    view, fsh = seg.view, seg.fsh
    bi, res, mx = (
        FIFO_SEGMENT_HEADER[f] for f in ("byte_index", "n_reserved_bytes", "max_byte_index")
    )
    start = (int(bi.get(view, fsh)) + 7) & ~7
    end = start + ((size + 7) & ~7)
    if end >= int(mx.get(view, fsh)):
        raise MemoryError("segment too small for the queue")
    bi.put(view, fsh, end)
    res.put(view, fsh, int(res.get(view, fsh)) + size)
    init_mq(seg, start, q_nitems, rings)
    return start


def init_mq(seg: Segment, offset: int, q_nitems: int, rings: Rings) -> None:
    """``svm_msg_q_init`` at fsh-relative ``offset``."""
    view = seg.view
    base = seg.at(offset, mq_size(q_nitems, rings), "mq")
    q = base + SVM_MSG_Q_SHARED.size
    view[q : q + SVM_MSG_Q_SHARED_QUEUE.size] = bytes(SVM_MSG_Q_SHARED_QUEUE.size)
    SVM_MSG_Q_SHARED["n_rings"].put(view, base, len(rings))
    SVM_MSG_Q_SHARED_QUEUE["elsize"].put(view, q, SVM_MSG_Q_MSG.size)
    SVM_MSG_Q_SHARED_QUEUE["maxsize"].put(view, q, q_nitems)
    ring = q + SVM_MSG_Q_SHARED_QUEUE.size + q_nitems * SVM_MSG_Q_MSG.size
    for nitems, elsize in rings:
        view[ring : ring + SVM_MSG_Q_RING_SHARED.size] = SVM_MSG_Q_RING_SHARED.build(
            nitems=nitems, elsize=elsize
        )
        ring += SVM_MSG_Q_RING_SHARED.size + nitems * elsize
    init_shared_mutex(seg.atomics, q + SVM_MSG_Q_SHARED_QUEUE.offset("mutex"))
    init_shared_cond(seg.atomics, q + SVM_MSG_Q_SHARED_QUEUE.offset("condvar"))


def alloc_fifo(seg: Segment, slice_index: int = 0) -> int:
    """A fifo of one 4 KiB chunk, head = tail = 0; its fsh-relative offset."""
    alloc = ChunkAllocator(seg)
    hdr = alloc.alloc_aligned(SVM_FIFO_SHARED.size, FIFO_HEADER_ALIGN)
    chunk = alloc.alloc(slice_index, MIN_CHUNK_SIZE)
    if not hdr or not chunk:
        raise MemoryError("segment too small for a fifo")
    view, m = seg.view, seg.fsh + hdr
    view[m : m + SVM_FIFO_SHARED.size] = bytes(SVM_FIFO_SHARED.size)
    for name, value in (
        ("start_chunk", chunk),
        ("end_chunk", chunk),
        ("head_chunk", chunk),
        ("tail_chunk", chunk),
        ("size", MIN_CHUNK_SIZE),
        ("min_alloc", MIN_CHUNK_SIZE),
        ("slice_index", slice_index),
    ):
        SVM_FIFO_SHARED[name].put(view, m, value)
    SVM_FIFO_CHUNK["start_byte"].put(view, seg.fsh + chunk, 0)
    active = FIFO_SEGMENT_HEADER["n_active_fifos"]
    active.put(view, seg.fsh, int(active.get(view, seg.fsh)) + 1)
    return hdr
