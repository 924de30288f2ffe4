"""`MessageQueue.describe`: a queue's header, rings, lock words and pending handles as plain
dicts, for the inspector and the CLI.  Reads only, through the queue's public
`MessageQueue.read_state` and `read_handles`; never raises for bad indices or lock words (they
are reported under ``problems``), and lists at most `MAX_LISTED` pending handles.

The keys are those of `pyvcl.shmview.describe_mq`, which decodes a queue from a segment alone
(a snapshot, another process): ``fsh_offset``, ``length``, ``queue_fsh_offset``,
``queue_data_fsh_offset``, ``queue`` (indices, ``mutex``, ``condvar``, ``pending_handles``)
and ``rings`` (``fsh_offset``, ``data_fsh_offset``, indices); tests/test_mq.py checks that the
two agree on every key they share.  This one adds what only the attached queue knows: its
``name``, ``mode``, ``eventfd`` and counters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..atomics import VPP_MUTEX_KIND

if TYPE_CHECKING:
    from .queue import MessageQueue

MAX_LISTED = 1 << 14
"""Most pending handles `describe_queue` lists (the rest are counted)."""


def describe_queue(mq: MessageQueue) -> dict[str, Any]:
    """Everything the inspector shows of ``mq``, read now (racy against live peers)."""
    st = mq.read_state()
    problems: list[str] = []
    if st.head >= st.maxsize or st.tail >= st.maxsize or st.cursize > st.maxsize:
        problems.append(
            f"queue head {st.head} / tail {st.tail} / cursize {st.cursize} out of range"
        )
    rings = []
    for rg in st.rings:
        if rg.head >= rg.nitems or rg.tail >= rg.nitems or rg.cursize > rg.nitems:
            problems.append(
                f"ring {rg.index} head {rg.head} / tail {rg.tail} / cursize {rg.cursize} invalid"
            )
        rings.append(
            {
                "index": rg.index,
                "fsh_offset": rg.fsh_offset,
                "data_fsh_offset": rg.data_fsh_offset,
                "cursize": rg.cursize,
                "nitems": rg.nitems,
                "head": rg.head,
                "tail": rg.tail,
                "elsize": rg.elsize,
            }
        )
    indices_ok = not problems
    if mq.mode == "condvar":
        if st.mutex["__kind"] != VPP_MUTEX_KIND:
            problems.append(f"mutex __kind {st.mutex['__kind']:#x}, not {VPP_MUTEX_KIND:#x}")
        if st.condvar["__wrefs"] & 3 != 1:
            problems.append(f"condvar __wrefs {st.condvar['__wrefs']:#x}: not process-shared")
    n_pending = min(st.cursize, st.maxsize) if indices_ok else 0
    handles = mq.read_handles(st.head, min(n_pending, MAX_LISTED)) if n_pending else []
    pending = [{"ring_index": r, "elt_index": e} for r, e in handles]
    return {
        "name": mq.name,
        "fsh_offset": mq.offset,
        "length": mq.size,
        "mode": mq.mode,
        "eventfd": mq.eventfd,
        "n_rings": len(st.rings),
        "queue_fsh_offset": st.fsh_offset,
        "queue_data_fsh_offset": st.handles_fsh_offset,
        "queue": {
            "head": st.head,
            "tail": st.tail,
            "cursize": st.cursize,
            "maxsize": st.maxsize,
            "elsize": st.elsize,
            "mutex": st.mutex,
            "condvar": st.condvar,
            "pending_handles": pending,
            "pending_not_listed": n_pending - len(pending),
        },
        "rings": rings,
        "recovered_owner_deaths": mq.recovered_owner_deaths,
        "skipped_signals": mq.skipped_signals,
        "problems": problems,
    }
