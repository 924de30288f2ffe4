"""Fifo segments built in memory exactly as VPP builds them, and an independent auditor.

Reusable by the fifo, mq and session tests:

- (`segment_fixtures.make_segment` formats the fresh segment these work on, as
  ``fifo_segment_init`` does.)
- `carve` reserves bytes from the bump allocator as VPP does for message queues at init.
- `alloc_fifo` creates a fifo as ``fifo_segment_alloc_fifo_w_slice`` / ``fs_try_alloc_fifo`` /
  ``svm_fifo_init`` do: fifo headers carved 32 at a time onto the slice's ``free_fifos`` list,
  one 4 KiB chunk (``pct_first_alloc`` permitting), ``min_alloc`` per protocol.md 4.1.
- `audit` re-reads the whole segment with plain struct decoding (not the code under test) and
  checks the free lists, the counters and the fifo chains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyvcl.fifo.chunks import ChunkAllocator, fl_index_for_size
from pyvcl.segment import Segment
from pyvcl.wire.fifo import SVM_FIFO_CHUNK, SVM_FIFO_SHARED
from pyvcl.wire.segment import (
    FIFO_SEGMENT_HEADER,
    FIFO_SEGMENT_SLICE,
    FREE_LIST_OFFSET_MASK,
    FS_CHUNK_VEC_LEN,
)

M32 = 0xFFFFFFFF
FIFO_HDR_BATCH = 32  # FIFO_SEGMENT_ALLOC_BATCH_SIZE
CACHE_LINE = 64

_FSH, _SL, _F, _CH = FIFO_SEGMENT_HEADER, FIFO_SEGMENT_SLICE, SVM_FIFO_SHARED, SVM_FIFO_CHUNK


def _put(decl: Any, seg: Segment, mapping_off: int, **values: Any) -> None:
    for name, value in values.items():
        decl[name].put(seg.view, mapping_off, value)


def _get(decl: Any, seg: Segment, mapping_off: int, name: str) -> Any:
    return decl[name].get(seg.view, mapping_off)


def carve(seg: Segment, size: int, align: int = CACHE_LINE) -> int:
    """Reserve ``size`` bytes at init time (as VPP does for mqs); fsh-relative offset."""
    off = ChunkAllocator(seg).alloc_aligned(size, align)
    assert off, "segment full"
    fsh = seg.fsh
    _put(_FSH, seg, fsh, n_reserved_bytes=int(_get(_FSH, seg, fsh, "byte_index")))
    return off


def _alloc_fifo_hdr(seg: Segment, slice_index: int) -> int:
    """``fsh_try_alloc_fifo_hdr``: pop the slice's free fifo list, carving 32 headers first."""
    alloc = ChunkAllocator(seg)
    slice_m = seg.slice_at(slice_index)
    free = int(_get(_SL, seg, slice_m, "free_fifos"))
    if not free:
        base = alloc.alloc_aligned(_F.size * FIFO_HDR_BATCH, CACHE_LINE)
        if not base:
            return 0
        head = 0
        for i in range(FIFO_HDR_BATCH):
            f = base + i * _F.size
            seg.view[seg.fsh + f : seg.fsh + f + _F.size] = bytes(_F.size)
            _put(_F, seg, seg.fsh + f, next=head)
            head = f
        _put(_SL, seg, slice_m, free_fifos=head)  # last carved first, as VPP
        free = head
    _put(_SL, seg, slice_m, free_fifos=int(_get(_F, seg, seg.fsh + free, "next")))
    seg.view[seg.fsh + free : seg.fsh + free + _F.size] = bytes(_F.size)
    return free


def alloc_fifo(seg: Segment, data_bytes: int, *, slice_index: int = 0, start: int = 0) -> int:
    """Create a fifo of ``data_bytes`` as VPP does; its fsh-relative offset.

    ``start``: set head = tail = ``start`` and number the chain from it (VPP starts at 0; used
    to test wrap-around of the u32 positions).
    """
    fsh = seg.fsh
    assert data_bytes <= 1 << int(_get(_FSH, seg, fsh, "max_log2_fifo_size"))
    pct = int(_get(_FSH, seg, fsh, "pct_first_alloc"))
    min_size = max(pct * data_bytes // 100, 4096)
    assert fl_index_for_size(min_size) < FS_CHUNK_VEC_LEN
    sf = _alloc_fifo_hdr(seg, slice_index)
    assert sf, "no room for fifo headers"
    alloc = ChunkAllocator(seg)
    c = alloc.alloc(slice_index, min_size)
    assert c, "no room for the first chunk"
    m = fsh + sf
    last = c
    while True:
        nxt = int(_get(_CH, seg, fsh + last, "next"))
        if not nxt:
            break
        last = nxt
    min_alloc = data_bytes >> 3 if data_bytes > 32 << 10 else 4096
    min_alloc = min(min_alloc, 64 << 10)
    _put(
        _F,
        seg,
        m,
        start_chunk=c,
        end_chunk=last,
        size=data_bytes,
        slice_index=slice_index,
        min_alloc=min_alloc,
    )
    init_pointers(seg, sf, start)
    # n_active_fifos (atomic in VPP) and the slice's virtual_mem
    _put(_FSH, seg, fsh, n_active_fifos=int(_get(_FSH, seg, fsh, "n_active_fifos")) + 1)
    slice_m = seg.slice_at(slice_index)
    _put(_SL, seg, slice_m, virtual_mem=int(_get(_SL, seg, slice_m, "virtual_mem")) + data_bytes)
    return sf


def init_pointers(seg: Segment, fifo: int, pos: int) -> None:
    """Renumber the chain from ``pos`` and put head = tail = ``pos`` at its first chunk."""
    fsh = seg.fsh
    m = fsh + fifo
    c = int(_get(_F, seg, m, "start_chunk"))
    first = c
    p = pos & M32
    while c:
        _put(_CH, seg, fsh + c, start_byte=p, enq_rb_index=0, deq_rb_index=0)
        p = (p + int(_get(_CH, seg, fsh + c, "length"))) & M32
        c = int(_get(_CH, seg, fsh + c, "next"))
    _put(_F, seg, m, head=pos & M32, tail=pos & M32, head_chunk=first, tail_chunk=first)


# ---------------------------------------------------------------------------------------------
# Audit


@dataclass
class Audit:
    free: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (slice, fl) -> chunks
    tags: dict[tuple[int, int], int] = field(default_factory=dict)
    fifo_chunks: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)
    n_cached_bytes: int = 0


