"""`MessageQueue.describe`: a queue's header, rings, lock words and pending handles as plain
dicts, for the inspector and the CLI.  Reads only; never raises for bad indices or lock words
(they are reported under ``problems``), and lists at most `MAX_LISTED` pending handles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..atomics import VPP_MUTEX_KIND
from ..wire.mq import (
    PTHREAD_COND_FIELDS,
    PTHREAD_MUTEX_FIELDS,
    SVM_MSG_Q_MSG,
    SVM_MSG_Q_SHARED_QUEUE,
)

if TYPE_CHECKING:
    from .queue import MessageQueue

_Q = SVM_MSG_Q_SHARED_QUEUE
_MSG = SVM_MSG_Q_MSG
_U32 = _Q["head"].codec
MAX_LISTED = 1 << 14
"""Most pending handles `describe_queue` lists (the rest are counted)."""


def describe_queue(mq: MessageQueue) -> dict[str, Any]:
    """Everything the inspector shows of ``mq``, read now (racy against live peers)."""
    view, q = mq._view, mq._q
    a = mq._a
    problems: list[str] = []
    get = _U32.unpack_from
    head, tail = get(view, mq._q_head)[0], get(view, mq._q_tail)[0]
    size = a.load32(mq._q_cursize)
    if head >= mq.maxsize or tail >= mq.maxsize or size > mq.maxsize:
        problems.append(f"queue head {head} / tail {tail} / cursize {size} out of range")
    mutex = _fields(PTHREAD_MUTEX_FIELDS, view, q + _Q.offset("mutex"))
    condvar = _fields(PTHREAD_COND_FIELDS, view, q + _Q.offset("condvar"))
    rings = []
    for rg in mq._rings:
        rh, rt = get(view, rg.head)[0], get(view, rg.tail)[0]
        rc = a.load32(rg.cursize)
        if rh >= rg.nitems or rt >= rg.nitems or rc > rg.nitems:
            problems.append(f"ring {rg.index} head {rh} / tail {rt} / cursize {rc} invalid")
        rings.append(
            {
                "index": rg.index,
                "offset": mq.segment.offset_of(rg.hdr),
                "data_offset": mq.segment.offset_of(rg.data),
                "nitems": rg.nitems,
                "elsize": rg.elsize,
                "head": rh,
                "tail": rt,
                "cursize": rc,
            }
        )
    indices_ok = not problems
    if mq.mode == "condvar":
        if mutex["__kind"] != VPP_MUTEX_KIND:
            problems.append(f"mutex __kind {mutex['__kind']:#x}, not {VPP_MUTEX_KIND:#x}")
        if condvar["__wrefs"] & 3 != 1:
            problems.append(f"condvar __wrefs {condvar['__wrefs']:#x}: not process-shared")
    pending: list[dict[str, int]] = []
    n_pending = min(size, mq.maxsize) if indices_ok else 0
    for r, e in mq._read_handles(head, min(n_pending, MAX_LISTED)) if n_pending else []:
        pending.append({"ring_index": r, "elt_index": e})
    return {
        "name": mq.name,
        "offset": mq.offset,
        "size": mq.size,
        "mode": mq.mode,
        "eventfd": mq.eventfd,
        "n_rings": mq.n_rings,
        "queue": {
            "offset": mq.segment.offset_of(q),
            "head": head,
            "tail": tail,
            "cursize": size,
            "maxsize": mq.maxsize,
            "elsize": _MSG.size,
        },
        "mutex": mutex,
        "condvar": condvar,
        "rings": rings,
        "pending_handles": pending,
        "pending_not_listed": n_pending - len(pending),
        "recovered_owner_deaths": mq.recovered_owner_deaths,
        "skipped_signals": mq.skipped_signals,
        "problems": problems,
    }


def _fields(decl: Any, view: memoryview, off: int) -> dict[str, Any]:
    """Every field of ``decl`` at ``off`` by its C name (arrays as lists)."""
    out: dict[str, Any] = {}
    for name, f in decl.fields.items():
        v = f.get(view, off)
        out[name] = list(v) if isinstance(v, tuple) else v
    return out
