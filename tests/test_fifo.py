"""pyvcl.fifo: chunk allocator, Fifo data paths, signals, hostile headers, two processes, and one
sanity check against a real VPP snapshot."""

from __future__ import annotations

import array
import hashlib
import os
import random
import select
import signal
import time
from typing import Any

import pytest

from pyvcl.errors import LocalError, SharedMemoryError
from pyvcl.fifo import ChunkAllocator, Fifo, Signals, fl_index_for_size, fl_index_to_size
from pyvcl.fifo.chunks import CHUNK_HDR_SIZE, FIFO_SEGMENT_ALLOC_BATCH_SIZE
from pyvcl.fifo.fifo import grow_step
from pyvcl.segment import Segment
from pyvcl.snapshot import read_blob
from pyvcl.wire.enums import DeqNotify
from pyvcl.wire.fifo import SVM_FIFO_CHUNK, SVM_FIFO_SHARED
from pyvcl.wire.segment import FIFO_SEGMENT_HEADER, FIFO_SEGMENT_SLICE

from .fifo_fixtures import alloc_fifo, audit, carve
from .segment_fixtures import load_own_snapshot, load_snapshot, make_segment
from .shared_data import cross_check

M32 = 0xFFFFFFFF
KB = 1024
WANT = DeqNotify.WANT_DEQ_NOTIF
IF_FULL = DeqNotify.WANT_DEQ_NOTIF_IF_FULL
IF_EMPTY = DeqNotify.WANT_DEQ_NOTIF_IF_EMPTY


def fifo_get(seg: Segment, f: int, name: str) -> Any:
    return SVM_FIFO_SHARED[name].get(seg.view, seg.fsh + f)


def fifo_put(seg: Segment, f: int, **values: Any) -> None:
    for k, v in values.items():
        SVM_FIFO_SHARED[k].put(seg.view, seg.fsh + f, v)


def chunk_put(seg: Segment, c: int, **values: Any) -> None:
    for k, v in values.items():
        SVM_FIFO_CHUNK[k].put(seg.view, seg.fsh + c, v)


def fsh_get(seg: Segment, name: str) -> int:
    return int(FIFO_SEGMENT_HEADER[name].get(seg.view, seg.fsh))


def slice_get(seg: Segment, name: str, index: int = 0) -> Any:
    return FIFO_SEGMENT_SLICE[name].get(seg.view, seg.slice_at(index))


def pair(seg: Segment, f: int) -> tuple[Fifo, Fifo]:
    """(producer, consumer) on the same fifo."""
    return Fifo(seg, f), Fifo(seg, f)


@pytest.fixture
def seg() -> Segment:
    return make_segment(16 << 20)  # fifos up to 4 MiB (max_log2_fifo_size 22)


# ---------------------------------------------------------------------------------------------
# Chunk allocator


@pytest.mark.parametrize(
    ("n", "fl"),
    [(0, 0), (1, 0), (4095, 0), (4096, 0), (4097, 1), (8192, 1), (8193, 2), (65536, 4),
     (65537, 5), (4 << 20, 10), ((4 << 20) + 1, 10), (1 << 30, 10)],
)  # fmt: skip
def test_fl_index(n: int, fl: int) -> None:
    assert fl_index_for_size(n) == fl
    assert fl_index_to_size(fl) == 4096 << fl


def test_alloc_carves_a_batch_of_32(seg: Segment) -> None:
    a = ChunkAllocator(seg)
    start = fsh_get(seg, "byte_index")
    c = a.alloc(0, 4096)
    stride = CHUNK_HDR_SIZE + 4096
    assert fsh_get(seg, "byte_index") == start + FIFO_SEGMENT_ALLOC_BATCH_SIZE * stride
    # The list head is the last chunk carved; popping returns it first.
    assert c == start + (FIFO_SEGMENT_ALLOC_BATCH_SIZE - 1) * stride
    info = a.read_chunk(c)
    assert (info.start_byte, info.length, info.next) == (0, 4096, 0)
    assert slice_get(seg, "num_chunks")[0] == 32
    assert a.fl_chunk_bytes(0) == 31 * 4096 == a.n_cached_bytes()
    assert a.head(0, 0) == (c - stride, 2)  # one push_list + one pop
    assert a.free_list(0, 0) == [start + i * stride for i in range(30, -1, -1)]
    audit(seg, [], complete=False)
    a.free(0, c)
    assert a.head(0, 0) == (c, 3)
    assert a.fl_chunk_bytes(0) == 32 * 4096 == a.n_cached_bytes()
    audit(seg, [])


def test_push_pop_tags(seg: Segment) -> None:
    a = ChunkAllocator(seg)
    assert a.pop(0, 3) == 0 and a.head(0, 3) == (0, 0)  # empty: no tag change
    assert a.carve_batch(0, 3, 2)
    assert a.head(0, 3)[1] == 1
    c1 = a.pop(0, 3)
    c2 = a.pop(0, 3)
    assert a.head(0, 3) == (0, 3) and c1 != c2
    a.push(0, 3, c2)
    a.push(0, 3, c1)
    assert a.head(0, 3) == (c1, 5)
    assert a.free_list(0, 3) == [c1, c2]


def test_tag_wraps_at_16_bits(seg: Segment) -> None:
    a = ChunkAllocator(seg)
    assert a.carve_batch(0, 0, 1)
    c = a.pop(0, 0)
    m = seg.slice_at(0)
    seg.atomics.store64(m, 0xFFFF << 48)  # empty list, tag 0xffff
    a.push(0, 0, c)
    assert a.head(0, 0) == (c, 0)


