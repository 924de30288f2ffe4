"""`Fifo`: an ``svm_fifo_shared_t`` in a mapped segment, read and written from Python.

A fifo is single-producer / single-consumer (protocol.md 4.3).  The app produces into its tx
fifos and consumes its rx fifos; for cut-through sessions both ends are apps.  One `Fifo` object
can play either role, but each side must be one object used by one thread at a time.

Ordering follows ``src/svm/svm_fifo.c``: the producer loads ``head`` with acquire, writes data,
links chunks and release-stores ``tail`` last; the consumer loads ``tail`` with acquire, reads
data, unlinks and frees chunks, then release-stores ``head``.  The one chunk link both sides
may touch at the same moment -- the ``next`` of the last chunk, which the producer sets while the
consumer, its head at that chunk's end, looks past it -- is stored and loaded with 8-byte
atomics; fields owned by one side (``start_chunk``/``head_chunk`` by the consumer,
``end_chunk``/``tail_chunk`` by the producer) are plain, as in VPP.

Common operations take a fast path (`pyvcl.fifo.fastpath`: ``enqueue``, ``dequeue_into`` and
``dequeue`` are closures built there): a read or write that stays inside the chunk holding
``head`` / ``tail`` costs a few word loads, one slice copy and one release store.  Crossing a
chunk boundary walks the chain and allocates or frees chunks (protocol.md 4.4-4.5).

The data path never uses construct: every offset and codec is derived once, at import, from the
declarations in `pyvcl.wire.fifo`, and data moves with memoryview slice assignment.

Everything read from shared memory is checked (`SharedMemoryError`): chunk offsets and lengths,
chain continuity (each chunk's ``start_byte`` = previous end), that ``head_chunk``/``tail_chunk``
hold ``head``/``tail``, and walks are bounded.  A check fails before the shared state is
modified, so a hostile or corrupt header never leads to a corrupting write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..atomics import AtomicRegion, Words
from ..errors import LocalError, SharedMemoryError
from ..segment import Segment
from ..wire.fifo import CHUNK_DATA_OFFSET, SVM_FIFO_CHUNK, SVM_FIFO_SHARED
from .chunks import CH_NEXT, CH_RB, CH_RB_CODEC, ChunkAllocator, ChunkInfo, span_codec
from .fastpath import make_dequeue, make_dequeue_into, make_enqueue, needs_deq_ntf, writable_bytes
from .signals import Signals, SignalWords, fifo_header_m

__all__ = ["Fifo"]

M32 = 0xFFFFFFFF
_HALF = 1 << 31  # positions compare by signed 32-bit difference (f_pos_lt and friends)
GROW_STEP_MAX = 1 << 20
"""The largest chunk a producer asks for to grow a fifo by (see `grow_step`)."""

_F = SVM_FIFO_SHARED
_SHR_OFF, _SHR = span_codec(_F, "start_chunk", "slice_index")  # start, end, min_alloc, size, slice
_HEADREC_OFF, _HEADREC = span_codec(_F, "head_chunk", "head")
_TAILREC_OFF, _TAILREC = span_codec(_F, "tail_chunk", "tail")
_START = _F.offset("start_chunk")
_END = _F.offset("end_chunk")
_SIZE_OFF = _F.offset("size")
_SIZE = _F["size"].codec
_HEAD = _F.offset("head")
_TAIL = _F.offset("tail")
_HEAD_CHUNK = _F.offset("head_chunk")
_TAIL_CHUNK = _F.offset("tail_chunk")
_DATA = CHUNK_DATA_OFFSET
_START_BYTE = SVM_FIFO_CHUNK.offset("start_byte")
_START_BYTE_CODEC = SVM_FIFO_CHUNK["start_byte"].codec
_PTR = _F["start_chunk"].codec  # every fs_sptr_t field: plain u64
_LENGTH = SVM_FIFO_CHUNK.offset("length")
# The fast paths read these as single words: the chunk pointers and size, and a chunk's
# (start_byte, length) pair as one 64-bit word (little-endian: start_byte low).
# The word after that pair is the chunk's ``next`` (a write ending at a chunk's end reads it).
_ALIGNED = not (_HEAD_CHUNK % 8 or _TAIL_CHUNK % 8 or _SIZE_OFF % 4 or _START_BYTE % 8)
if not _ALIGNED or _LENGTH != 4 or CH_NEXT != _START_BYTE + 8:
    raise TypeError("svm_fifo_shared_t / svm_fifo_chunk_t: fast-path fields not word-aligned")


_ChunkCache = tuple[int, int, int, int, int, int]


def grow_step(min_alloc: int, size: int) -> int:
    """How much a producer asks the segment for when a write runs past the chain's end (before
    the room left in ``size`` caps it): a quarter of the fifo, at most `GROW_STEP_MAX`, at
    least ``min_alloc``.

    VPP asks for ``min_alloc`` (``f_try_chunk_alloc``; at most 64 KiB, ``svm_fifo_init``), so a
    busy 4 MB fifo takes a chunk from the segment every 64 KiB written and its consumer gives
    one back every 64 KiB read.  That costs C a few hundred nanoseconds; in Python, with the
    allocator's atomics, a chain link and a free, 7-10 us on each side (measured with both
    sides in one process, 64 KiB writes and reads) -- more than the copy of the 64 KiB.
    Any chunk length is valid to the other side (it follows the chain), so pyvcl grows by
    larger steps; the chain then spans at most ``size`` plus about one step instead of
    ``size`` plus 64 KiB.  Chunks larger than VPP's largest step are carved from the segment
    one at a time (`ChunkAllocator.alloc`), so the segment gives steps only for what fifos
    use or have used (a freed step waits on its free list for the next one, as every freed
    chunk does).  When the segment cannot give a step, VPP's own request is tried."""
    return max(min_alloc, min(size >> 2, GROW_STEP_MAX))


