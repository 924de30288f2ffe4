"""Read-only decoders for VPP shared memory: segments, message queues, fifos.

Every function takes a `pyvcl.segment.Segment` (a live mapping or a `pyvcl.snapshot` rebuild)
and returns plain dicts and lists of ints, strings, bools and None, ready for ``json.dumps``.
Nothing is written and nothing is locked, so what a live segment shows is a racy but useful
picture.  Every offset comes from the `pyvcl.wire` declarations; offsets in the output are
fsh-relative (as VPP hands them out).

Conventions: ports are shown in host order under the field's name, with the stored
(network-order) u16 under ``<name>_raw``; ip46 fields are shown as an address string (IPv4 when
the message's ``is_ip4`` flag says so) with the 16 stored bytes in hex under ``<name>_raw``.
List walks (chunk free lists, free fifo headers, chunk chains) are bounded and detect cycles:
a walk that cannot finish reports ``complete: False`` with ``error``/``error_kind`` (the
exception class, e.g. ``NotCapturedError`` for snapshot bytes that were never captured) and
never hangs.  A bad top-level offset raises `SharedMemoryError`.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

from .errors import RemoteError, SharedMemoryError
from .mq import events
from .segment import Segment
from .wire._decl import Decl
from .wire.enums import SessionEvent, SsvmSegmentType
from .wire.fifo import CHUNK_DATA_OFFSET, SVM_FIFO_CHUNK, SVM_FIFO_SHARED
from .wire.mq import (
    PTHREAD_COND_FIELDS,
    PTHREAD_MUTEX_FIELDS,
    SVM_MSG_Q_MSG,
    SVM_MSG_Q_RING_SHARED,
    SVM_MSG_Q_SHARED,
    SVM_MSG_Q_SHARED_QUEUE,
)
from .wire.segment import (
    FIFO_SEGMENT_HEADER,
    FIFO_SEGMENT_SLICE,
    FREE_LIST_OFFSET_BITS,
    FREE_LIST_OFFSET_MASK,
    FS_MIN_LOG2_CHUNK_SZ,
    SSVM_SHARED_HEADER,
)
from .wire.session import (
    CTRL_EVENT_SLOT_SIZE,
    CTRL_PAYLOADS,
    IP46_ADDRESS,
    SESSION_EVENT,
    SESSION_EVENT_PAYLOAD_OFFSET,
    SESSION_EVENT_SIZE,
    SESSION_RPC_ARGS,
)

MAX_WALK = 1 << 20
"""Upper bound on the elements of any list walk (cycles are caught earlier)."""
MAX_RINGS = 64
"""Sanity bound on ``n_rings`` (session mqs have 2)."""
MAX_SLOTS = 1 << 14
"""Most ring slots, and most pending handles, one message queue lists (the rest are counted)."""
SHOWN_OFFSETS = 16
"""Default number of element offsets a free-list entry lists."""

_POS_MASK = (1 << (8 * SVM_FIFO_SHARED["head"].size)) - 1  # fifo positions wrap mod 2**32
_CHUNK_NEXT = SVM_FIFO_CHUNK["next"]
_CHUNK_LENGTH = SVM_FIFO_CHUNK["length"]
_FIFO_NEXT = SVM_FIFO_SHARED["next"]
_N_RINGS = SVM_MSG_Q_SHARED["n_rings"]
_POSTPONED = SESSION_EVENT["postponed"]
_MUTEX = SVM_MSG_Q_SHARED_QUEUE["mutex"]
_CONDVAR = SVM_MSG_Q_SHARED_QUEUE["condvar"]

# Byte-string payload fields shown as text (NUL-terminated) rather than hex.
_TEXT_FIELDS = frozenset({"segment_name", "uri"})
# Fifo offsets in control payloads -> the payload field naming their segment.
_FIFO_FIELDS = {
    "server_rx_fifo": "segment_handle",
    "server_tx_fifo": "segment_handle",
    "ct_rx_fifo": "ct_segment_handle",
    "ct_tx_fifo": "ct_segment_handle",
    "rx_fifo": "segment_handle",
    "tx_fifo": "segment_handle",
}


# -- generic helpers ------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return value


def _put(out: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        out = out.setdefault(p, {})
    out[leaf] = value


def record(decl: Decl, buf: Any, base: int = 0) -> dict[str, Any]:
    """Every field of ``decl`` at ``base`` in ``buf``: nested dicts for nested structs, lists
    for arrays, hex strings for byte strings."""
    out: dict[str, Any] = {}
    for name, f in decl.fields.items():
        _put(out, name, _plain(f.get(buf, base)))
    return out


def _error(e: Exception) -> dict[str, Any]:
    return {"error": str(e), "error_kind": type(e).__name__}


def _walk(
    seg: Segment, first: int, size: int, what: str, next_of: Callable[[int], int], limit: int
) -> tuple[list[int], dict[str, Any] | None]:
    """Follow a NULL-terminated offset list from ``first``.  ``next_of(mapping_offset)`` returns
    the next element's offset (and may raise `SharedMemoryError` for a malformed element).
    Returns the offsets visited and an error entry if the walk could not finish."""
    offsets: list[int] = []
    seen: set[int] = set()
    off = first
    try:
        while off:
            if off in seen:
                raise SharedMemoryError(f"{what} list loops back to offset {off:#x}")
            if len(offsets) >= limit:
                raise SharedMemoryError(f"{what} list longer than {limit} elements")
            mapping_offset = seg.at(off, size, what)
            seen.add(off)
            offsets.append(off)
            off = next_of(mapping_offset)
    except SharedMemoryError as e:
        return offsets, _error(e)
    return offsets, None


def _list_entry(offsets: list[int], err: dict[str, Any] | None, max_offsets: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "count": None if err else len(offsets),
        "walked": len(offsets),
        "complete": err is None,
        "first_offsets": offsets[:max_offsets],
    }
    if err:
        entry.update(err)
    return entry


# -- segments -----------------------------------------------------------------------------------
def chunk_size(fl_index: int) -> int:
    """Data bytes of the chunks on free list ``fl_index`` (4 KiB << index)."""
    return 1 << (FS_MIN_LOG2_CHUNK_SZ + fl_index)


def walk_chunk_free_list(
    seg: Segment,
    head_word: int,
    fl_index: int,
    *,
    limit: int = MAX_WALK,
    max_offsets: int = SHOWN_OFFSETS,
) -> dict[str, Any]:
    """A tagged chunk free-list head: offset, ABA tag, and the list walked (each chunk must
    have the list's length)."""
    size = chunk_size(fl_index)

    def next_of(mo: int) -> int:
        length = int(_CHUNK_LENGTH.get(seg.view, mo))
        if length != size:
            raise SharedMemoryError(
                f"chunk at {seg.offset_of(mo):#x} on free list {fl_index} has length {length}"
            )
        return int(_CHUNK_NEXT.get(seg.view, mo))

    head = head_word & FREE_LIST_OFFSET_MASK
    offsets, err = _walk(seg, head, SVM_FIFO_CHUNK.size, "free chunk", next_of, limit)
    entry: dict[str, Any] = {
        "fl_index": fl_index,
        "chunk_size": size,
        "head_word": head_word,
        "head_offset": head,
        "tag": head_word >> FREE_LIST_OFFSET_BITS,
    }
    entry.update(_list_entry(offsets, err, max_offsets))
    entry["bytes"] = None if err else len(offsets) * size
    return entry


def walk_free_fifos(
    seg: Segment, head: int, *, limit: int = MAX_WALK, max_offsets: int = SHOWN_OFFSETS
) -> dict[str, Any]:
    """A slice's free fifo-header list (linked through ``svm_fifo_shared_t.next``)."""
    offsets, err = _walk(
        seg,
        head,
        SVM_FIFO_SHARED.size,
        "free fifo header",
        lambda mo: int(_FIFO_NEXT.get(seg.view, mo)),
        limit,
    )
    return {"head": head, **_list_entry(offsets, err, max_offsets)}


def describe_slice(seg: Segment, index: int, *, max_offsets: int = SHOWN_OFFSETS) -> dict[str, Any]:
    mo = seg.slice_at(index)
    s = FIFO_SEGMENT_SLICE.unpack(seg.view, mo)
    lists = [
        walk_chunk_free_list(seg, word, fl, max_offsets=max_offsets)
        for fl, word in enumerate(FIFO_SEGMENT_SLICE["free_chunks"].get(seg.view, mo))
    ]
    problems: list[str] = []
    if all(entry["complete"] for entry in lists):
        listed = sum(int(entry["bytes"]) for entry in lists)
        if listed != s.n_fl_chunk_bytes:
            problems.append(
                f"free lists hold {listed} bytes, n_fl_chunk_bytes is {s.n_fl_chunk_bytes}"
            )
    return {
        "index": index,
        "fsh_offset": seg.offset_of(mo),
        "free_fifos": s.free_fifos,
        "n_fl_chunk_bytes": s.n_fl_chunk_bytes,
        "virtual_mem": s.virtual_mem,
        "num_chunks": list(FIFO_SEGMENT_SLICE["num_chunks"].get(seg.view, mo)),
        "free_chunk_lists": lists,
        "free_fifo_list": walk_free_fifos(seg, s.free_fifos, max_offsets=max_offsets),
        "problems": problems,
    }


def describe_segment(seg: Segment, *, max_offsets: int = SHOWN_OFFSETS) -> dict[str, Any]:
    """ssvm header, fifo segment header, and every slice with its free lists walked."""
    ssvm = record(SSVM_SHARED_HEADER, seg.view, 0)
    try:
        ssvm["type_name"] = SsvmSegmentType(ssvm["type"]).name
    except ValueError:
        ssvm["type_name"] = None
    fsh = record(FIFO_SEGMENT_HEADER, seg.view, seg.fsh)
    slices = [describe_slice(seg, i, max_offsets=max_offsets) for i in range(seg.n_slices)]
    problems: list[str] = []
    cached = sum(int(s["n_fl_chunk_bytes"]) for s in slices)
    if cached != fsh["n_cached_bytes"]:
        problems.append(
            f"slices hold {cached} free-list bytes, n_cached_bytes is {fsh['n_cached_bytes']}"
        )
    if fsh["byte_index"] > fsh["max_byte_index"]:
        problems.append("byte_index is past max_byte_index")
    if fsh["max_byte_index"] > seg.size - seg.fsh:
        problems.append("max_byte_index is past the end of the mapping")
    return {
        "name": seg.name,
        "handle": seg.handle,
        "size": seg.size,
        "fsh_offset": seg.fsh,
        "ssvm": ssvm,
        "fsh": fsh,
        "free_bytes": max(0, fsh["max_byte_index"] - fsh["byte_index"]),
        "slices": slices,
        "vpp_mqs": _try(lambda: discover_vpp_mqs(seg)),
        "problems": problems,
    }


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except SharedMemoryError as e:
        return _error(e)


def guarded(fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``fn(*args, **kwargs)`` (one of the ``describe_*``), or an entry with ``error`` and
    ``error_kind`` if the bytes it needs are bad or missing: one bad object does not end the
    description of the others."""
    try:
        return fn(*args, **kwargs)
    except SharedMemoryError as e:
        return _error(e)


def discover_vpp_mqs(seg: Segment) -> list[int]:
    """Offsets of the VPP worker mqs in a vpp-mq segment, as VCL finds them
    (``fifo_segment_msg_qs_discover``): ``n_mqs`` equal strides after the slices, mq i for VPP
    thread i.  Empty for segments without mqs (``n_mqs`` 0)."""
    h = seg.fifo_header()
    n = int(h.n_mqs)
    if n == 0:
        return []
    span = int(h.n_reserved_bytes) - int(h.start_byte_index)
    if span <= 0 or span % n:
        raise SharedMemoryError(
            f"segment {seg.name!r}: {n} mqs cannot share {span} reserved bytes evenly"
        )
    stride = span // n
    offsets = [int(h.start_byte_index) + i * stride for i in range(n)]
    for off in offsets:
        seg.at(off, stride, "svm_msg_q")
    return offsets


# -- message queues ----------------------------------------------------------------------------
def _swap16(raw: int) -> int:
    return int.from_bytes(raw.to_bytes(2, "little"), "big")


def _ip_text(raw: bytes, is_ip4: bool) -> str:
    if is_ip4:
        return str(ipaddress.IPv4Address(raw[-4:]))
    return str(ipaddress.IPv6Address(raw))


def payload_dict(decl: Decl, buf: Any, base: int = 0) -> dict[str, Any]:
    """A control payload as a dict: ports in host order (+ ``_raw``), ip46 fields as address
    strings (+ ``_raw`` hex), names as text, other byte strings as hex."""
    values = {name: f.get(buf, base) for name, f in decl.fields.items()}
    out: dict[str, Any] = {}
    for name, f in decl.fields.items():
        value = values[name]
        prefix, _, leaf = name.rpartition(".")
        scope = prefix + "." if prefix else ""
        if f.size == IP46_ADDRESS.size and (leaf == "ip" or leaf.endswith("_ip")):
            flag = scope + leaf[:-2] + "is_ip4"
            is_ip4 = bool(values.get(flag, values.get(scope + "is_ip4", 0)))
            _put(out, name, _ip_text(value, is_ip4))
            _put(out, name + "_raw", value.hex())
        elif f.fmt == "H" and (leaf == "port" or leaf.endswith("_port")):
            _put(out, name, _swap16(value))
            _put(out, name + "_raw", value)
        elif leaf in _TEXT_FIELDS and isinstance(value, bytes):
            _put(out, name, value.split(b"\0", 1)[0].decode("utf-8", "backslashreplace"))
        else:
            _put(out, name, _plain(value))
    return out


def describe_event(ring: int, data: bytes) -> dict[str, Any]:
    """One ring slot decoded via `pyvcl.mq.events.decode`; a slot that does not decode is
    reported (``error``, with its ``event_type``), never raised."""
    try:
        ev = events.decode(ring, data)
    except RemoteError as e:
        bad = _error(e)
        if data:
            bad["event_type"] = int(data[0])
        return bad
    out: dict[str, Any] = {
        "event_type": ev.type,
        "type_name": ev.name,
        "postponed": int(_POSTPONED.get(data)),
    }
    decl = CTRL_PAYLOADS.get(ev.type)
    if ev.session_index is not None:
        out["session_index"] = ev.session_index
    elif ev.msg is not None and decl is not None:
        end = SESSION_EVENT_PAYLOAD_OFFSET + decl.size
        out["payload_type"] = decl.c_name
        out["payload"] = payload_dict(decl, data, SESSION_EVENT_PAYLOAD_OFFSET)
        out["nonzero_bytes_after_payload"] = sum(1 for b in data[end:] if b)
    elif ev.type == SessionEvent.CTRL_RPC and len(data) >= SESSION_EVENT_SIZE:
        out["rpc_args"] = record(SESSION_RPC_ARGS, data, SESSION_EVENT_PAYLOAD_OFFSET)
    else:
        out["union"] = bytes(data[SESSION_EVENT_PAYLOAD_OFFSET:SESSION_EVENT_SIZE]).hex()
    return out


# Slot sizes of the session rings (session_event_t, and the ctrl slot).
_SESSION_ELSIZE = {0: SESSION_EVENT_SIZE, 1: CTRL_EVENT_SLOT_SIZE}


def _describe_ring(seg: Segment, index: int, offset: int) -> tuple[dict[str, Any], int]:
    """Ring ``index`` at fsh offset ``offset``; returns it and the offset after its slots.
    Raises `SharedMemoryError` if its header or slots are not inside the mapping; lists at most
    `MAX_SLOTS` slots, and none of a ring whose slots have no size."""
    mo = seg.at(offset, SVM_MSG_Q_RING_SHARED.size, "svm_msg_q_ring_shared_t")
    r = SVM_MSG_Q_RING_SHARED.unpack(seg.view, mo)
    data_offset = offset + SVM_MSG_Q_RING_SHARED.size
    nitems, elsize = int(r.nitems), int(r.elsize)
    total = nitems * elsize
    data_mo = seg.at(data_offset, total, f"ring {index} slots") if total else 0
    problems: list[str] = []
    if elsize != _SESSION_ELSIZE.get(index, elsize):
        problems.append(f"elsize {elsize}, session ring {index} slots are {_SESSION_ELSIZE[index]}")
    if r.cursize > nitems:
        problems.append(f"cursize {r.cursize} > nitems {nitems}")
    if nitems and (r.head >= nitems or r.tail >= nitems):
        problems.append(f"head {r.head} / tail {r.tail} outside {nitems} slots")
    walkable = nitems if elsize else 0
    if nitems and not elsize:
        problems.append(f"elsize 0: {nitems} slots of no size, none listed")
    tail = min(int(r.tail), walkable)
    wrapped = bool(walkable) and (
        r.cursize >= nitems
        or bytes(seg.view[data_mo + tail * elsize : data_mo + total]).strip(b"\0") != b""
    )
    n_slots = walkable if wrapped else tail
    slots = []
    for elt in range(min(n_slots, MAX_SLOTS)):
        at = data_mo + elt * elsize
        slot = describe_event(index, bytes(seg.view[at : at + elsize]))
        slot["elt"] = elt
        slot["live"] = (elt - r.head) % nitems < r.cursize
        slot["age"] = (r.tail - 1 - elt) % nitems
        slots.append(slot)
    ring = {
        "index": index,
        "fsh_offset": offset,
        "data_fsh_offset": data_offset,
        **r._asdict(),
        "wrapped": wrapped,
        "slots": slots,
        "slots_not_listed": n_slots - len(slots),
        "event_counts": dict(Counter(str(s.get("type_name")) for s in slots)),
        "problems": problems,
    }
    return ring, data_offset + total


def describe_mq(seg: Segment, offset: int) -> dict[str, Any]:
    """An ``svm_msg_q`` at fsh offset ``offset``: queue indices, glibc mutex/condvar words,
    pending message handles, and each ring with every slot that has held a message (all slots
    once the ring has wrapped): ``live`` = not yet consumed, ``age`` 0 = newest.

    Raises `SharedMemoryError` if the header or the handles are not inside the mapping; a ring
    that is not is reported under ``problems`` (and ends the walk: the next ring's place
    depends on it).  At most `MAX_SLOTS` handles and slots per ring are listed."""
    mo = seg.at(offset, SVM_MSG_Q_SHARED.size + SVM_MSG_Q_SHARED_QUEUE.size, "svm_msg_q")
    n_rings = int(_N_RINGS.get(seg.view, mo))
    q_offset = offset + SVM_MSG_Q_SHARED.size
    q_mo = mo + SVM_MSG_Q_SHARED.size
    q = SVM_MSG_Q_SHARED_QUEUE.unpack(seg.view, q_mo)
    problems: list[str] = []
    if q.elsize != SVM_MSG_Q_MSG.size:
        raise SharedMemoryError(
            f"mq at {offset:#x}: queue elsize {q.elsize}, not {SVM_MSG_Q_MSG.size}"
        )
    if n_rings > MAX_RINGS:
        raise SharedMemoryError(f"mq at {offset:#x}: {n_rings} rings")
    data_offset = q_offset + SVM_MSG_Q_SHARED_QUEUE.size
    maxsize = int(q.maxsize)
    data_mo = seg.at(data_offset, maxsize * q.elsize, "mq handles") if maxsize else 0
    if q.cursize > maxsize:
        problems.append(f"queue cursize {q.cursize} > maxsize {maxsize}")
    if maxsize and (q.head >= maxsize or q.tail >= maxsize):
        problems.append(f"queue head {q.head} / tail {q.tail} outside {maxsize} handles")
    n_pending = min(int(q.cursize), maxsize)
    pending = [
        record(SVM_MSG_Q_MSG, seg.view, data_mo + ((q.head + i) % maxsize) * q.elsize)
        for i in range(min(n_pending, MAX_SLOTS))
    ]
    queue = {
        "head": q.head,
        "tail": q.tail,
        "cursize": q.cursize,
        "maxsize": q.maxsize,
        "elsize": q.elsize,
        "mutex": record(PTHREAD_MUTEX_FIELDS, seg.view, q_mo + _MUTEX.offset),
        "condvar": record(PTHREAD_COND_FIELDS, seg.view, q_mo + _CONDVAR.offset),
        "pending_handles": pending,
        "pending_not_listed": n_pending - len(pending),
    }
    rings: list[dict[str, Any]] = []
    ring_offset = data_offset + maxsize * q.elsize
    for i in range(n_rings):
        try:
            ring, ring_offset = _describe_ring(seg, i, ring_offset)
        except SharedMemoryError as e:
            problems.append(f"ring {i} at {ring_offset:#x}: {e.strerror}")
            break
        rings.append(ring)
    for h in pending:
        if h["ring_index"] >= len(rings) or h["elt_index"] >= rings[h["ring_index"]]["nitems"]:
            problems.append(f"pending handle {h} points outside the rings")
    return {
        "fsh_offset": offset,
        "length": ring_offset - offset,
        "n_rings": n_rings,
        "queue_fsh_offset": q_offset,
        "queue_data_fsh_offset": data_offset,
        "queue": queue,
        "rings": rings,
        "problems": problems,
    }


def fifo_refs(mq: dict[str, Any]) -> list[dict[str, Any]]:
    """The fifos named by the control events of a `describe_mq` result (ACCEPTED, CONNECTED,
    BOUND, WORKER_UPDATE_REPLY): offset, payload field, segment and session handles."""
    refs = []
    for ring in mq["rings"]:
        for slot in ring["slots"]:
            payload = slot.get("payload") or {}
            for fld, handle_fld in _FIFO_FIELDS.items():
                if payload.get(fld):
                    refs.append(
                        {
                            "fifo": payload[fld],
                            "field": fld,
                            "segment_handle": payload.get(handle_fld),
                            "session_handle": payload.get("handle"),
                            "event": slot["type_name"],
                            "ring": ring["index"],
                            "elt": slot["elt"],
                            "live": slot["live"],
                        }
                    )
    return refs


# -- fifos ------------------------------------------------------------------------------------
def _covers(chunk: dict[str, Any], pos: int) -> bool:
    return bool((pos - chunk["start_byte"]) & _POS_MASK < chunk["length"])


def describe_fifo(seg: Segment, offset: int, *, peek: int = 0) -> dict[str, Any]:
    """An ``svm_fifo_shared_t`` at fsh offset ``offset``: every field, the chunk chain walked
    from ``start_chunk``, consistency checks (``problems``; ``ok`` when none), whether it sits
    on its slice's free list, and with ``peek`` > 0 up to that many bytes at ``head``."""
    mo = seg.at(offset, SVM_FIFO_SHARED.size, "svm_fifo_shared_t")
    out: dict[str, Any] = {"fsh_offset": offset, **record(SVM_FIFO_SHARED, seg.view, mo)}
    head, tail, size = int(out["head"]), int(out["tail"]), int(out["size"])
    present = (tail - head) & _POS_MASK
    problems: list[str] = []
    out["bytes_present"] = present
    out["free_space"] = size - present
    if present > size:
        problems.append(f"{present} bytes present in a {size}-byte fifo")
    if out["slice_index"] >= seg.n_slices:
        problems.append(f"slice_index {out['slice_index']} >= n_slices {seg.n_slices}")

    chunks: list[dict[str, Any]] = []

    def next_of(cmo: int) -> int:
        c = record(SVM_FIFO_CHUNK, seg.view, cmo)
        chunks.append({"fsh_offset": seg.offset_of(cmo), **c})
        return int(c["next"])

    _, err = _walk(seg, out["start_chunk"], SVM_FIFO_CHUNK.size, "fifo chunk", next_of, MAX_WALK)
    out["chunks"] = chunks
    out["chain_complete"] = err is None
    if err:
        out["chain_error"] = err
        problems.append(f"chunk chain: {err['error']}")
    head_cover = next((c for c in chunks if _covers(c, head)), None)
    tail_cover = next((c for c in chunks if _covers(c, tail)), None)
    out["head_covered_by"] = head_cover["fsh_offset"] if head_cover else None
    out["tail_covered_by"] = tail_cover["fsh_offset"] if tail_cover else None
    out["chain_bytes"] = sum(int(c["length"]) for c in chunks)
    if not chunks:
        if out["end_chunk"] or out["head_chunk"] or out["tail_chunk"]:
            problems.append("no start_chunk but end/head/tail chunk set")
    elif err is None:
        problems += _chain_problems(out, chunks, head, tail, present)
    out["on_free_fifo_list"], free_err = _on_free_list(seg, offset, int(out["slice_index"]))
    if free_err:
        out["free_fifo_list_error"] = free_err
    if peek > 0:
        try:
            out["head_data"] = _peek(seg, chunks, head, min(peek, present)).hex()
        except SharedMemoryError as e:
            out["head_data_error"] = _error(e)
    out["problems"] = problems
    out["ok"] = not problems
    return out


def _chain_problems(
    f: dict[str, Any], chunks: list[dict[str, Any]], head: int, tail: int, present: int
) -> list[str]:
    problems: list[str] = []
    for prev, c in itertools.pairwise(chunks):
        if (prev["start_byte"] + prev["length"]) & _POS_MASK != c["start_byte"]:
            problems.append(
                f"chunk {c['fsh_offset']:#x} starts at {c['start_byte']}, not at the end of "
                f"{prev['fsh_offset']:#x} ({prev['start_byte']}+{prev['length']})"
            )
    if any(c["length"] == 0 for c in chunks):
        problems.append("a chunk has length 0")
    if f["end_chunk"] != chunks[-1]["fsh_offset"]:
        problems.append(f"end_chunk {f['end_chunk']:#x} is not the last chunk")
    by_offset = {c["fsh_offset"]: c for c in chunks}
    for name, pos in (("head", head), ("tail", tail)):
        ref = f[name + "_chunk"]
        if ref and ref not in by_offset:
            problems.append(f"{name}_chunk {ref:#x} is not in the chain")
        elif ref and not _covers(by_offset[ref], pos):
            problems.append(f"{name}_chunk {ref:#x} does not cover {name} {pos}")
    first, chain = chunks[0]["start_byte"], sum(int(c["length"]) for c in chunks)
    for name, pos in (("head", head), ("tail", tail)):
        if (pos - first) & _POS_MASK > chain:
            problems.append(f"{name} {pos} is outside the chain [{first}, {first}+{chain}]")
    if ((head - first) & _POS_MASK) + present > chain:
        problems.append(f"the chain does not hold the {present} bytes present")
    return problems


def _on_free_list(seg: Segment, offset: int, slice_index: int) -> tuple[bool | None, Any]:
    """Whether the fifo header is on its slice's free list (None if that cannot be told)."""
    if slice_index >= seg.n_slices:
        return None, None
    head = int(FIFO_SEGMENT_SLICE["free_fifos"].get(seg.view, seg.slice_at(slice_index)))
    found = False

    def next_of(mo: int) -> int:
        nonlocal found
        if seg.offset_of(mo) == offset:
            found = True
            return 0
        return int(_FIFO_NEXT.get(seg.view, mo))

    _, err = _walk(seg, head, SVM_FIFO_SHARED.size, "free fifo header", next_of, MAX_WALK)
    if found:
        return True, None
    return (None, err) if err else (False, None)


def _peek(seg: Segment, chunks: list[dict[str, Any]], pos: int, n: int) -> bytes:
    """Up to ``n`` bytes from position ``pos`` onwards, read across chunks."""
    out = bytearray()
    for c in chunks:
        if len(out) >= n:
            break
        if not _covers(c, pos):
            continue
        skip = (pos - c["start_byte"]) & _POS_MASK
        take = min(n - len(out), int(c["length"]) - skip)
        mo = seg.at(c["fsh_offset"] + CHUNK_DATA_OFFSET + skip, take, "fifo data")
        out += seg.view[mo : mo + take]
        pos = (pos + take) & _POS_MASK
    return bytes(out)


__all__ = [
    "MAX_WALK",
    "chunk_size",
    "describe_event",
    "describe_fifo",
    "describe_mq",
    "describe_segment",
    "describe_slice",
    "discover_vpp_mqs",
    "fifo_refs",
    "payload_dict",
    "record",
    "walk_chunk_free_list",
    "walk_free_fifos",
]
