"""Fifo chunks in a shared segment: the lock-free free lists and the bump allocator.

VPP and every app attached to a segment allocate and free fifo data chunks concurrently, so
this module does exactly what ``src/svm/fifo_segment.c`` does, in the same order, with the same
atomic operations (protocol.md 3.5-3.6):

- per (slice, size class) a stack of free chunks whose head word carries the chunk offset in its
  low 48 bits and an ABA tag in its high 16 bits, incremented on every push and pop, updated by
  an 8-byte compare-and-swap (``fss_chunk_free_list_push/_push_list/_pop``);
- the segment's bump allocator (``fsh_alloc_aligned``): ``byte_index`` advanced by CAS, never
  given back;
- chunk allocation (``fsh_try_alloc_chunk``, ``fs_try_alloc_chunk_slow``,
  ``fss_fl_try_alloc_multi_chunk``) carving batches of 32 chunks, or 1, when a list is empty,
  and chunk freeing (``fsh_slice_collect_chunks``);
- the counters VPP keeps beside them: slice ``n_fl_chunk_bytes`` (relaxed add/sub), segment
  ``n_cached_bytes`` (release add/sub) and slice ``num_chunks[]``.

Everything read from the segment is checked before use: chunk offsets must lie inside the
mapping and be 8-aligned, chunk lengths must be a power of two between 4 KiB and 4 MiB and match
the list they sit on, and every walk is bounded by the number of chunks the segment could hold.
A violation raises `SharedMemoryError`; it never loops forever or touches memory outside the
mapping.  Offsets in this API are fsh-relative (``fs_sptr_t``), as VPP hands them out.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from ..atomics import AtomicRegion
from ..errors import SharedMemoryError
from ..segment import Segment
from ..wire._decl import Decl
from ..wire.fifo import SVM_FIFO_CHUNK
from ..wire.segment import (
    FIFO_SEGMENT_HEADER,
    FIFO_SEGMENT_SLICE,
    FREE_LIST_OFFSET_MASK,
    FREE_LIST_TAG_MASK,
    FREE_LIST_TAG_ONE,
    FS_CHUNK_VEC_LEN,
    FS_MIN_LOG2_CHUNK_SZ,
)

__all__ = [
    "CHUNK_ALIGN",
    "CHUNK_HDR_SIZE",
    "FIFO_SEGMENT_ALLOC_BATCH_SIZE",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "ChunkAllocator",
    "ChunkInfo",
    "fl_index_for_size",
    "fl_index_to_size",
    "span_codec",
]

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF

MIN_CHUNK_SIZE = 1 << FS_MIN_LOG2_CHUNK_SZ  # FIFO_SEGMENT_MIN_FIFO_SIZE, list 0
MAX_CHUNK_SIZE = MIN_CHUNK_SIZE << (FS_CHUNK_VEC_LEN - 1)  # 1 << FS_MAX_LOG2_CHUNK_SZ, list 10
FIFO_SEGMENT_ALLOC_BATCH_SIZE = 32  # src/svm/fifo_segment.h: chunks carved per batch
BATCH_CARVE_MAX_CHUNK = 64 << 10
"""Chunks larger than this (the largest ``min_alloc``, ``svm_fifo_init``) are carved one at a
time: VPP carves a batch of 32 of any size, but pyvcl's fifos grow by steps of up to 1 MiB
(`pyvcl.fifo.fifo.grow_step`), and 32 of those would tie up 32 MiB of the segment in one free
list that smaller requests cannot use."""
CHUNK_ALIGN = 8  # fsh_alloc(): chunks are carved 8-aligned (the header is 24 bytes)
CHUNK_HDR_SIZE = SVM_FIFO_CHUNK.size  # data follows the header
_CAS_LIMIT = 1 << 20  # a CAS that keeps failing this often means the word is being scribbled on


def span_codec(decl: Decl, first: str, last: str) -> tuple[int, struct.Struct]:
    """The offset of field ``first`` and a `struct.Struct` reading ``first`` .. ``last`` (in
    declaration order, scalars only) in one call, padding skipped -- derived from ``decl`` so no
    layout number is written outside ``pyvcl.wire``."""
    fields = list(decl.fields.values())
    names = [f.name for f in fields]
    sel = fields[names.index(first) : names.index(last) + 1]
    fmt, pos = "<", sel[0].offset
    for f in sel:
        if not f.is_scalar:
            raise TypeError(f"{decl.c_name}.{f.name} is not a scalar")
        if f.offset > pos:
            fmt += f"{f.offset - pos}x"
        fmt += f.fmt
        pos = f.offset + f.size
    return sel[0].offset, struct.Struct(fmt)


def fl_index_for_size(size: int) -> int:
    """Free list for a request of ``size`` bytes (``fs_freelist_for_size``)."""
    if size < MIN_CHUNK_SIZE:
        return 0
    return min((size - 1).bit_length() - FS_MIN_LOG2_CHUNK_SZ, FS_CHUNK_VEC_LEN - 1)


def fl_index_to_size(fl_index: int) -> int:
    """Chunk data size held by free list ``fl_index`` (``fs_freelist_index_to_size``)."""
    return MIN_CHUNK_SIZE << fl_index


class ChunkInfo(NamedTuple):
    """A chunk header as read (and checked): fsh-relative ``offset`` and its fields."""

    offset: int
    start_byte: int
    length: int
    next: int
    enq_rb_index: int
    deq_rb_index: int


# Layout, all from the declarations.
_CH = SVM_FIFO_CHUNK
CH_NEXT = _CH.offset("next")
CH_RB = _CH.offset("enq_rb_index")
_, CH_HDR = span_codec(_CH, "start_byte", "next")  # (start_byte, length, next)
_, CH_RB_CODEC = span_codec(_CH, "enq_rb_index", "deq_rb_index")
CH_FULL = _CH.codec
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_FSH = FIFO_SEGMENT_HEADER
_SL = FIFO_SEGMENT_SLICE
_SL_FREE_CHUNKS = _SL.offset("free_chunks")
_SL_FREE_CHUNK_SIZE = _SL["free_chunks"].size // FS_CHUNK_VEC_LEN
_SL_NUM_CHUNKS = _SL.offset("num_chunks")
_SL_NUM_CHUNK_SIZE = _SL["num_chunks"].size // FS_CHUNK_VEC_LEN
_SL_FL_BYTES = _SL.offset("n_fl_chunk_bytes")


class ChunkAllocator:
    """Chunk allocation and freeing in one mapped `Segment`, interoperable with VPP.

    ``alloc`` / ``free`` are what a fifo producer / consumer need; ``pop``, ``push``,
    ``push_list``, ``alloc_aligned`` and ``carve_batch`` are the primitives, exposed for tests
    and tools.  All offsets are fsh-relative.  Cheap to create (one per `Fifo`).
    """

    __slots__ = (
        "_cached_m",
        "_fsh",
        "_limit",
        "_load64",
        "_slices",
        "_view",
        "atomics",
        "byte_index_m",
        "max_byte_index_m",
        "max_chunks",
        "segment",
    )

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.atomics: AtomicRegion = segment.atomics
        self._load64: Callable[[int], int] = self.atomics.load64
        self._view = segment.view
        self._fsh = segment.fsh
        self._limit = segment.size  # chunk header + data must end at or before this
        self.byte_index_m = segment.fsh + _FSH.offset("byte_index")
        self.max_byte_index_m = segment.fsh + _FSH.offset("max_byte_index")
        self._cached_m = segment.fsh + _FSH.offset("n_cached_bytes")
        self._slices = [segment.slice_at(i) for i in range(segment.n_slices)]
        # Upper bound on the number of chunks in any list or chain: bounds every walk.
        self.max_chunks = (segment.size - segment.fsh) // (CHUNK_HDR_SIZE + MIN_CHUNK_SIZE) + 1

    # -- checked reads ---------------------------------------------------------------------------
    def chunk(self, off: int, expect_length: int = 0) -> tuple[int, int, int, int]:
        """Check the chunk at fsh-relative ``off``; return (mapping offset, start_byte, length,
        next).  ``expect_length``: the length it must have (a free list's size), 0 = any valid."""
        m = self._fsh + off
        if off <= 0 or off & 7 or m + CHUNK_HDR_SIZE > self._limit:
            raise SharedMemoryError(
                f"segment {self.segment.name!r}: chunk offset {off:#x} is outside the segment "
                "or misaligned"
            )
        start, length, nxt = CH_HDR.unpack_from(self._view, m)
        if expect_length:
            if length != expect_length:
                raise SharedMemoryError(
                    f"segment {self.segment.name!r}: chunk {off:#x} has length {length} on the "
                    f"{expect_length}-byte free list"
                )
        elif length & (length - 1) or not MIN_CHUNK_SIZE <= length <= MAX_CHUNK_SIZE:
            raise SharedMemoryError(
                f"segment {self.segment.name!r}: chunk {off:#x} has invalid length {length}"
            )
        if m + CHUNK_HDR_SIZE + length > self._limit:
            raise SharedMemoryError(
                f"segment {self.segment.name!r}: chunk {off:#x} (+{length}) ends outside the "
                "segment"
            )
        return m, start, length, nxt

    def read_chunk(self, off: int) -> ChunkInfo:
        """The checked header of the chunk at ``off`` (cold path)."""
        m = self.chunk(off)[0]
        return ChunkInfo(off, *CH_FULL.unpack_from(self._view, m))

    def slice_m(self, slice_index: int) -> int:
        """Mapping offset of slice ``slice_index`` (checked against ``n_slices``)."""
        if 0 <= slice_index < len(self._slices):
            return self._slices[slice_index]
        return self.segment.slice_at(slice_index)  # raises

    def _head_m(self, slice_index: int, fl: int) -> int:
        if not 0 <= fl < FS_CHUNK_VEC_LEN:
            raise ValueError(f"free list index {fl} out of range")
        return self.slice_m(slice_index) + _SL_FREE_CHUNKS + fl * _SL_FREE_CHUNK_SIZE

    # -- counters --------------------------------------------------------------------------------
    def n_free_bytes(self) -> int:
        """Space left to the bump allocator (``fsh_n_free_bytes``), 0 if inconsistent."""
        cur = self._load64(self.byte_index_m)
        top = int(_U64.unpack_from(self._view, self.max_byte_index_m)[0])
        return max(0, top - cur)

    def n_cached_bytes(self) -> int:
        return int(self._load64(self._cached_m))

    def fl_chunk_bytes(self, slice_index: int) -> int:
        """Slice ``n_fl_chunk_bytes``: bytes on the slice's free lists."""
        return int(self._load64(self.slice_m(slice_index) + _SL_FL_BYTES))

    def num_chunks(self, slice_index: int) -> list[int]:
        """Slice ``num_chunks[]``: chunks ever carved, per size class."""
        base = self.slice_m(slice_index) + _SL_NUM_CHUNKS
        return [
            int(_U32.unpack_from(self._view, base + i * _SL_NUM_CHUNK_SIZE)[0])
            for i in range(FS_CHUNK_VEC_LEN)
        ]

    def _counters_sub(self, slice_m: int, n: int) -> None:
        a = self.atomics
        a.fetch_sub64(slice_m + _SL_FL_BYTES, n)  # fss_fl_chunk_bytes_sub
        a.fetch_sub64(self._cached_m, n)  # fsh_cached_bytes_sub

    def _counters_add(self, slice_m: int, n: int) -> None:
        a = self.atomics
        a.fetch_add64(slice_m + _SL_FL_BYTES, n)  # fss_fl_chunk_bytes_add
        a.fetch_add64(self._cached_m, n)  # fsh_cached_bytes_add

    # -- the tagged stacks -----------------------------------------------------------------------
    def head(self, slice_index: int, fl: int) -> tuple[int, int]:
        """(offset of the first chunk or 0, ABA tag) of free list ``fl`` of a slice."""
        word = self._load64(self._head_m(slice_index, fl))
        return word & FREE_LIST_OFFSET_MASK, word >> 48

    def pop(self, slice_index: int, fl: int) -> int:
        """Pop a chunk off free list ``fl`` (``fss_chunk_free_list_pop``); 0 if empty.

        The chunk's ``next`` is left as it was on the list: callers set it.
        """
        head_m = self._head_m(slice_index, fl)
        size = MIN_CHUNK_SIZE << fl
        a = self.atomics
        old = a.load64(head_m)
        fsh, limit = self._fsh, self._limit
        for _ in range(_CAS_LIMIT):
            off = old & FREE_LIST_OFFSET_MASK
            if not off:
                return 0
            try:
                nxt = self.chunk(off, size)[3]
                if nxt > FREE_LIST_OFFSET_MASK or nxt & 7 or fsh + nxt >= limit:
                    raise SharedMemoryError(
                        f"segment {self.segment.name!r}: free chunk {off:#x} links to {nxt:#x}"
                    )
            except SharedMemoryError:
                # Either the list is corrupt, or another side popped and reused the chunk while
                # we read it; in the second case the head word has moved on: retry.
                seen = a.load64(head_m)
                if seen == old:
                    raise
                old = seen
                continue
            new = nxt + ((old + FREE_LIST_TAG_ONE) & FREE_LIST_TAG_MASK)
            seen = a.cas64(head_m, old, new)
            if seen == old:
                return off
            old = seen
        raise SharedMemoryError(f"segment {self.segment.name!r}: free list head never settles")

    def push(self, slice_index: int, fl: int, chunk: int) -> None:
        """Push one chunk (``fss_chunk_free_list_push``)."""
        self.push_list(slice_index, fl, chunk, chunk)

    def push_list(self, slice_index: int, fl: int, first: int, last: int) -> None:
        """Push the already linked list ``first`` .. ``last`` (``fss_chunk_free_list_push_list``);
        one tag increment."""
        if not 0 < first <= FREE_LIST_OFFSET_MASK:
            raise ValueError(f"chunk offset {first:#x} cannot go on a free list")
        self.chunk(first)
        self._push(self._head_m(slice_index, fl), first, self.chunk(last)[0] + CH_NEXT)

    def _push(self, head_m: int, first: int, last_next_m: int) -> None:
        a, view = self.atomics, self._view
        old = a.load64(head_m)
        for _ in range(_CAS_LIMIT):
            _U64.pack_into(view, last_next_m, old & FREE_LIST_OFFSET_MASK)
            new = first + ((old + FREE_LIST_TAG_ONE) & FREE_LIST_TAG_MASK)
            seen = a.cas64(head_m, old, new)
            if seen == old:
                return
            old = seen
        raise SharedMemoryError(f"segment {self.segment.name!r}: free list head never settles")

    def free_list(self, slice_index: int, fl: int) -> list[int]:
        """Offsets of the chunks on free list ``fl`` (a snapshot; checked, bounded walk)."""
        off = self.head(slice_index, fl)[0]
        size = fl_index_to_size(fl)
        out: list[int] = []
        while off:
            if len(out) >= self.max_chunks:
                raise SharedMemoryError(
                    f"segment {self.segment.name!r}: free list {fl} of slice {slice_index} "
                    "is cyclic"
                )
            out.append(off)
            off = self.chunk(off, size)[3]
        return out

    # -- bump allocator --------------------------------------------------------------------------
    def alloc_aligned(self, size: int, align: int = CHUNK_ALIGN) -> int:
        """Carve ``size`` bytes from the segment (``fsh_alloc_aligned``); fsh-relative offset,
        or 0 when the segment is full.  Never given back."""
        a = self.atomics
        top = int(_U64.unpack_from(self._view, self.max_byte_index_m)[0])
        if self._fsh + top > self._limit:
            raise SharedMemoryError(
                f"segment {self.segment.name!r}: max_byte_index {top:#x} is beyond the mapping"
            )
        size = (size + align - 1) & -align
        cur = a.load64(self.byte_index_m)
        for _ in range(_CAS_LIMIT):
            start = (cur + align - 1) & -align
            new = start + size
            if new >= top:
                return 0
            seen = a.cas64(self.byte_index_m, cur, new)
            if seen == cur:
                return start
            cur = seen
        raise SharedMemoryError(f"segment {self.segment.name!r}: byte_index never settles")

    def carve_batch(self, slice_index: int, fl: int, batch: int) -> bool:
        """Carve ``batch`` chunks of list ``fl`` and push them (``fsh_try_alloc_chunk_batch``)."""
        if batch <= 0:
            return False
        slice_m = self.slice_m(slice_index)
        size = fl_index_to_size(fl)
        stride = CHUNK_HDR_SIZE + size
        base = self.alloc_aligned(stride * batch, CHUNK_ALIGN)
        if not base:
            return False
        if base > FREE_LIST_OFFSET_MASK:
            raise SharedMemoryError(f"segment {self.segment.name!r}: offset {base:#x} too large")
        view, fsh = self._view, self._fsh
        first = 0  # the list head is the last chunk carved, its tail the first
        for i in range(batch):
            c = base + i * stride
            CH_FULL.pack_into(view, fsh + c, 0, size, first, 0, 0)
            first = c
        self.push_list(slice_index, fl, first, base)
        a = self.atomics
        a.fetch_add32(slice_m + _SL_NUM_CHUNKS + fl * _SL_NUM_CHUNK_SIZE, batch)
        self._counters_add(slice_m, batch * size)
        return True

    # -- allocation ------------------------------------------------------------------------------
    def alloc(self, slice_index: int, data_bytes: int) -> int:
        """Allocate chunk memory for ``data_bytes`` (``fsh_alloc_chunk``).

        Returns the first chunk of a ``next``-linked, 0-terminated list (usually one chunk of
        ``4096 << fl_index_for_size(data_bytes)`` bytes; several smaller ones when memory is
        short), or 0.  The chunks' ``start_byte`` and rb indices are for the caller to set.
        """
        fl = fl_index_for_size(data_bytes)
        size = MIN_CHUNK_SIZE << fl
        if data_bytes <= size:
            c = self.pop(slice_index, fl)
            if c:
                self._take(slice_index, c, size)
                return c
        return self._alloc_slow(slice_index, fl, data_bytes)

    def _take(self, slice_index: int, c: int, size: int) -> None:
        """A chunk just popped for a fifo: unlink it and count it off the free lists (one per
        write that crosses a chunk end, so written out rather than through helpers)."""
        _U64.pack_into(self._view, self._fsh + c + CH_NEXT, 0)
        a = self.atomics
        a.fetch_sub64(self.slice_m(slice_index) + _SL_FL_BYTES, size)  # fss_fl_chunk_bytes_sub
        a.fetch_sub64(self._cached_m, size)  # fsh_cached_bytes_sub

    def _alloc_slow(self, slice_index: int, fl: int, data_bytes: int) -> int:
        """``fs_try_alloc_chunk_slow``."""
        n_free = self.n_free_bytes()
        chunk_sz = fl_index_to_size(fl)
        if chunk_sz < data_bytes <= self.fl_chunk_bytes(slice_index):
            c = self._alloc_multi(slice_index, data_bytes)
            if c:
                return c
        if chunk_sz <= n_free:
            batch = FIFO_SEGMENT_ALLOC_BATCH_SIZE
            if chunk_sz * batch > n_free or chunk_sz > BATCH_CARVE_MAX_CHUNK:
                batch = 1
            if self.carve_batch(slice_index, fl, batch) and data_bytes <= chunk_sz:
                c = self.pop(slice_index, fl)
                if c:
                    self._take(slice_index, c, chunk_sz)
                    return c
        # multi_chunk: build the request from smaller chunks
        if data_bytes <= self.fl_chunk_bytes(slice_index):
            c = self._alloc_multi(slice_index, data_bytes)
            if c:
                return c
            batch = n_free // MIN_CHUNK_SIZE
            if not batch or not self.carve_batch(slice_index, 0, batch):
                return 0
        fl_bytes = self.fl_chunk_bytes(slice_index)
        if data_bytes <= fl_bytes + n_free:
            if n_free < MIN_CHUNK_SIZE:
                return 0
            batch = max(0, data_bytes - fl_bytes) // MIN_CHUNK_SIZE
            batch = min(batch + 1, n_free // MIN_CHUNK_SIZE)
            if not self.carve_batch(slice_index, 0, batch):
                return 0
            return self._alloc_multi(slice_index, data_bytes)
        return 0

    def _alloc_multi(self, slice_index: int, data_bytes: int) -> int:
        """``fss_fl_try_alloc_multi_chunk``: a list of smaller chunks covering the request."""
        fl = fl_index_for_size(data_bytes)
        fl_size = fl_index_to_size(fl)
        if fl > 0 and data_bytes <= fl_size:
            fl -= 1
            fl_size >>= 1
        view, fsh = self._view, self._fsh
        req = data_bytes
        n_alloc = 0
        first = 0
        held: set[int] = set()
        while req:
            c = self.pop(slice_index, fl)
            if c:
                if c in held:  # popped twice: the list loops back into itself
                    self._give_back(slice_index, first, held - {c})
                    raise SharedMemoryError(
                        f"segment {self.segment.name!r}: chunk {c:#x} is on a free list twice"
                    )
                held.add(c)
                _U64.pack_into(view, fsh + c + CH_NEXT, first)
                first = c
                n_alloc += fl_size
                req -= min(fl_size, req)
                continue
            if fl == 0:
                # Failed with the smallest chunks too: give back what we took, then try one
                # chunk larger than the request.
                self._give_back(slice_index, first, held)
                first, n_alloc = 0, 0
                fl = fl_index_for_size(data_bytes) + 1
                if fl >= FS_CHUNK_VEC_LEN:
                    return 0
                first = self.pop(slice_index, fl)
                if not first:
                    return 0
                _U64.pack_into(view, fsh + first + CH_NEXT, 0)
                n_alloc = fl_index_to_size(fl)
                break
            fl -= 1
            fl_size >>= 1
        self._counters_sub(self.slice_m(slice_index), n_alloc)
        return first

    def _give_back(self, slice_index: int, first: int, held: set[int]) -> None:
        """Push back, one by one, chunks popped by `_alloc_multi` (no counter change)."""
        c = first
        for _ in range(len(held)):
            if c not in held:
                break
            _m, _start, length, nxt = self.chunk(c)
            self.push(slice_index, fl_index_for_size(length), c)
            c = nxt

    # -- freeing ---------------------------------------------------------------------------------
    def chain(self, first: int) -> list[tuple[int, int]]:
        """(offset, length) of each chunk of the 0-terminated list at ``first`` (checked)."""
        out: list[tuple[int, int]] = []
        c = first
        while c:
            if len(out) >= self.max_chunks:
                raise SharedMemoryError(f"segment {self.segment.name!r}: chunk list is cyclic")
            _m, _start, length, nxt = self.chunk(c)
            out.append((c, length))
            c = nxt
        return out

    def free(self, slice_index: int, first: int) -> int:
        """Return the 0-terminated list at ``first`` to the slice (``fsh_collect_chunks``);
        the bytes freed.  The whole list is checked before anything is pushed."""
        return self.free_chunks(slice_index, self.chain(first))

    def free_chunks(self, slice_index: int, chunks: list[tuple[int, int]]) -> int:
        """Push each (offset, length) chunk -- already checked and unlinked -- to the list for
        its length, then add the bytes to the counters (``fsh_slice_collect_chunks``)."""
        slice_m = self.slice_m(slice_index)
        heads = slice_m + _SL_FREE_CHUNKS
        fsh = self._fsh
        n = 0
        for c, length in chunks:
            if c > FREE_LIST_OFFSET_MASK:
                raise SharedMemoryError(f"chunk offset {c:#x} cannot go on a free list")
            fl = fl_index_for_size(length)
            self._push(heads + fl * _SL_FREE_CHUNK_SIZE, c, fsh + c + CH_NEXT)
            n += fl_index_to_size(fl)
        if n:
            self._counters_add(slice_m, n)
        return n