class Fifo(SignalWords):
    """The fifo whose ``svm_fifo_shared_t`` is at fsh-relative ``offset`` in ``segment``.

    ``signals`` selects where the event / notification words live: by default the fifo's own
    header; pass a `Signals` or ``(segment, offset)`` of another fifo header for the connecting
    side of a cut-through session.
    """

    __slots__ = (
        "_a",
        "_chunk",
        "_end_m",
        "_hc",
        "_head_chunk_i",
        "_head_chunk_m",
        "_head_i",
        "_head_m",
        "_headrec_m",
        "_m",
        "_max_chunks",
        "_max_size",
        "_peek",
        "_size_i",
        "_start_m",
        "_tail_chunk_i",
        "_tail_chunk_m",
        "_tail_i",
        "_tail_m",
        "_tailrec_m",
        "_tc",
        "_view",
        "_w32",
        "_w64",
        "allocator",
        "dequeue",
        "dequeue_into",
        "enqueue",
        "offset",
        "segment",
        "signals",
    )

    # The common operations are closures built per fifo (`pyvcl.fifo.fastpath`).
    enqueue: Callable[[Any], int]
    dequeue_into: Callable[[Any], int]
    dequeue: Callable[[int], bytes]

    def __init__(
        self,
        segment: Segment,
        offset: int,
        *,
        signals: Signals | tuple[Segment, int] | None = None,
    ) -> None:
        self.segment = segment
        self.offset = offset
        self._m = m = fifo_header_m(segment, offset)
        self._view = segment.view
        self._a: AtomicRegion = segment.atomics
        # Acquire loads / release stores by word index (AtomicRegion.words32): positions and
        # chunk links are read and written on every operation, so no call per access.
        self._w32: Words = self._a.words32()
        self._w64: Words = self._a.words64()
        self.allocator = ChunkAllocator(segment)
        self._chunk = self.allocator.chunk
        self._max_chunks = self.allocator.max_chunks
        # No fifo can be larger than its segment (VPP: 1 << max_log2_fifo_size, half of it).
        self._max_size = min(segment.size - segment.fsh, _HALF)
        self._start_m = m + _START
        self._end_m = m + _END
        self._head_m = m + _HEAD
        self._tail_m = m + _TAIL
        self._head_i = self._head_m >> 2  # word indices: the header is 64-byte aligned
        self._tail_i = self._tail_m >> 2
        self._headrec_m = m + _HEADREC_OFF  # (head_chunk, head)
        self._tailrec_m = m + _TAILREC_OFF  # (tail_chunk, tail)
        self._head_chunk_m = m + _HEAD_CHUNK
        self._tail_chunk_m = m + _TAIL_CHUNK
        self._head_chunk_i = self._head_chunk_m >> 3
        self._tail_chunk_i = self._tail_chunk_m >> 3
        self._size_i = (m + _SIZE_OFF) >> 2
        # The chunk holding tail / head as last read and checked: (chunk offset, 64-bit word
        # index of its (start_byte, length), that word's value, mapping offset of its data,
        # start_byte, length).  Used while ``tail_chunk`` / ``head_chunk`` still names that
        # chunk and the word still has that value: anything else (the chunk moved on, was
        # reused, or was scribbled on) re-reads and re-checks the header.
        self._tc: _ChunkCache | None = None
        self._hc: _ChunkCache | None = None
        self._peek: tuple[int, int] | None = None  # consumer's last peeked chunk (offset, start)
        if signals is None:
            self.signals = Signals(segment, offset)
        elif isinstance(signals, Signals):
            self.signals = signals
        else:
            self.signals = Signals(*signals)
        self.enqueue = make_enqueue(self)
        self.dequeue_into = make_dequeue_into(self)
        self.dequeue = make_dequeue(self)

    # -- header fields -----------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Capacity in bytes, re-read every time (VPP's fifo tuning may change it)."""
        size = int(_SIZE.unpack_from(self._view, self._m + _SIZE_OFF)[0])
        if size > self._max_size:
            raise SharedMemoryError(
                f"fifo {self.offset:#x}: size {size} is larger than its segment"
            )
        return size

    @property
    def head(self) -> int:
        return int(self._w32[self._head_i])

    @property
    def tail(self) -> int:
        return int(self._w32[self._tail_i])

    def _ptr(self, m: int) -> int:
        return int(_PTR.unpack_from(self._view, m)[0])

    @property
    def head_chunk(self) -> int:
        return self._ptr(self._head_chunk_m)

    @property
    def tail_chunk(self) -> int:
        return self._ptr(self._tail_chunk_m)

    @property
    def start_chunk(self) -> int:
        return self._ptr(self._start_m)

    @property
    def end_chunk(self) -> int:
        return self._ptr(self._end_m)

    @property
    def min_alloc(self) -> int:
        return int(_SHR.unpack_from(self._view, self._m + _SHR_OFF)[2])

    @property
    def slice_index(self) -> int:
        return int(_SHR.unpack_from(self._view, self._m + _SHR_OFF)[4])

    def max_dequeue(self) -> int:
        """Bytes present (``svm_fifo_max_dequeue``: both positions loaded with acquire)."""
        tail = self._w32[self._tail_i]
        return (tail - self._w32[self._head_i]) & M32

    def max_enqueue(self) -> int:
        """Free bytes (``svm_fifo_max_enqueue``); 0 if VPP shrank ``size`` below the content."""
        tail = self._w32[self._tail_i]
        used = (tail - self._w32[self._head_i]) & M32
        return max(0, self.size - used)

    def is_empty(self) -> bool:
        return self.max_dequeue() == 0

    def is_full(self) -> bool:
        return self.max_enqueue() == 0

    def chunks(self) -> list[ChunkInfo]:
        """The chain from ``start_chunk`` to its end (checked, bounded; a snapshot)."""
        out: list[ChunkInfo] = []
        c = self.start_chunk
        while c:
            if len(out) >= self._max_chunks:
                raise SharedMemoryError(f"fifo {self.offset:#x}: chunk chain is cyclic")
            info = self.allocator.read_chunk(c)
            out.append(info)
            c = info.next
        return out

    # -- chain walking -----------------------------------------------------------------------
    def _pieces(
        self, c: int, pos: int, n: int, hdr: tuple[int, int, int, int] | None = None
    ) -> tuple[list[memoryview], int]:
        """Views over the ``n`` bytes at position ``pos``, ``c`` being the chunk holding ``pos``
        (``hdr``: its checked header if already read); and the chunk that holds ``pos + n`` --
        the next one (or 0) when the span ends exactly at a chunk end, as VPP's copy functions
        leave ``head_chunk``/``tail_chunk``."""
        if not c:
            raise SharedMemoryError(f"fifo {self.offset:#x}: no chunk holds position {pos}")
        chunk, view = self._chunk, self._view
        m, start, length, _ = hdr or chunk(c)
        idx = (pos - start) & M32
        if idx >= length:
            raise SharedMemoryError(
                f"fifo {self.offset:#x}: chunk {c:#x} [{start}, +{length}) does not hold "
                f"position {pos}"
            )
        out: list[memoryview] = []
        left = n
        for _ in range(self._max_chunks):
            d = m + _DATA + idx
            k = length - idx
            if k > left:
                out.append(view[d : d + left])
                return out, c
            out.append(view[d : d + k])
            left -= k
            if not left:  # ends exactly at this chunk's end: the other side may be linking
                return out, self._w64[(m + CH_NEXT) >> 3]
            end = (start + length) & M32
            c = _PTR.unpack_from(view, m + CH_NEXT)[0]  # fresh: the producer may have grown it
            if not c:
                raise SharedMemoryError(
                    f"fifo {self.offset:#x}: chunk chain ends at {end} before position "
                    f"{(pos + n) & M32}"
                )
            m, start, length, _ = chunk(c)
            if start != end:
                raise SharedMemoryError(
                    f"fifo {self.offset:#x}: chunk {c:#x} starts at {start}, not {end}"
                )
            idx = 0
        raise SharedMemoryError(f"fifo {self.offset:#x}: chunk chain is cyclic")

    def _walk_to(self, c: int, pos: int) -> int:
        """From chunk ``c`` (at or before ``pos``) forward to the chunk holding ``pos``
        (``svm_fifo_find_next_chunk``), checking continuity."""
        chunk = self._chunk
        end = -1
        for _ in range(self._max_chunks):
            if not c:
                raise SharedMemoryError(f"fifo {self.offset:#x}: no chunk holds position {pos}")
            _m, start, length, nxt = chunk(c)
            if end >= 0 and start != end:
                raise SharedMemoryError(
                    f"fifo {self.offset:#x}: chunk {c:#x} starts at {start}, not {end}"
                )
            if (pos - start) & M32 < length:
                return c
            end = (start + length) & M32
            c = nxt
        raise SharedMemoryError(f"fifo {self.offset:#x}: chunk chain is cyclic")

    # -- fast-path caches ----------------------------------------------------------------------
    def _chunk_cache(self, c: int) -> _ChunkCache:
        m, start, length, _nxt = self._chunk(c)  # checked: inside the mapping, valid length
        key = (m + _START_BYTE) >> 3
        return (c, key, start | length << 32, m + _DATA, start, length)

    def _cache_tail_chunk(self) -> _ChunkCache | None:
        c = int(self._w64[self._tail_chunk_i])
        self._tc = self._chunk_cache(c) if c else None
        return self._tc

    def _cache_head_chunk(self) -> _ChunkCache | None:
        """Cached only when it is also ``start_chunk``: then a read inside it frees nothing."""
        c = int(self._w64[self._head_chunk_i])
        self._hc = self._chunk_cache(c) if c and c == self.start_chunk else None
        return self._hc

    # -- producer ----------------------------------------------------------------------------
    def _prepare_write(
        self,
        head: int,
        tail: int,
        tail_c: int,
        n: int,
        tail_hdr: tuple[int, int, int, int] | None = None,
    ) -> tuple[int, int]:
        """Step 2 of an enqueue (protocol.md 4.4) for ``n`` bytes that fit ``size``: grow the
        chain if it ends before ``tail + n``.  Returns (bytes writable now, tail_chunk); fewer
        bytes (0 = ``SVM_FIFO_EGROW``) if the segment has no chunk memory."""
        view = self._view
        _s, end_c, min_alloc, size, slice_index = _SHR.unpack_from(view, self._m + _SHR_OFF)
        em, estart, elen, _nxt = tail_hdr if tail_hdr and end_c == tail_c else self._chunk(end_c)
        eend = (estart + elen) & M32
        avail = (eend - tail) & M32
        if avail >= _HALF:
            raise SharedMemoryError(
                f"fifo {self.offset:#x}: tail {tail} is beyond the end chunk [{estart}, {eend})"
            )
        if n <= avail:
            return n, tail_c
        used = (tail - head) & M32
        need = n - avail
        step = grow_step(min_alloc, size)
        first = self.allocator.alloc(slice_index, max(min(step, size - used), need))
        if not first:  # short of memory for our step: VPP's own request (f_try_chunk_alloc)
            first = self.allocator.alloc(slice_index, max(min(min_alloc, size - used), need))
        if not first:
            return avail, tail_c  # short write
        # f_try_chunk_alloc: number the new chunks, then append them after end_chunk
        chunk = self._chunk
        pos, c, last = eend, first, 0
        for _ in range(self._max_chunks):
            if not c:
                break
            cm, _start, length, nxt = chunk(c)
            _START_BYTE_CODEC.pack_into(view, cm + _START_BYTE, pos)
            CH_RB_CODEC.pack_into(view, cm + CH_RB, 0, 0)  # RBTREE_TNIL_INDEX
            pos = (pos + length) & M32
            last, c = c, nxt
        else:
            raise SharedMemoryError(f"fifo {self.offset:#x}: allocated chunk list is cyclic")
        self._w64[(em + CH_NEXT) >> 3] = first  # the consumer may be looking past the old end
        _PTR.pack_into(view, self._end_m, last)
        if not tail_c:
            tail_c = first
            self._tc = None
            _PTR.pack_into(view, self._tail_chunk_m, first)
        return n, tail_c

    def _room(self, want: int) -> tuple[int, int, int, int]:
        """Step 1 of an enqueue: (head, tail, tail_chunk, bytes that fit ``size``)."""
        head = self._w32[self._head_i]  # acquire: the consumer's index
        tail_c, tail = _TAILREC.unpack_from(self._view, self._tailrec_m)  # ours
        size = int(_SIZE.unpack_from(self._view, self._m + _SIZE_OFF)[0])
        if size > self._max_size:
            raise SharedMemoryError(f"fifo {self.offset:#x}: size {size} exceeds its segment")
        used = (tail - head) & M32
        return head, tail, tail_c, (min(want, size - used) if used < size else 0)

    def _enqueue_slow(self, src: Any, want: int) -> int:
        """`enqueue` (`pyvcl.fifo.fastpath`) when its common case did not apply: re-check the
        cached tail chunk, then the general write (the chain walked, grown as needed)."""
        if not want:
            return 0
        w = self._w32
        tc = self._tc
        if tc is None or tc[0] != self._w64[self._tail_chunk_i] or self._w64[tc[1]] != tc[2]:
            tc = self._cache_tail_chunk()
            if tc is not None:  # the common case with the fresh chunk
                tail = w[self._tail_i]
                idx = (tail - tc[4]) & M32
                used = (tail - w[self._head_i]) & M32
                if idx + want < tc[5] and used + want <= w[self._size_i] <= self._max_size:
                    d = tc[3] + idx
                    self._view[d : d + want] = src
                    w[self._tail_i] = (tail + want) & M32  # release
                    return want
        head, tail, tail_c, n = self._room(want)
        if not n:
            return 0  # SVM_FIFO_EFULL
        src = memoryview(src)  # slices below must not copy
        hdr = self._chunk(tail_c) if tail_c else None
        old_tail_c = tail_c
        n, tail_c = self._prepare_write(head, tail, tail_c, n, hdr)
        if not n:
            return 0  # SVM_FIFO_EGROW
        pieces, last = self._pieces(tail_c, tail, n, hdr if tail_c == old_tail_c else None)
        done = 0
        for p in pieces:
            k = len(p)
            p[:] = src[done : done + k]
            done += k
        del pieces
        if last != tail_c:
            self._tc = None
            _PTR.pack_into(self._view, self._tail_chunk_m, last)
        self._w32[self._tail_i] = (tail + n) & M32  # release: publishes data and chunks
        if last and self._tc is None:
            self._tc = self._chunk_cache(last)  # (a chunk just grown into: the next write's)
        return n

    def reserve(self, n: int) -> list[memoryview]:
        """Zero-copy write, step 1 (``svm_fifo_provision_chunks``): writable views over up to
        ``n`` bytes at the tail, growing the chain as needed; fewer bytes (or none) when the
        fifo is full or the segment out of chunk memory.  Fill them, release them, then
        `commit` the number of bytes written."""
        if n <= 0:
            return []
        head, tail, tail_c, k = self._room(n)
        if not k:
            return []
        k, tail_c = self._prepare_write(head, tail, tail_c, k)
        if not k:
            return []
        return self._pieces(tail_c, tail, k)[0]

    def commit(self, n: int) -> int:
        """Zero-copy write, step 2 (``svm_fifo_enqueue_nocopy``): publish ``n`` bytes written
        into views from `reserve`."""
        if n < 0:
            raise ValueError("commit of a negative length")
        if not n:
            return 0
        _head, tail, tail_c, room = self._room(n)
        if n > room:
            raise LocalError(f"commit({n}) exceeds the free space of the fifo")
        new_tail = (tail + n) & M32
        chunk = self._chunk
        c = tail_c
        for _ in range(self._max_chunks):
            if not c:
                raise LocalError(f"commit({n}): those bytes were not reserved")
            _m, start, length, nxt = chunk(c)
            off = (new_tail - start) & M32
            if off < length:
                break
            if off == length and not nxt:
                c = 0
                break
            c = nxt
        else:
            raise SharedMemoryError(f"fifo {self.offset:#x}: chunk chain is cyclic")
        if c != tail_c:
            self._tc = None
            _PTR.pack_into(self._view, self._tail_chunk_m, c)
        self._w32[self._tail_i] = new_tail
        return n

    # -- consumer ----------------------------------------------------------------------------
    def _read_start(self, n: int, offset: int = 0) -> tuple[int, int, int] | None:
        """(head, head_chunk, bytes to read at head + offset), or None if there are none;
        finds and stores ``head_chunk`` when it is 0, as VPP's consumer does."""
        tail = self._w32[self._tail_i]  # acquire: the producer's index
        head_c, head = _HEADREC.unpack_from(self._view, self._headrec_m)  # ours
        present = (tail - head) & M32
        if present <= offset or n <= 0:
            return None
        if not head_c:
            head_c = self._walk_to(self.start_chunk, head)
            self._hc = None
            _PTR.pack_into(self._view, self._head_chunk_m, head_c)
        return head, head_c, min(n, present - offset)

    def _advance_head(
        self, head: int, n: int, head_c: int, last: int, hdr: tuple[int, int, int, int]
    ) -> None:
        """Steps 4-5 of a dequeue: move ``head_chunk``, unlink and free the chunks entirely
        behind the new head (never the last one), then release-store ``head``.  ``hdr``: the
        header of ``head_c`` as read."""
        new_head = (head + n) & M32
        start_c = self.start_chunk
        sm, sstart, slen, _nxt = hdr if start_c == head_c else self._chunk(start_c)
        if (new_head - sstart - slen) & M32 < _HALF:  # f_pos_geq (head, start chunk end)
            self._unlink(start_c, sm, sstart, slen, new_head)
        if last != head_c:
            self._hc = None
            _PTR.pack_into(self._view, self._head_chunk_m, last)
        self._w32[self._head_i] = new_head  # release

    def _unlink(self, c: int, cm: int, cstart: int, clen: int, end_pos: int) -> int:
        """``f_unlink_chunks`` + ``fsh_collect_chunks``: detach the chunks before the one
        holding ``end_pos`` (keeping at least the last chunk), free them to the fifo's slice;
        the new ``start_chunk``.  Everything is checked before anything is written."""
        chunk, view = self._chunk, self._view
        start_c, prev_m = c, 0
        gone: list[tuple[int, int]] = []
        for _ in range(self._max_chunks):
            end = (cstart + clen) & M32
            # Only a chunk ending exactly at end_pos (<= tail) can be the end chunk the
            # producer is extending right now; links behind tail are published and stable.
            nxt = (
                self._w64[(cm + CH_NEXT) >> 3]
                if end == end_pos
                else _PTR.unpack_from(view, cm + CH_NEXT)[0]
            )
            if not nxt:
                break
            gone.append((c, clen))
            prev_m = cm
            c = nxt
            cm, cstart, clen, _ = chunk(c)
            if cstart != end:
                raise SharedMemoryError(
                    f"fifo {self.offset:#x}: chunk {c:#x} starts at {cstart}, not {end}"
                )
            if (end_pos - cstart) & M32 < clen:
                break
        else:
            raise SharedMemoryError(f"fifo {self.offset:#x}: chunk chain is cyclic")
        if not gone:
            return start_c
        slice_index = int(_SHR.unpack_from(view, self._m + _SHR_OFF)[4])
        self.allocator.slice_m(slice_index)  # checked before the chain is touched
        _PTR.pack_into(view, prev_m + CH_NEXT, 0)
        self._hc = None
        _PTR.pack_into(view, self._start_m, c)
        self._peek = None
        self.allocator.free_chunks(slice_index, gone)  # freed before head is published
        return c

    def _fresh_head_chunk(self) -> _ChunkCache | None:
        """The cached head chunk if it is still valid, else re-read (the slow paths)."""
        hc = self._hc
        if hc is None or hc[0] != self._w64[self._head_chunk_i] or self._w64[hc[1]] != hc[2]:
            hc = self._cache_head_chunk()
        return hc

    def _dequeue_slow(self, n: int) -> bytes:
        """`dequeue` when its common case did not apply (`_enqueue_slow`)."""
        w = self._w32
        head = w[self._head_i]
        present = (w[self._tail_i] - head) & M32  # acquire: the producer's index
        if not present or n <= 0:
            return b""
        k = n if n < present else present
        hc = self._fresh_head_chunk()
        if hc is not None:
            idx = (head - hc[4]) & M32
            if idx + k < hc[5]:
                d = hc[3] + idx
                data = self._view[d : d + k].tobytes()
                w[self._head_i] = (head + k) & M32  # release
                return data
        r = self._read_start(n)
        if r is None:
            return b""
        head, head_c, n = r
        hdr = self._chunk(head_c)
        pieces, last = self._pieces(head_c, head, n, hdr)
        data = b"".join(pieces)
        del pieces
        self._advance_head(head, n, head_c, last, hdr)
        return data

    def _dequeue_into_slow(self, dst: Any) -> int:
        """`dequeue_into` when its common case did not apply (`_enqueue_slow`); ``dst`` a
        writable 1-D byte buffer."""
        w = self._w32
        head = w[self._head_i]
        present = (w[self._tail_i] - head) & M32  # acquire: the producer's index
        n = len(dst)
        if not present or not n:
            return 0
        if present < n:
            n = present
        hc = self._fresh_head_chunk()
        if hc is not None:
            idx = (head - hc[4]) & M32
            if idx + n < hc[5]:
                d = hc[3] + idx
                dst[:n] = self._view[d : d + n]
                w[self._head_i] = (head + n) & M32  # release
                return n
        r = self._read_start(len(dst))
        if r is None:
            return 0
        head, head_c, n = r
        hdr = self._chunk(head_c)
        pieces, last = self._pieces(head_c, head, n, hdr)
        done = 0
        for p in pieces:
            k = len(p)
            dst[done : done + k] = p
            done += k
        del pieces
        self._advance_head(head, n, head_c, last, hdr)
        return n

    def drop(self, n: int) -> int:
        """Discard up to ``n`` bytes at the head (``svm_fifo_dequeue_drop``); the count."""
        tail = self._w32[self._tail_i]
        _hc, head = _HEADREC.unpack_from(self._view, self._headrec_m)
        present = (tail - head) & M32
        if not present or n <= 0:
            return 0
        n = min(n, present)
        new_head = (head + n) & M32
        start_c = self.start_chunk
        sm, sstart, slen, _nxt = self._chunk(start_c)
        if (new_head - sstart - slen) & M32 < _HALF:
            c = self._unlink(start_c, sm, sstart, slen, new_head)
            _m, cstart, clen, _nxt = self._chunk(c)
            hc = c if (new_head - cstart) & M32 < clen else 0
            self._hc = None
            _PTR.pack_into(self._view, self._head_chunk_m, hc)
        self._w32[self._head_i] = new_head
        return n

    def _locate(self, pos: int, head_c: int) -> int:
        """The chunk holding ``pos`` (>= head), from the last peek's chunk when it is at or
        before ``pos``, else from ``head_chunk``."""
        cached = self._peek
        if cached is not None:
            c, start = cached
            _m, cstart, _clen, _ = self._chunk(c)
            if cstart == start and (pos - start) & M32 < _HALF:
                return self._walk_to(c, pos)
        return self._walk_to(head_c, pos)

    def _peek_pieces(self, n: int, offset: int) -> list[memoryview]:
        r = self._read_start(n, offset)
        if r is None:
            return []
        head, head_c, n = r
        pos = (head + offset) & M32
        c = self._locate(pos, head_c) if offset else head_c
        pieces, _last = self._pieces(c, pos, n)
        if offset:
            self._peek = (c, int(_START_BYTE_CODEC.unpack_from(self._view, self._chunk(c)[0])[0]))
        return pieces

    def peek(self, n: int, offset: int = 0) -> bytes:
        """Up to ``n`` bytes at ``head + offset`` without consuming them (b"" if none)."""
        return b"".join(self._peek_pieces(n, offset))

    def peek_into(self, buffer: Any, offset: int = 0) -> int:
        """Copy up to ``len(buffer)`` bytes at ``head + offset`` into ``buffer``; the count."""
        dst = writable_bytes(buffer)
        done = 0
        for p in self._peek_pieces(len(dst), offset):
            k = len(p)
            dst[done : done + k] = p
            done += k
        return done

    def segments(self, n: int, offset: int = 0) -> list[memoryview]:
        """Zero-copy read (``svm_fifo_segments``): read-only views over up to ``n`` bytes at
        ``head + offset``, one per chunk touched.  Release them, then `drop` what was used."""
        return [p.toreadonly() for p in self._peek_pieces(n, offset)]

    # -- signals (the rest: `SignalWords`) -------------------------------------------------
    def needs_deq_ntf(self, n_last_deq: int) -> bool:
        """``svm_fifo_needs_deq_ntf``: after a consumer read of ``n_last_deq`` bytes, must the
        producer be notified?  (Same u32 arithmetic as VPP.)"""
        return needs_deq_ntf(self, n_last_deq)

    def __repr__(self) -> str:
        try:
            state = (
                f"head={self.head} tail={self.tail} size={self.size} "
                f"chunks={self.start_chunk:#x}..{self.end_chunk:#x}"
            )
        except Exception as e:  # a repr must not raise on a closed or corrupt segment
            state = f"unreadable: {e}"
        return f"<Fifo {self.segment.name!r}@{self.offset:#x} {state}>"