def test_batch_of_one_near_the_end() -> None:
    seg = make_segment(1 << 20)
    a = ChunkAllocator(seg)
    # 32 x 64 KiB does not fit a 1 MiB segment: VPP carves a single chunk.
    c = a.alloc(0, 64 * KB)
    assert c and slice_get(seg, "num_chunks")[4] == 1
    assert a.fl_chunk_bytes(0) == 0 == a.n_cached_bytes()
    assert a.head(0, 4) == (0, 2)
    audit(seg, [], complete=False)


def test_segment_full_fails_cleanly() -> None:
    seg = make_segment(64 * KB)
    a = ChunkAllocator(seg)
    before = bytes(seg.view[seg.fsh : seg.fsh + 1024])
    assert a.alloc(0, 64 * KB) == 0
    assert bytes(seg.view[seg.fsh : seg.fsh + 1024]) == before  # nothing changed
    assert a.alloc(0, 4096)  # 32 x 4 KiB do not fit (~48 KiB free): one is carved
    assert slice_get(seg, "num_chunks")[0] == 1


def test_multi_chunk_from_small_chunks() -> None:
    seg = make_segment(256 * KB)
    a = ChunkAllocator(seg)
    assert a.carve_batch(0, 0, 8)  # 8 x 4 KiB on list 0
    free = a.n_free_bytes()
    # Use up the bump space so only the free list can serve.
    assert carve(seg, free - 64)
    c = a.alloc(0, 16 * KB)
    chain = a.chain(c)
    assert [length for _, length in chain] == [4096] * 4
    assert a.fl_chunk_bytes(0) == 4 * 4096 == a.n_cached_bytes()
    a.free(0, c)
    assert a.fl_chunk_bytes(0) == 8 * 4096 == a.n_cached_bytes()
    assert len(a.free_list(0, 0)) == 8


def test_multi_chunk_falls_back_to_a_larger_chunk() -> None:
    seg = make_segment(256 * KB)
    a = ChunkAllocator(seg)
    assert a.carve_batch(0, 3, 1)  # one 32 KiB chunk
    assert carve(seg, a.n_free_bytes() - 128)
    c = a.alloc(0, 16 * KB)
    assert a.read_chunk(c).length == 32 * KB
    assert a.fl_chunk_bytes(0) == 0 == a.n_cached_bytes()


def test_multi_chunk_not_enough_gives_everything_back() -> None:
    seg = make_segment(256 * KB)
    a = ChunkAllocator(seg)
    assert a.carve_batch(0, 0, 2)
    assert carve(seg, a.n_free_bytes() - 128)
    assert a.alloc(0, 16 * KB) == 0
    assert len(a.free_list(0, 0)) == 2
    assert a.fl_chunk_bytes(0) == 2 * 4096 == a.n_cached_bytes()


def test_alloc_aligned(seg: Segment) -> None:
    a = ChunkAllocator(seg)
    b0 = fsh_get(seg, "byte_index")
    x = a.alloc_aligned(10, 64)
    assert x == (b0 + 63) & ~63
    assert fsh_get(seg, "byte_index") == x + 64
    y = a.alloc_aligned(3)
    assert y == x + 64 and fsh_get(seg, "byte_index") == y + 8


def test_slices_are_separate() -> None:
    seg = make_segment(8 << 20, n_slices=2)
    f0 = alloc_fifo(seg, 100_000, slice_index=0)
    f1 = alloc_fifo(seg, 100_000, slice_index=1)
    p1, c1 = pair(seg, f1)
    assert p1.enqueue(os.urandom(50_000)) == 50_000
    assert len(c1.dequeue(50_000)) == 50_000
    a = ChunkAllocator(seg)
    assert a.fl_chunk_bytes(1) > 0 and a.fl_chunk_bytes(0) == 31 * 4096
    assert a.n_cached_bytes() == a.fl_chunk_bytes(0) + a.fl_chunk_bytes(1)
    audit(seg, [f0, f1])


# -- hostile allocator state ------------------------------------------------------------------


def test_free_list_head_outside_segment(seg: Segment) -> None:
    a = ChunkAllocator(seg)
    seg.atomics.store64(seg.slice_at(0), (5 << 48) | (seg.size * 2))
    with pytest.raises(SharedMemoryError):
        a.pop(0, 0)
    with pytest.raises(SharedMemoryError):
        a.alloc(0, 4096)
    with pytest.raises(SharedMemoryError):
        a.free_list(0, 0)


def test_free_list_wrong_length(seg: Segment) -> None:
    a = ChunkAllocator(seg)
    assert a.carve_batch(0, 1, 2)  # 8 KiB chunks...
    word = seg.atomics.load64(seg.slice_at(0) + 8)
    seg.atomics.store64(seg.slice_at(0), word)  # ...put on the 4 KiB list
    with pytest.raises(SharedMemoryError, match="length"):
        a.pop(0, 0)
    chunk_put(seg, word & 0xFFFFFFFFFFFF, length=5000)
    with pytest.raises(SharedMemoryError, match="length"):
        a.pop(0, 1)


def test_free_list_bad_next(seg: Segment) -> None:
    a = ChunkAllocator(seg)
    assert a.carve_batch(0, 0, 2)
    c = a.head(0, 0)[0]
    chunk_put(seg, c, next=seg.size + 3)
    with pytest.raises(SharedMemoryError):
        a.pop(0, 0)
    assert a.head(0, 0) == (c, 1)  # untouched


