"""Message queues built in shared memory the way VPP builds them (for tests of the mq and
everything on top of it).

In a segment from `segment_fixtures.make_segment`, `alloc_mq` is ``fifo_segment_msg_q_alloc``:
bump-allocate ``svm_msg_q_size_to_alloc`` bytes (8-aligned), count them in ``n_reserved_bytes``
and run `init_mq` (``svm_msg_q_init``: zero the queue header, set elsize/maxsize/n_rings and each
ring's nitems/elsize, initialise the robust process-shared mutex and the process-shared
condvar).  `build_mq` does it all in an anonymous MAP_SHARED mmap, so a forked child shares it.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence

from pyvcl.atomics import init_shared_cond, init_shared_mutex
from pyvcl.mq.queue import MessageQueue
from pyvcl.segment import Segment
from pyvcl.wire.mq import (
    SVM_MSG_Q_MSG,
    SVM_MSG_Q_RING_SHARED,
    SVM_MSG_Q_SHARED,
    SVM_MSG_Q_SHARED_QUEUE,
)
from pyvcl.wire.segment import FIFO_SEGMENT_HEADER
from pyvcl.wire.session import CTRL_EVENT_SLOT_SIZE, SESSION_EVENT_SIZE

from .segment_fixtures import FSH_OFFSET, make_segment

PAGE = mmap.PAGESIZE

Rings = Sequence[tuple[int, int]]  # (nitems, elsize) per ring


def app_mq_rings(evt_queue_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """segment_manager_alloc_queue: IO ring of EVT_QUEUE_SIZE, ctrl ring max(16, size >> 4)."""
    return (evt_queue_size, SESSION_EVENT_SIZE), (
        max(16, evt_queue_size >> 4),
        CTRL_EVENT_SLOT_SIZE,
    )


def vpp_mq_rings(q_nitems: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """session_vpp_wrk_mqs_alloc / app_rx_mqs_alloc: ctrl ring of half the queue size."""
    return (q_nitems, SESSION_EVENT_SIZE), (q_nitems >> 1, CTRL_EVENT_SLOT_SIZE)


def mq_size(q_nitems: int, rings: Rings) -> int:
    """svm_msg_q_size_to_alloc."""
    q_sz = SVM_MSG_Q_SHARED_QUEUE.size + q_nitems * SVM_MSG_Q_MSG.size
    return SVM_MSG_Q_SHARED.size + q_sz + sum(SVM_MSG_Q_RING_SHARED.size + n * e for n, e in rings)


def alloc_mq(seg: Segment, q_nitems: int, rings: Rings) -> int:
    """fifo_segment_msg_q_alloc: returns the new queue's fsh-relative offset."""
    size = mq_size(q_nitems, rings)
    view, fsh = seg.view, seg.fsh
    bi, res, mx = (
        FIFO_SEGMENT_HEADER[f] for f in ("byte_index", "n_reserved_bytes", "max_byte_index")
    )
    cur = int(bi.get(view, fsh))
    start = (cur + 7) & ~7
    end = start + ((size + 7) & ~7)
    if end >= int(mx.get(view, fsh)):
        raise MemoryError("test segment too small for the queue")
    bi.put(view, fsh, end)
    res.put(view, fsh, int(res.get(view, fsh)) + size)
    init_mq(seg, start, q_nitems, rings)
    return start


def init_mq(seg: Segment, offset: int, q_nitems: int, rings: Rings) -> None:
    """svm_msg_q_init at fsh-relative ``offset``."""
    view = seg.view
    base = seg.at(offset, mq_size(q_nitems, rings), "test mq")
    q = base + SVM_MSG_Q_SHARED.size
    view[q : q + SVM_MSG_Q_SHARED_QUEUE.size] = bytes(SVM_MSG_Q_SHARED_QUEUE.size)
    SVM_MSG_Q_SHARED_QUEUE["elsize"].put(view, q, SVM_MSG_Q_MSG.size)
    SVM_MSG_Q_SHARED_QUEUE["maxsize"].put(view, q, q_nitems)
    SVM_MSG_Q_SHARED["n_rings"].put(view, base, len(rings))
    ring = q + SVM_MSG_Q_SHARED_QUEUE.size + q_nitems * SVM_MSG_Q_MSG.size
    for nitems, elsize in rings:
        view[ring : ring + SVM_MSG_Q_RING_SHARED.size] = SVM_MSG_Q_RING_SHARED.build(
            nitems=nitems, elsize=elsize
        )
        ring += SVM_MSG_Q_RING_SHARED.size + nitems * elsize
    region = seg.atomics
    init_shared_mutex(region, q + SVM_MSG_Q_SHARED_QUEUE.offset("mutex"))
    init_shared_cond(region, q + SVM_MSG_Q_SHARED_QUEUE.offset("condvar"))


def build_mq(
    q_nitems: int = 64,
    rings: Rings | None = None,
    *,
    eventfd: int | None = None,
    seg_size: int | None = None,
) -> tuple[Segment, int, MessageQueue]:
    """A fresh segment holding one queue (session ring layout unless ``rings`` given)."""
    rings = rings if rings is not None else vpp_mq_rings(q_nitems)
    size = seg_size or max(1 << 16, FSH_OFFSET + 4096 + 2 * mq_size(q_nitems, rings))
    size = (size + PAGE - 1) // PAGE * PAGE
    seg = make_segment(size, n_mqs=1)
    off = alloc_mq(seg, q_nitems, rings)
    return seg, off, MessageQueue(seg, off, eventfd=eventfd)
