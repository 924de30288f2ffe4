"""Message queues built in shared memory the way VPP builds them (for tests of the mq and
everything on top of it).

In a segment from `segment_fixtures.make_segment`, `alloc_mq` / `init_mq` / `mq_size` (from
`pyvcl.testing.vppshm`) are ``fifo_segment_msg_q_alloc`` / ``svm_msg_q_init`` /
``svm_msg_q_size_to_alloc``.  `build_mq` does it all in an anonymous MAP_SHARED mmap, so a
forked child shares it.
"""

from __future__ import annotations

import mmap

from pyvcl.mq.queue import MessageQueue
from pyvcl.segment import Segment
from pyvcl.testing.vppshm import FSH_OFFSET, Rings, alloc_mq, mq_size
from pyvcl.wire.session import CTRL_EVENT_SLOT_SIZE, SESSION_EVENT_SIZE

from .segment_fixtures import make_segment

PAGE = mmap.PAGESIZE


def app_mq_rings(evt_queue_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """segment_manager_alloc_queue: IO ring of EVT_QUEUE_SIZE, ctrl ring max(16, size >> 4)."""
    return (evt_queue_size, SESSION_EVENT_SIZE), (
        max(16, evt_queue_size >> 4),
        CTRL_EVENT_SLOT_SIZE,
    )


def vpp_mq_rings(q_nitems: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """session_vpp_wrk_mqs_alloc / app_rx_mqs_alloc: ctrl ring of half the queue size."""
    return (q_nitems, SESSION_EVENT_SIZE), (q_nitems >> 1, CTRL_EVENT_SLOT_SIZE)


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
