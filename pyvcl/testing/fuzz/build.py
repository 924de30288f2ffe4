"""Shared-memory structures built the way VPP builds them, for the fuzz targets to mutate.

The same construction as the tests' fixtures (``tests/segment_fixtures.make_segment``,
``tests/mq_fixtures.alloc_mq``, ``tests/fifo_fixtures.alloc_fifo``), kept here because an
installed pyvcl cannot import the tests: ``fifo_segment_init`` formatting, the bump
allocation of ``fifo_segment_msg_q_alloc`` + ``svm_msg_q_init``, and one fifo with one chunk as
``fs_try_alloc_fifo`` + ``svm_fifo_init`` leave it.
"""

from __future__ import annotations

from typing import Any

from ...atomics import init_shared_cond, init_shared_mutex
from ...fifo.chunks import MIN_CHUNK_SIZE, ChunkAllocator
from ...segment import Segment
from ...wire.enums import SsvmSegmentType
from ...wire.fifo import SVM_FIFO_CHUNK, SVM_FIFO_SHARED
from ...wire.mq import (
    SVM_MSG_Q_MSG,
    SVM_MSG_Q_RING_SHARED,
    SVM_MSG_Q_SHARED,
    SVM_MSG_Q_SHARED_QUEUE,
)
from ...wire.segment import FIFO_SEGMENT_HEADER, FIFO_SEGMENT_SLICE, SSVM_SHARED_HEADER
from ...wire.session import CTRL_EVENT_SLOT_SIZE, SESSION_EVENT_SIZE

FSH_OFFSET = 2 * 4096  # FIFO_SEGMENT_ALLOC_OVERHEAD: two pages for the ssvm header
FIFO_SEGMENT_MAX_FIFO_SIZE = 2 << 30
FIFO_HEADER_ALIGN = 64  # svm_fifo_shared_t is cache-line aligned (fsh_try_alloc_fifo_hdr)

Rings = tuple[tuple[int, int], ...]  # (nitems, elsize) per ring


def format_segment(buf: Any, *, n_slices: int = 1, n_mqs: int = 0) -> None:
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
        byte_index=byte_index,
        max_byte_index=seg_sz,
        max_log2_fifo_size=max_fifo.bit_length() - 1,
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
    byte_index, reserved = (
        FIFO_SEGMENT_HEADER["byte_index"],
        FIFO_SEGMENT_HEADER["n_reserved_bytes"],
    )
    start = (int(byte_index.get(view, fsh)) + 7) & ~7
    byte_index.put(view, fsh, start + ((size + 7) & ~7))
    reserved.put(view, fsh, int(reserved.get(view, fsh)) + size)
    base = seg.at(start, size, "fuzz mq")
    q = base + SVM_MSG_Q_SHARED.size
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
    return start


def alloc_fifo(seg: Segment, slice_index: int = 0) -> int:
    """A fifo of one 4 KiB chunk, head = tail = 0; its fsh-relative offset."""
    alloc = ChunkAllocator(seg)
    hdr = alloc.alloc_aligned(SVM_FIFO_SHARED.size, FIFO_HEADER_ALIGN)
    chunk = alloc.alloc(slice_index, MIN_CHUNK_SIZE)
    if not hdr or not chunk:
        raise MemoryError("fuzz segment too small for a fifo")
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