def _includes(start: int, length: int, pos: int) -> bool:
    return (pos - start) & M32 < length


def audit(seg: Segment, fifos: list[int], *, complete: bool = True) -> Audit:
    """Check the segment's allocator state and the given fifos; raise AssertionError.

    ``complete``: ``fifos`` are all the fifos of the segment, so every carved chunk must be on
    a free list or in one of them.
    """
    fsh, view = seg.fsh, seg.view
    h = _FSH.unpack(view, fsh)
    lo, hi = int(h.start_byte_index), int(h.byte_index)
    assert lo <= hi <= int(h.max_byte_index) <= seg.size - fsh
    result = Audit(n_cached_bytes=int(h.n_cached_bytes))
    seen: dict[int, str] = {}
    per_slice_in_use: dict[int, list[int]] = {}
    total_fl = 0

    def chunk(off: int, what: str) -> Any:
        assert lo <= off and off + _CH.size <= hi, f"{what}: chunk {off:#x} outside [{lo},{hi})"
        assert off not in seen, f"{what}: chunk {off:#x} also in {seen[off]}"
        seen[off] = what
        c = _CH.unpack(view, fsh + off)
        assert off + _CH.size + int(c.length) <= hi
        return c

    for s in range(int(h.n_slices)):
        sl = _SL.unpack(view, seg.slice_at(s))
        heads = _SL["free_chunks"].get(view, seg.slice_at(s))
        fl_bytes = 0
        for fl in range(FS_CHUNK_VEC_LEN):
            word = int(heads[fl])
            result.tags[(s, fl)] = word >> 48
            off = word & FREE_LIST_OFFSET_MASK
            lst: list[int] = []
            while off:
                assert len(lst) < 1 << 20
                c = chunk(off, f"free list {s}/{fl}")
                assert c.length == 4096 << fl, f"chunk {off:#x} of {c.length} on list {fl}"
                lst.append(off)
                off = int(c.next)
            result.free[(s, fl)] = lst
            fl_bytes += len(lst) * (4096 << fl)
        assert int(sl.n_fl_chunk_bytes) == fl_bytes, (s, int(sl.n_fl_chunk_bytes), fl_bytes)
        total_fl += fl_bytes
        per_slice_in_use[s] = [0] * FS_CHUNK_VEC_LEN
    assert int(h.n_cached_bytes) == total_fl, (int(h.n_cached_bytes), total_fl)

    for f in fifos:
        r = _F.unpack(view, fsh + f)
        head, tail, size = int(r.head), int(r.tail), int(r.size)
        assert (tail - head) & M32 <= size, f"fifo {f:#x}: {head=} {tail=} {size=}"
        chain: list[tuple[int, int, int]] = []
        off = int(r.start_chunk)
        prev_end = None
        while off:
            c = chunk(off, f"fifo {f:#x}")
            assert c.enq_rb_index == 0 and c.deq_rb_index == 0
            if prev_end is not None:
                assert int(c.start_byte) == prev_end, f"fifo {f:#x}: chain not contiguous"
            chain.append((off, int(c.start_byte), int(c.length)))
            prev_end = (int(c.start_byte) + int(c.length)) & M32
            per_slice_in_use[int(r.slice_index)][fl_index_for_size(int(c.length))] += 1
            off = int(c.next)
        assert chain, f"fifo {f:#x} has no chunk"
        assert int(r.end_chunk) == chain[-1][0], f"fifo {f:#x}: end_chunk is not the last"
        first, last = chain[0], chain[-1]
        # start_chunk holds head, or head sits at its end (it was the last chunk when the
        # consumer stopped there; the producer may have appended since)
        assert _includes(first[1], first[2], head) or head == (first[1] + first[2]) & M32, (
            f"fifo {f:#x}: start chunk {first} does not hold head {head}"
        )
        # [head, tail) is covered
        assert (tail - first[1]) & M32 <= sum(c[2] for c in chain)
        by_off = {c[0]: c for c in chain}
        if r.head_chunk:
            hc = by_off[int(r.head_chunk)]
            assert _includes(hc[1], hc[2], head), f"fifo {f:#x}: head_chunk misses head"
        if r.tail_chunk:
            tc = by_off[int(r.tail_chunk)]
            assert _includes(tc[1], tc[2], tail), f"fifo {f:#x}: tail_chunk misses tail"
        else:
            assert tail == (last[1] + last[2]) & M32, f"fifo {f:#x}: tail_chunk 0 mid-chain"
        result.fifo_chunks[f] = chain

    if complete:
        for s in range(int(h.n_slices)):
            num = _SL["num_chunks"].get(view, seg.slice_at(s))
            for fl in range(FS_CHUNK_VEC_LEN):
                have = len(result.free[(s, fl)]) + per_slice_in_use[s][fl]
                assert int(num[fl]) == have, f"slice {s} list {fl}: {num[fl]} carved, {have} seen"
    return result