def test_cyclic_free_list_is_detected(seg: Segment) -> None:
    a = ChunkAllocator(seg)
    assert a.carve_batch(0, 0, 3)
    c = a.head(0, 0)[0]
    chunk_put(seg, c, next=c)
    with pytest.raises(SharedMemoryError, match="cyclic"):
        a.free_list(0, 0)
    # multi-chunk allocation pops the same chunk twice: detected, no hang
    assert carve(seg, a.n_free_bytes() - 128)
    with pytest.raises(SharedMemoryError, match="twice"):
        a.alloc(0, 12 * KB)


def test_free_of_cyclic_chain_touches_nothing(seg: Segment) -> None:
    a = ChunkAllocator(seg)
    c = a.alloc(0, 4096)
    d = a.alloc(0, 4096)
    chunk_put(seg, c, next=d)
    chunk_put(seg, d, next=c)
    before = bytes(seg.view[seg.fsh : seg.fsh + 320])
    with pytest.raises(SharedMemoryError, match="cyclic"):
        a.free(0, c)
    assert bytes(seg.view[seg.fsh : seg.fsh + 320]) == before


def test_max_byte_index_beyond_mapping(seg: Segment) -> None:
    FIFO_SEGMENT_HEADER["max_byte_index"].put(seg.view, seg.fsh, seg.size * 4)
    with pytest.raises(SharedMemoryError, match="max_byte_index"):
        ChunkAllocator(seg).alloc(0, 4 << 20)


def test_bad_slice_index(seg: Segment) -> None:
    with pytest.raises(SharedMemoryError, match="slice"):
        ChunkAllocator(seg).alloc(3, 4096)


# ---------------------------------------------------------------------------------------------
# Fifo: creation and basic paths


@pytest.mark.parametrize(
    ("size", "min_alloc"),
    [(4096, 4096), (32 * KB, 4096), (32 * KB + 1, 4096), (100_000, 12_500), (4_000_000, 65536)],
)
def test_new_fifo_as_vpp_makes_it(seg: Segment, size: int, min_alloc: int) -> None:
    f = alloc_fifo(seg, size)
    assert f % 64 == 0
    fifo = Fifo(seg, f)
    assert fifo.size == size and fifo.min_alloc == min_alloc
    assert fifo.head == fifo.tail == 0
    [c] = fifo.chunks()
    assert (c.start_byte, c.length, c.next) == (0, 4096, 0)
    assert fifo.start_chunk == fifo.end_chunk == fifo.head_chunk == fifo.tail_chunk == c.offset
    assert fifo.max_dequeue() == 0 and fifo.max_enqueue() == size
    assert fifo.is_empty() and not fifo.is_full()
    audit(seg, [f])


def test_pct_first_alloc() -> None:
    seg = make_segment(8 << 20, pct_first_alloc=50)
    f = alloc_fifo(seg, 100_000)
    [c] = Fifo(seg, f).chunks()
    assert c.length == 64 * KB  # 50 % of 100000 -> 50000 -> 64 KiB list


def test_empty(seg: Segment) -> None:
    p, c = pair(seg, alloc_fifo(seg, 64 * KB))
    assert c.dequeue(10) == b"" and c.dequeue_into(bytearray(10)) == 0
    assert c.peek(10) == b"" and c.peek(1, 5) == b"" and c.segments(10) == []
    assert c.drop(10) == 0 and p.enqueue(b"") == 0 and p.reserve(0) == []


def test_one_byte(seg: Segment) -> None:
    f = alloc_fifo(seg, 64 * KB)
    p, c = pair(seg, f)
    for i in range(5000):  # crosses the first chunk boundary
        assert p.enqueue(bytes([i & 0xFF])) == 1
        assert c.max_dequeue() == 1
        assert c.dequeue(1) == bytes([i & 0xFF])
    assert c.head == c.tail == 5000
    audit(seg, [f])


def test_write_exactly_to_the_end_of_the_chain(seg: Segment) -> None:
    f = alloc_fifo(seg, 4_000_000)
    p, c = pair(seg, f)
    assert p.enqueue(b"x" * 4096) == 4096
    # Ended exactly at the end of the last chunk: VPP leaves tail_chunk 0.
    assert p.tail_chunk == 0 and p.tail == 4096
    audit(seg, [f])
    assert p.enqueue(b"y") == 1
    chunks = p.chunks()
    assert [ch.length for ch in chunks] == [4096, 1 << 20]  # grown by grow_step(), 1 MiB
    assert p.tail_chunk == chunks[1].offset == p.end_chunk
    assert chunks[1].start_byte == 4096
    # The reader ends exactly at the first chunk's end: head_chunk moves to the next one.
    assert c.dequeue(4096) == b"x" * 4096
    assert c.head_chunk == chunks[1].offset == c.start_chunk
    assert [ch.offset for ch in c.chunks()] == [chunks[1].offset]
    audit(seg, [f])


def test_read_exactly_to_the_end_of_the_last_chunk(seg: Segment) -> None:
    f = alloc_fifo(seg, 64 * KB)
    p, c = pair(seg, f)
    p.enqueue(b"a" * 4096)
    assert c.dequeue(4096) == b"a" * 4096
    # Nothing linked after: head_chunk 0, the last chunk stays (never unlinked).
    assert c.head_chunk == 0 and len(c.chunks()) == 1
    audit(seg, [f])
    assert p.enqueue(b"b" * 10) == 10
    assert c.dequeue(100) == b"b" * 10  # head_chunk found again, old chunk freed
    assert [ch.start_byte for ch in c.chunks()] == [4096]
    audit(seg, [f])


