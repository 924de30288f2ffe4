"""Where an svm message queue's parts lie, read from shared memory and checked once at attach
(protocol.md section 5): ``svm_msg_q_shared_t`` (the ring count), the queue header
``svm_msg_q_shared_queue_t`` (mutex, condvar, head, tail, cursize, maxsize, elsize), ``maxsize``
8-byte handles ``{ring_index, elt_index}``, then each ring's header and slots back to back.

`read_layout` refuses anything a session queue cannot be: it overlaps the fifo segment header,
is misaligned, has other than two rings, handles or slots of the wrong size, an empty ring, or
a part outside the mapping.  Indices (heads, tails, cursizes) change all the time: the queue
checks them on every use (`pyvcl.mq.queue`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import SharedMemoryError
from ..segment import Segment
from ..wire.enums import MqRing
from ..wire.mq import SVM_MSG_Q_MSG, SVM_MSG_Q_RING_SHARED, SVM_MSG_Q_SHARED, SVM_MSG_Q_SHARED_QUEUE
from ..wire.segment import FIFO_SEGMENT_HEADER, FIFO_SEGMENT_SLICE
from ..wire.session import CTRL_EVENT_SLOT_SIZE, SESSION_EVENT_SIZE

__all__ = ["SLOT_SIZES", "QueueLayout", "QueueState", "Ring", "RingState", "read_layout"]

_SMQ = SVM_MSG_Q_SHARED
_Q = SVM_MSG_Q_SHARED_QUEUE
_R = SVM_MSG_Q_RING_SHARED
_MSG = SVM_MSG_Q_MSG
_N_RINGS = int(MqRing.N_RINGS)
# What session events need of the rings, by ring index: IO events are the 18-byte
# session_event_t, ctrl events a 256-byte slot (payload at +2).
SLOT_SIZES = {MqRing.IO_EVT: SESSION_EVENT_SIZE, MqRing.CTRL_EVT: CTRL_EVENT_SLOT_SIZE}


class Ring:
    """One ring of a queue: the mapping offsets of its header words and slots."""

    __slots__ = ("cursize", "data", "elsize", "hdr", "head", "index", "nitems", "tail", "zero")

    def __init__(self, index: int, hdr: int, nitems: int, elsize: int) -> None:
        self.index = index
        self.hdr = hdr  # mapping offsets
        self.cursize = hdr + _R.offset("cursize")
        self.head = hdr + _R.offset("head")
        self.tail = hdr + _R.offset("tail")
        self.data = hdr + _R.size
        self.nitems = nitems
        self.elsize = elsize
        self.zero = bytes(elsize)


@dataclass(frozen=True)
class QueueLayout:
    """A queue's parts as mapping offsets: the queue header ``q``, the ``handles``, the rings;
    ``size`` is ``svm_msg_q_size_to_alloc``."""

    q: int
    maxsize: int
    handles: int
    rings: list[Ring]
    size: int


@dataclass(frozen=True)
class RingState:
    """One ring's words as read at one moment (`MessageQueue.read_state`); offsets are
    fsh-relative.  Not checked: the indices may be anything another process wrote."""

    index: int
    fsh_offset: int  # the ring header
    data_fsh_offset: int  # its first slot
    nitems: int
    elsize: int
    head: int
    tail: int
    cursize: int


@dataclass(frozen=True)
class QueueState:
    """A queue's header words as read at one moment (`MessageQueue.read_state`), as plain data:
    fsh-relative offsets of the queue header and its handles, the indices (not checked), the
    glibc mutex and condvar words by C name, and each ring's `RingState`."""

    fsh_offset: int  # svm_msg_q_shared_queue_t
    handles_fsh_offset: int  # its maxsize handles
    head: int
    tail: int
    cursize: int
    maxsize: int
    elsize: int
    mutex: dict[str, Any]
    condvar: dict[str, Any]
    rings: tuple[RingState, ...]


def header_end(segment: Segment) -> int:
    """First fsh-relative offset after the fifo segment header and its slices."""
    return FIFO_SEGMENT_HEADER.size + segment.n_slices * FIFO_SEGMENT_SLICE.size


def read_layout(segment: Segment, offset: int, name: str) -> QueueLayout:
    """The layout of the queue at fsh-relative ``offset``; `SharedMemoryError` (starting with
    ``name``) for anything a session queue cannot be."""
    view = segment.view
    end = header_end(segment)
    if offset < end:
        raise SharedMemoryError(
            f"{name}: offset {offset:#x} overlaps the fifo segment header (ends at {end:#x})"
        )
    base = segment.at(offset, _SMQ.size + _Q.size, "message queue header")
    if base % 8:
        raise SharedMemoryError(f"{name}: queue at {offset:#x} is not 8-byte aligned")
    n_rings = int(_SMQ["n_rings"].get(view, base))
    if n_rings != _N_RINGS:
        raise SharedMemoryError(f"{name}: n_rings {n_rings}, session queues have 2")
    q = base + _SMQ.size
    maxsize = int(_Q["maxsize"].get(view, q))
    elsize = int(_Q["elsize"].get(view, q))
    if elsize != _MSG.size:
        raise SharedMemoryError(f"{name}: queue elsize {elsize}, expected {_MSG.size}")
    if maxsize < 1:
        raise SharedMemoryError(f"{name}: queue maxsize {maxsize}")
    rel = offset + _SMQ.size + _Q.size
    handles = segment.at(rel, maxsize * _MSG.size, "message queue handles")
    rel += maxsize * _MSG.size
    rings: list[Ring] = []
    for i in range(n_rings):
        hdr = segment.at(rel, _R.size, f"ring {i} header")
        nitems = int(_R["nitems"].get(view, hdr))
        r_elsize = int(_R["elsize"].get(view, hdr))
        if r_elsize != SLOT_SIZES[MqRing(i)]:
            raise SharedMemoryError(
                f"{name}: ring {i} slots are {r_elsize} bytes, session events need "
                f"{SLOT_SIZES[MqRing(i)]}"
            )
        if nitems < 1:
            raise SharedMemoryError(f"{name}: ring {i} has {nitems} items")
        if hdr % 4:
            # An odd IO ring size puts the next ring's atomic cursize off 4-byte alignment;
            # VPP's inline atomics cope (split locks), portable atomics cannot.
            raise SharedMemoryError(f"{name}: ring {i} header at {rel:#x} is not 4-byte aligned")
        segment.at(rel + _R.size, nitems * r_elsize, f"ring {i} slots")
        rings.append(Ring(i, hdr, nitems, r_elsize))
        rel += _R.size + nitems * r_elsize
    return QueueLayout(q, maxsize, handles, rings, rel - offset)
