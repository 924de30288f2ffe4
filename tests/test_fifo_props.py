"""Property test: random producer/consumer operations on a fifo (two `Fifo` objects on the same
memory) against a plain bytes model, with a second fifo competing for the segment's chunks; the
segment's free lists, counters and both chains are audited after every step."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pyvcl.fifo import Fifo

from .fifo_fixtures import alloc_fifo, audit
from .segment_fixtures import make_segment

M32 = 0xFFFFFFFF
KB = 1024

sizes = st.integers(min_value=0, max_value=300 * KB)
small = st.integers(min_value=0, max_value=5000)
lengths = st.one_of(small, sizes, st.sampled_from([1, 4095, 4096, 4097, 65535, 65536, 65537]))


class FifoMachine(RuleBasedStateMachine):
    @initialize(
        seg_size=st.sampled_from([512 * KB, 1 << 20, 4 << 20]),
        fifo_size=st.sampled_from([4096, 10_000, 32 * KB + 1, 100_000, 250_000]),
        start=st.one_of(
            st.just(0),
            st.integers(min_value=M32 - 300_000, max_value=M32),
            st.integers(min_value=0, max_value=M32),
        ),
        n_slices=st.integers(min_value=1, max_value=2),
    )
    def setup(self, seg_size: int, fifo_size: int, start: int, n_slices: int) -> None:
        self.seg = make_segment(seg_size, n_slices=n_slices, shared=False)
        max_fifo = 1 << ((min((seg_size - 8192 - 192 * n_slices) // 2, 2 << 30)).bit_length() - 1)
        fifo_size = min(fifo_size, max_fifo)
        self.f = alloc_fifo(self.seg, fifo_size, slice_index=n_slices - 1, start=start)
        self.g = alloc_fifo(self.seg, min(100_000, max_fifo), start=start ^ 0x5555)
        self.prod, self.cons = Fifo(self.seg, self.f), Fifo(self.seg, self.f)
        self.other_p, self.other_c = Fifo(self.seg, self.g), Fifo(self.seg, self.g)
        self.size = fifo_size
        self.start = start
        self.model = bytearray()
        self.other = 0
        self.rnd = random.Random(start)
        self.consumed = 0
        self.produced = 0

    def _data(self, n: int) -> bytes:
        return self.rnd.randbytes(n)

    # -- producer --------------------------------------------------------------------------------
    @rule(n=lengths)
    def enqueue(self, n: int) -> None:
        data = self._data(n)
        free = self.size - len(self.model)
        w = self.prod.enqueue(data)
        assert 0 <= w <= min(n, free)
        self.model += data[:w]
        self.produced += w

    @rule(n=lengths, frac=st.floats(min_value=0, max_value=1))
    def reserve_commit(self, n: int, frac: float) -> None:
        views = self.prod.reserve(n)
        total = sum(len(v) for v in views)
        assert total <= min(n, self.size - len(self.model))
        k = int(total * frac)
        data = self._data(k)
        pos = 0
        for v in views:
            part = data[pos : pos + len(v)]
            v[: len(part)] = part
            pos += len(part)
            v.release()
        assert self.prod.commit(k) == k
        self.model += data
        self.produced += k

    # -- consumer --------------------------------------------------------------------------------
    @rule(n=lengths)
    def dequeue(self, n: int) -> None:
        out = self.cons.dequeue(n)
        assert out == self.model[:n]
        del self.model[: len(out)]
        self.consumed += len(out)

    @rule(n=lengths)
    def dequeue_into(self, n: int) -> None:
        buf = bytearray(n + 3)
        k = self.cons.dequeue_into(memoryview(buf)[1 : n + 1])
        assert buf[1 : k + 1] == self.model[:n]
        assert k == min(n, len(self.model))
        del self.model[:k]
        self.consumed += k

    @rule(n=lengths, off=lengths)
    def peek(self, n: int, off: int) -> None:
        assert self.cons.peek(n, off) == self.model[off : off + n]

    @rule(n=lengths)
    def drop(self, n: int) -> None:
        k = self.cons.drop(n)
        assert k == min(n, len(self.model))
        del self.model[:k]
        self.consumed += k

    @rule(n=lengths, off=small, frac=st.floats(min_value=0, max_value=1))
    def segments_then_drop(self, n: int, off: int, frac: float) -> None:
        views = self.cons.segments(n, off)
        got = b"".join(views)
        for v in views:
            v.release()
        assert got == self.model[off : off + n]
        k = int(min(len(self.model), off + len(got)) * frac)
        assert self.cons.drop(k) == k
        del self.model[:k]
        self.consumed += k

    # -- the competing fifo ----------------------------------------------------------------------
    @rule(n=sizes)
    def other_enqueue(self, n: int) -> None:
        self.other += self.other_p.enqueue(bytes(n))

    @precondition(lambda self: self.other > 0)
    @rule(n=sizes)
    def other_dequeue(self, n: int) -> None:
        self.other -= len(self.other_c.dequeue(n))

    # -- invariants ------------------------------------------------------------------------------
    @invariant()
    def consistent(self) -> None:
        assert self.cons.max_dequeue() == len(self.model)
        assert self.prod.max_enqueue() == self.size - len(self.model)
        assert self.cons.head == (self.start + self.consumed) & M32
        assert self.prod.tail == (self.start + self.produced) & M32
        audit(self.seg, [self.f, self.g])


FifoMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestFifoProperties = FifoMachine.TestCase