def test_whole_size_and_full(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p, c = pair(seg, f)
    data = os.urandom(150_000)
    assert p.enqueue(data) == 100_000
    assert p.is_full() and p.max_enqueue() == 0 and p.enqueue(b"z") == 0
    assert p.reserve(10) == []
    assert c.max_dequeue() == 100_000
    assert c.dequeue(1 << 30) == data[:100_000]
    assert c.is_empty()
    audit(seg, [f])


def test_growth_steps(seg: Segment) -> None:
    f = alloc_fifo(seg, 4_000_000)
    p = Fifo(seg, f)
    assert p.enqueue(bytes(200_000)) == 200_000
    # request = max(min(grow_step, free), len - allocated): a quarter of the fifo, 1 MiB
    assert [ch.length for ch in p.chunks()] == [4096, 1 << 20]
    for ch in p.chunks():
        assert ch.enq_rb_index == ch.deq_rb_index == 0
    audit(seg, [f])


@pytest.mark.parametrize(
    ("min_alloc", "size", "step"),
    [(4096, 16 * KB, 4096), (8 * KB, 64 * KB, 16 * KB), (64 * KB, 4_000_000, 1_000_000),
     (64 * KB, 64 << 20, 1 << 20)],
)  # fmt: skip
def test_grow_step(min_alloc: int, size: int, step: int) -> None:
    assert grow_step(min_alloc, size) == step


def test_growth_falls_back_to_vpps_request_when_the_segment_is_short(seg: Segment) -> None:
    f = alloc_fifo(seg, 4_000_000)
    p = Fifo(seg, f)
    a = ChunkAllocator(seg)
    a.alloc_aligned(a.n_free_bytes() - 512 * KB)  # the segment keeps 512 KiB: not a 1 MiB step
    assert p.enqueue(bytes(4096 + 100)) == 4096 + 100
    # The 1 MiB step did not fit the segment: VPP's own request, min_alloc (64 KiB), did.
    assert [ch.length for ch in p.chunks()] == [4096, 64 * KB]
    audit(seg, [f], complete=False)


def test_chunks_above_64k_are_carved_one_at_a_time(seg: Segment) -> None:
    a = ChunkAllocator(seg)
    start = fsh_get(seg, "byte_index")
    c = a.alloc(0, 1 << 20)
    assert c == start and a.read_chunk(c).length == 1 << 20
    assert fsh_get(seg, "byte_index") == start + CHUNK_HDR_SIZE + (1 << 20)  # no batch
    assert a.fl_chunk_bytes(0) == 0
    a.free(0, c)
    assert a.alloc(0, 1 << 20) == c  # reused from its free list


def test_growth_across_many_chunks_and_reuse(seg: Segment) -> None:
    f = alloc_fifo(seg, 4_000_000)
    p, c = pair(seg, f)
    data = os.urandom(2_000_000)
    for i in range(0, len(data), 1000):
        assert p.enqueue(data[i : i + 1000]) == 1000
    chunks = p.chunks()
    step = 1 << 20  # grow_step(64 KiB, 4_000_000), rounded up to a free list's size
    assert len(chunks) == 1 + (2_000_000 - 4096 + step - 1) // step
    assert all(ch.length == step for ch in chunks[1:])
    carved = list(slice_get(seg, "num_chunks"))
    audit(seg, [f])
    got = bytearray()
    while len(got) < len(data):
        got += c.dequeue(random.randint(1, 70_000))
    assert got == data
    assert len(c.chunks()) == 1
    a = ChunkAllocator(seg)
    assert a.fl_chunk_bytes(0) == a.n_cached_bytes()
    audit(seg, [f])
    # Writing again reuses the freed 1 MiB chunk; the chain kept its last one (partly read),
    # so the second 2 MB reach one step further and exactly one more is carved.
    for i in range(0, len(data), 1000):
        assert p.enqueue(data[i : i + 1000]) == 1000
    carved[8] += 1  # (list 8: 1 MiB)
    assert list(slice_get(seg, "num_chunks")) == carved
    assert c.dequeue(len(data)) == data
    audit(seg, [f])


@pytest.mark.parametrize("start", [M32 - 99, M32 - 4095, M32, 1 << 31, (1 << 31) - 1])
def test_position_wrap(seg: Segment, start: int) -> None:
    f = alloc_fifo(seg, 200_000, start=start)
    p, c = pair(seg, f)
    assert p.head == p.tail == start
    data = os.urandom(600_000)
    sent = got = 0
    out = bytearray()
    rnd = random.Random(start)
    while got < len(data):
        if sent < len(data):
            sent += p.enqueue(data[sent : sent + rnd.randint(1, 90_000)])
        k = rnd.randint(1, 90_000)
        if rnd.random() < 0.3:
            assert c.peek(k, 17) == data[got + 17 : min(got + 17 + k, sent)]
        piece = c.dequeue(k)
        out += piece
        got += len(piece)
        audit(seg, [f])
    assert out == data
    assert c.head == c.tail == (start + len(data)) & M32


def test_size_is_reread(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p = Fifo(seg, f)
    p.enqueue(bytes(60_000))
    fifo_put(seg, f, size=50_000)  # VPP's fifo tuning shrank it below the content
    assert p.size == 50_000 and p.max_enqueue() == 0 and p.enqueue(b"x") == 0
    fifo_put(seg, f, size=200_000)
    assert p.max_enqueue() == 140_000
    assert p.enqueue(bytes(150_000)) == 140_000


def test_buffer_types(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p, c = pair(seg, f)
    ints = array.array("I", range(1000))
    assert p.enqueue(ints) == 4000
    assert p.enqueue(bytearray(b"ab")) == 2
    assert p.enqueue(memoryview(b"xcdx")[1:3]) == 2
    assert c.dequeue(4000) == ints.tobytes()
    buf = bytearray(10)
    assert c.dequeue_into(memoryview(buf)[2:]) == 4
    assert buf[2:6] == b"abcd"
    out = array.array("I", [0] * 4)
    p.enqueue(array.array("I", [7, 8, 9, 10]))
    assert c.dequeue_into(out) == 16 and list(out) == [7, 8, 9, 10]


# -- peek / drop / zero copy ------------------------------------------------------------------


def test_peek_at_offsets(seg: Segment) -> None:
    f = alloc_fifo(seg, 1_000_000)
    p, c = pair(seg, f)
    data = os.urandom(500_000)
    assert p.enqueue(data) == 500_000
    c.dequeue(1000)
    base = 1000
    for off in [0, 1, 3095, 3096, 3097, 100_000, 200_000, 150_000, 498_999, 499_000, 600_000]:
        want = data[base + off : base + off + 70_000]
        assert c.peek(70_000, off) == want
        buf = bytearray(70_000)
        assert c.peek_into(buf, off) == len(want) and buf[: len(want)] == want
    assert c.head == base  # peek consumes nothing
    audit(seg, [f])


def test_drop(seg: Segment) -> None:
    f = alloc_fifo(seg, 1_000_000)
    p, c = pair(seg, f)
    data = os.urandom(400_000)
    p.enqueue(data)
    assert c.drop(100) == 100
    assert c.peek(10) == data[100:110]
    assert c.drop(4096 - 100) == 3996  # exactly to the end of the first chunk
    assert c.head_chunk == c.start_chunk and c.chunks()[0].start_byte == 4096
    assert c.drop(70_000) == 70_000
    assert c.head_chunk == c.start_chunk
    audit(seg, [f])
    assert c.dequeue(5) == data[74_096:74_101]
    assert c.drop(1 << 30) == 400_000 - 74_101
    assert c.drop(1) == 0
    # head at the very end of the last chunk: head_chunk 0 as VPP leaves it
    assert c.head == c.tail
    audit(seg, [f])


def test_segments_then_drop(seg: Segment) -> None:
    f = alloc_fifo(seg, 1_000_000)
    p, c = pair(seg, f)
    data = os.urandom(300_000)
    p.enqueue(data)
    views = c.segments(200_000)
    assert [len(v) for v in views] == [4096, 195_904]  # one 512 KiB chunk was added
    assert b"".join(views) == data[:200_000]
    assert all(v.readonly for v in views)
    with pytest.raises(TypeError):
        views[0][0] = 1
    for v in views:
        v.release()
    views = c.segments(100, 4090)
    assert b"".join(views) == data[4090:4190] and len(views) == 2
    for v in views:
        v.release()
    assert c.drop(200_000) == 200_000
    assert c.dequeue(1 << 20) == data[200_000:]
    audit(seg, [f])


def test_reserve_commit(seg: Segment) -> None:
    f = alloc_fifo(seg, 1_000_000)
    p, c = pair(seg, f)
    data = os.urandom(150_000)
    views = p.reserve(150_000)
    assert sum(len(v) for v in views) == 150_000
    assert [len(v) for v in views] == [4096, 145_904]  # grown by one 256 KiB chunk
    pos = 0
    for v in views:
        v[:] = data[pos : pos + len(v)]
        pos += len(v)
        v.release()
    assert c.max_dequeue() == 0  # nothing published yet
    assert p.commit(100_000) == 100_000  # partial commit
    assert c.dequeue(1 << 20) == data[:100_000]
    assert p.tail_chunk == p.chunks()[-1].offset
    # the rest was written in place already: commit it
    assert p.commit(50_000) == 50_000
    assert c.dequeue(1 << 20) == data[100_000:]
    with pytest.raises(LocalError):
        p.commit(2_000_000)
    audit(seg, [f])


def test_commit_beyond_reserved(seg: Segment) -> None:
    f = alloc_fifo(seg, 1_000_000)
    p = Fifo(seg, f)
    p.reserve(4096)
    with pytest.raises(LocalError, match="not reserved"):
        p.commit(5000)
    assert p.commit(4096) == 4096 and p.tail_chunk == 0


def test_out_of_chunk_memory() -> None:
    seg = make_segment(1 << 20)
    f = alloc_fifo(seg, 200_000)
    g = alloc_fifo(seg, 200_000)
    a = ChunkAllocator(seg)
    carve(seg, a.n_free_bytes() - 40 * KB)  # as if mqs took most of the segment
    p = Fifo(seg, f)
    total = 0
    while True:
        n = p.enqueue(bytes(30_000))
        if not n:
            break
        total += n
    assert 0 < total < 200_000 and p.max_enqueue() > 0  # EGROW, not full
    audit(seg, [f, g])
    # The other fifo cannot grow either, but can use its own first chunk.
    q = Fifo(seg, g)
    assert q.enqueue(bytes(10_000)) == 4096
    assert q.enqueue(b"x") == 0
    # Reading f frees chunks; g can grow again.
    assert len(Fifo(seg, f).dequeue(total)) == total
    assert q.enqueue(bytes(10_000)) == 10_000
    audit(seg, [f, g])


# -- hostile headers --------------------------------------------------------------------------


def test_bad_fifo_offsets(seg: Segment) -> None:
    with pytest.raises(SharedMemoryError):
        Fifo(seg, seg.size)
    with pytest.raises(SharedMemoryError):
        Fifo(seg, 0)
    with pytest.raises(SharedMemoryError, match="aligned"):
        Fifo(seg, alloc_fifo(seg, 4096) + 8)


def _state(seg: Segment) -> bytes:
    return bytes(seg.view[seg.fsh : seg.fsh + fsh_get(seg, "byte_index")])


def test_hostile_end_chunk(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p = Fifo(seg, f)
    fifo_put(seg, f, end_chunk=seg.size + 64)
    before = _state(seg)
    with pytest.raises(SharedMemoryError):
        p.enqueue(bytes(10_000))
    assert _state(seg) == before


def test_hostile_chunk_length(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p, c = pair(seg, f)
    p.enqueue(b"abc")
    chunk_put(seg, int(fifo_get(seg, f, "start_chunk")), length=1 << 30)
    with pytest.raises(SharedMemoryError, match="length"):
        c.dequeue(3)
    with pytest.raises(SharedMemoryError, match="length"):
        p.enqueue(b"x")


def test_hostile_size(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p = Fifo(seg, f)
    fifo_put(seg, f, size=seg.size + 1)
    with pytest.raises(SharedMemoryError, match="size"):
        p.enqueue(b"x")
    with pytest.raises(SharedMemoryError, match="size"):
        p.max_enqueue()


def test_hostile_tail_beyond_data(seg: Segment) -> None:
    """tail claims more bytes than the chain holds: the reader fails, frees nothing."""
    f = alloc_fifo(seg, 1_000_000)
    p, c = pair(seg, f)
    p.enqueue(bytes(10_000))
    fifo_put(seg, f, tail=900_000)
    before = _state(seg)
    with pytest.raises(SharedMemoryError, match="chain ends"):
        c.dequeue(900_000)
    assert _state(seg) == before


def test_hostile_cycle(seg: Segment) -> None:
    f = alloc_fifo(seg, 1_000_000)
    p, c = pair(seg, f)
    p.enqueue(bytes(200_000))
    chunks = p.chunks()
    chunk_put(seg, chunks[-1].offset, next=chunks[0].offset)  # loop back
    fifo_put(seg, f, tail=900_000)
    before = _state(seg)
    with pytest.raises(SharedMemoryError):
        c.dequeue(900_000)
    with pytest.raises(SharedMemoryError):
        c.drop(900_000)
    with pytest.raises(SharedMemoryError, match="cyclic"):
        p.chunks()
    assert _state(seg) == before
    # same-start cycle (positions consistent) is caught by the walk bound
    chunk_put(seg, chunks[0].offset, next=chunks[0].offset)
    fifo_put(seg, f, head_chunk=0)
    with pytest.raises(SharedMemoryError):
        c.peek(10, 500_000)


def test_hostile_tail_chunk(seg: Segment) -> None:
    f = alloc_fifo(seg, 1_000_000)
    p = Fifo(seg, f)
    p.enqueue(bytes(100_000))
    first = p.chunks()[0].offset
    fifo_put(seg, f, tail_chunk=first)  # does not hold tail
    before = _state(seg)
    with pytest.raises(SharedMemoryError, match="does not hold"):
        p.enqueue(bytes(10))
    assert _state(seg) == before


def test_hostile_head_chunk(seg: Segment) -> None:
    f = alloc_fifo(seg, 1_000_000)
    p, c = pair(seg, f)
    p.enqueue(bytes(100_000))
    first, second = p.chunks()[:2]
    fifo_put(seg, f, head_chunk=second.offset)  # does not hold head
    before = _state(seg)
    with pytest.raises(SharedMemoryError, match="does not hold"):
        c.dequeue(10)
    assert _state(seg) == before
    fifo_put(seg, f, head_chunk=0, start_chunk=0)  # nothing to find head from
    with pytest.raises(SharedMemoryError):
        c.dequeue(10)
    fifo_put(seg, f, start_chunk=second.offset)  # the chain starts after head
    with pytest.raises(SharedMemoryError, match="no chunk holds"):
        c.peek(10)
    fifo_put(seg, f, start_chunk=first.offset)
    assert c.dequeue(10) == bytes(10)
    assert repr(c).startswith("<Fifo 'test-seg'@")


def test_hostile_discontinuous_chain(seg: Segment) -> None:
    f = alloc_fifo(seg, 1_000_000)
    p, c = pair(seg, f)
    p.enqueue(bytes(100_000))
    chunk_put(seg, p.chunks()[1].offset, start_byte=12345)
    with pytest.raises(SharedMemoryError, match="starts at"):
        c.dequeue(100_000)


def test_hostile_slice_index(seg: Segment) -> None:
    f = alloc_fifo(seg, 1_000_000)
    fifo_put(seg, f, slice_index=9)
    p = Fifo(seg, f)
    with pytest.raises(SharedMemoryError, match="slice"):
        p.enqueue(bytes(10_000))
    fifo_put(seg, f, slice_index=0)
    p.enqueue(bytes(10_000))
    fifo_put(seg, f, slice_index=9)
    before = _state(seg)
    with pytest.raises(SharedMemoryError, match="slice"):
        Fifo(seg, f).dequeue(10_000)
    assert _state(seg) == before


# ---------------------------------------------------------------------------------------------
# Signals


def test_event_flag(seg: Segment) -> None:
    fifo = Fifo(seg, alloc_fifo(seg, 4096))
    assert not fifo.has_event
    assert fifo.set_event() is True  # 0 -> 1: send the IO event
    assert fifo.set_event() is False and fifo.has_event
    fifo.unset_event()
    assert not fifo.has_event and fifo.set_event()


def test_want_deq_ntf_bits(seg: Segment) -> None:
    fifo = Fifo(seg, alloc_fifo(seg, 4096))
    fifo.add_want_deq_ntf(WANT)
    fifo.add_want_deq_ntf(IF_FULL)
    assert fifo.want_deq_ntf == WANT | IF_FULL
    fifo.del_want_deq_ntf(WANT)
    assert fifo.want_deq_ntf == IF_FULL
    fifo.deq_thresh = 1234
    assert fifo.deq_thresh == 1234 == fifo_get(seg, fifo.offset, "deq_thresh")


def test_needs_deq_ntf_want(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p, c = pair(seg, f)
    assert not c.needs_deq_ntf(10)  # nothing requested
    p.enqueue(bytes(100_000))
    p.add_want_deq_ntf(WANT)
    p.deq_thresh = 3000
    c.dequeue(2999)
    assert not c.needs_deq_ntf(2999)  # 2999 free < 3000
    c.dequeue(1)
    assert c.needs_deq_ntf(1)
    c.clear_deq_ntf()
    assert c.want_deq_ntf == 0 and not c.has_deq_ntf and not c.needs_deq_ntf(1)


def test_needs_deq_ntf_if_full(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p, c = pair(seg, f)
    p.enqueue(bytes(100_000))
    p.add_want_deq_ntf(IF_FULL)
    assert not c.needs_deq_ntf(0)  # still full
    c.dequeue(10)
    assert c.needs_deq_ntf(10)  # full -> not full by this read
    assert not c.needs_deq_ntf(5)  # 99990 + 5 < size: not the transition
    c.clear_deq_ntf()
    assert c.has_deq_ntf and c.want_deq_ntf == IF_FULL  # IF_FULL stays, suppressed
    p.enqueue(bytes(10))
    c.dequeue(10)
    assert not c.needs_deq_ntf(10)
    p.reset_has_deq_ntf()
    assert c.needs_deq_ntf(10)


def test_needs_deq_ntf_if_empty(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p, c = pair(seg, f)
    p.add_want_deq_ntf(IF_EMPTY)
    p.enqueue(b"abc")
    c.dequeue(2)
    assert not c.needs_deq_ntf(2)
    c.dequeue(1)
    assert c.needs_deq_ntf(1)
    c.clear_deq_ntf()
    assert c.has_deq_ntf and not c.needs_deq_ntf(1)


def test_needs_deq_ntf_want_wins(seg: Segment) -> None:
    """WANT_DEQ_NOTIF decides alone when set (VPP returns from that branch)."""
    f = alloc_fifo(seg, 100_000)
    p, c = pair(seg, f)
    p.enqueue(bytes(100))
    p.add_want_deq_ntf(WANT | IF_EMPTY)
    p.deq_thresh = 200_000
    c.dequeue(100)  # empty, but the threshold is not met
    assert not c.needs_deq_ntf(100)


def test_cut_through_signals_elsewhere() -> None:
    ct = make_segment(4 << 20, name="ct")
    own = make_segment(4 << 20, name="own")
    data_f = alloc_fifo(ct, 100_000)
    sig_f = alloc_fifo(own, 100_000)
    client_tx = Fifo(ct, data_f, signals=(own, sig_f))
    server_rx = Fifo(ct, data_f)
    assert client_tx.enqueue(b"hello") == 5
    assert client_tx.set_event()
    assert fifo_get(own, sig_f, "has_event") == 1 and fifo_get(ct, data_f, "has_event") == 0
    assert not server_rx.has_event
    client_tx.add_want_deq_ntf(WANT)
    assert fifo_get(own, sig_f, "want_deq_ntf") == WANT
    assert server_rx.dequeue(5) == b"hello"
    shared = Signals(own, sig_f)
    assert Fifo(ct, data_f, signals=shared).needs_deq_ntf(5)
    assert repr(shared).startswith("<Signals 'own'")


# ---------------------------------------------------------------------------------------------
# Two processes


def _stream(
    out: Fifo, n_out: int, inp: Fifo, n_in: int, seed: int, src: bytes, piece: int
) -> tuple[str, str]:
    """Write ``n_out`` bytes of ``src`` into ``out`` while reading ``n_in`` bytes from ``inp``,
    in random-size pieces; (sha256 sent, sha256 received)."""
    rnd = random.Random(seed)
    h_out, h_in = hashlib.sha256(), hashlib.sha256()
    buf = bytearray(256 * KB)
    sent = got = 0
    deadline = time.monotonic() + 60
    while sent < n_out or got < n_in:
        assert time.monotonic() < deadline, f"stalled: sent {sent}, got {got}"
        progress = 0
        if sent < n_out:
            k = min(rnd.randint(1, piece), n_out - sent)
            off = sent % (1 << 20)
            n = out.enqueue(memoryview(src)[off : off + k])
            h_out.update(memoryview(src)[off : off + n])
            sent += n
            progress += n
        if got < n_in:
            if rnd.random() < 0.5:
                n = inp.dequeue_into(memoryview(buf)[: rnd.randint(1, min(piece, len(buf)))])
                h_in.update(memoryview(buf)[:n])
            else:
                data = inp.dequeue(rnd.randint(1, piece))
                n = len(data)
                h_in.update(data)
            got += n
            progress += n
        if not progress:
            time.sleep(0)
    return h_out.hexdigest(), h_in.hexdigest()


@pytest.mark.parametrize("piece", [200_000, 9_000])
def test_two_processes_stream(piece: int) -> None:
    """A producer and a consumer process stream 50 MB through one fifo while a second fifo
    carries 20 MB the other way, so both processes allocate and free chunks from the same free
    lists concurrently; checksums match and the allocator state is consistent afterwards."""
    big, small_ = 50_000_000, 20_000_000
    seg = make_segment(32 << 20)
    fa = alloc_fifo(seg, 4_000_000)  # child -> parent
    fb = alloc_fifo(seg, 1_000_000)  # parent -> child
    src = os.urandom(1 << 20) * 2
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(rfd)
            sent, got = _stream(Fifo(seg, fa), big, Fifo(seg, fb), small_, 1, src, piece)
            os.write(wfd, f"{sent} {got}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        sent, got = _stream(Fifo(seg, fb), small_, Fifo(seg, fa), big, 2, src, piece)
        ready, _, _ = select.select([rfd], [], [], 60)
        assert ready
        child_sent, child_got = os.read(rfd, 200).decode().split()
        assert got == child_sent
        assert sent == child_got
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        pid = 0
        audit(seg, [fa, fb])
        a = ChunkAllocator(seg)
        assert a.n_cached_bytes() == a.fl_chunk_bytes(0) > 0
    finally:
        os.close(rfd)
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


# ---------------------------------------------------------------------------------------------
# Real data


def test_own_snapshot_full_fifo() -> None:
    """A pyvcl server's full rx fifo (tests/fixtures, tools/record_fixtures.py) read as a
    `Fifo`: positions and chunks as the live process showed them, full, the bytes at head
    those recorded."""
    with load_own_snapshot("ct-pyvcl-server-full") as snap:
        segs = {s.index: s for s in snap.segments}
        lives = snap.meta["live"]["fifos"]
        for fj in lives:
            fifo = Fifo(segs[fj["segment"]], fj["fsh_offset"])
            assert (fifo.head, fifo.tail, fifo.size) == (fj["head"], fj["tail"], fj["size"])
            assert fifo.max_dequeue() == fj["unread"] and len(fifo.chunks()) == fj["chunks"]
            assert fifo.max_enqueue() == fj["size"] - fj["unread"]
        (fj,) = [fj for fj in lives if fj["unread"] == fj["size"]]
        fifo = Fifo(segs[fj["segment"]], fj["fsh_offset"])
        assert fifo.is_full() and fifo.enqueue(b"x") == 0 and len(fifo.chunks()) > 2
        # The recorder labels a fifo's regions (header, chunks, data at head) alike.
        (header,) = [
            r
            for r in snap.fifo_regions()
            if (r.segment, r.fsh_offset) == (fj["segment"], fifo.offset)
        ]
        [sample] = [
            r for r in snap.regions_of("fifo-data-at-head") if r.info["fifo"] == header.info["fifo"]
        ]
        blob = read_blob(snap.bin_path)
        at_head = blob[sample.bin_offset : sample.bin_offset + sample.length]
        assert fifo.peek(len(at_head)) == at_head and any(at_head)


@cross_check("vpp-v26.06", "snapshots")
def test_snapshot_ct_full_server_stalled() -> None:
    snap = load_snapshot("ct-full-server-stalled")
    meta, segs = snap.meta, {s.index: s for s in snap.segments}
    assert meta["fifos"]
    for fj in meta["fifos"]:
        fifo = Fifo(segs[fj["segment"]], fj["fsh_offset"])
        assert fifo.head == fj["head"] and fifo.tail == fj["tail"]
        assert fifo.size == fj["size"] and fifo.min_alloc == fj["min_alloc"]
        assert fifo.max_dequeue() == fj["bytes_present"] == (fj["tail"] - fj["head"]) & M32
        assert fifo.max_enqueue() == fj["size"] - fj["bytes_present"]
        assert fifo.has_event == bool(fj["has_event"])
        assert fifo.start_chunk == fj["start_chunk"] and fifo.end_chunk == fj["end_chunk"]
        assert fifo.head_chunk == fj["head_chunk"] and fifo.tail_chunk == fj["tail_chunk"]
        got = [(c.offset, c.start_byte, c.length, c.next) for c in fifo.chunks()]
        want = [(c["fsh_offset"], c["start_byte"], c["length"], c["next"]) for c in fj["chunks"]]
        assert got == want
    full = [fj for fj in meta["fifos"] if fj["bytes_present"] == fj["size"]]
    assert full, "the stalled reader's full rx fifo"
    fj = full[0]
    fifo = Fifo(segs[fj["segment"]], fj["fsh_offset"])
    assert fifo.is_full() and fifo.enqueue(b"x") == 0
    assert len(fifo.chunks()) == 62
    # The bytes at head were recorded: peek returns them.
    [sample] = [
        r for r in meta["regions"] if r["what"] == "fifo-data-at-head" and r["fifo"] == fj["index"]
    ]
    blob = read_blob(snap.bin_path)
    at_head = blob[sample["bin_offset"] : sample["bin_offset"] + sample["length"]]
    assert fifo.peek(len(at_head)) == at_head and any(at_head)
    # Free-list heads and tags as recorded.
    for sj in meta["segments"]:
        if sj["index"] not in segs or sj["fsh"]["n_slices"] < 1:
            continue
        a = ChunkAllocator(segs[sj["index"]])
        for sl in sj["slices"]:
            for fl in sl["free_chunk_lists"]:
                assert a.head(sl["index"], fl["fl_index"]) == (fl["head_offset"], fl["tag"])
