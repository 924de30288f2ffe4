"""Atomic operations and process-shared pthread mutex/condvar on shared memory, from pure Python.

VPP's fifos and message queues are updated concurrently by VPP and by us, so every shared index,
free-list head and counter must be touched with the same lock-prefixed / exclusive-monitor
instructions VPP's C code uses (protocol.md 3.7).  Two backends provide them, chosen at import:

``libatomic``
    gcc's ``libatomic.so.1`` through ctypes.  Package ``libatomic1``; Debian priority optional,
    so it is missing on minimal systems.
``stub-<arch>``
    A few bytes of hand-assembled machine code per operation (x86-64 and aarch64), mapped
    PROT_READ|PROT_EXEC and called through ctypes.  Needs no library, only that the kernel lets
    the process map executable memory.

By default x86-64 tries the stub first (cheaper calls), other machines libatomic first;
``PYVCL_ATOMICS=libatomic|stub`` forces one.  If neither works, importing still succeeds and the
first `AtomicRegion` raises `VclError` saying what to install.  On x86-64 loads and stores need
no backend at all: there a plain aligned access is acquire/release (see `PLAIN_ACQ_REL`).

The package: this module (`AtomicRegion`, the choice), `backends` (libatomic and the machine
code) and `pthread` (the process-shared mutex and condvar).

Cost of one `AtomicRegion` method call on a memfd mmap, measured with timeit on the project's
2-vCPU x86-64 machine, CPython 3.11 (best of 13 runs × 9 repeats × 300k calls; the instructions
themselves take nanoseconds, the rest is Python and ctypes call overhead):

=========================  =========  ===========
operation                  libatomic  stub-x86_64
=========================  =========  ===========
load32 / load64            0.30 µs    0.24 µs
store32 / store64          0.35 µs    0.28 µs
fetch_add / xchg / or      0.37 µs    0.29 µs
cas32 / cas64              0.62 µs    0.33 µs
mutex lock + unlock        1.1 µs     (libc + checks, same for both)
=========================  =========  ===========

The mutex figure includes about 0.5 µs of checks of the words glibc is handed (see
`pyvcl.atomics.pthread`).  The libatomic CAS is slower because the expected value travels
through a per-thread scratch word (a shared one would let two Python threads clobber each
other's expected value).

The aarch64 bytes were checked against GNU as and run under qemu-aarch64 (tests/test_atomics.py
passes there, but for the robust-mutex tests qemu-user cannot run), not yet on aarch64
hardware.  (pyvcl does not attach to VPP on aarch64 yet: `pyvcl.wire.abi`.)

Both backends keep the GIL during the call (PyDLL / PYFUNCTYPE): releasing and
retaking it costs more than the instruction.

Loads are acquire, stores release, read-modify-writes sequentially consistent.  Values are
returned unsigned; arguments in [-2**63, 2**64) are taken modulo 2**width.  Offsets must be
naturally aligned in memory: libatomic would otherwise silently use a private lock table that
VPP knows nothing about (protocol.md gotcha 26).
"""

from __future__ import annotations

import ctypes
import errno
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, Protocol, cast

from pyvcl.errors import LocalError, PeerStalled, SharedMemoryError, VclError

from .backends import _MACHINE, _libatomic_ops, _Ops, _select, _stub_ops, _unavailable
from .bound import bound_xchg32
from .pthread import (
    VPP_MUTEX_KIND,
    ProcessSharedCond,
    ProcessSharedMutex,
    _Pthread,
    _sliced,
    _Timespec,
    init_shared_cond,
    init_shared_mutex,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "VPP_MUTEX_KIND",
    "AtomicRegion",
    "PeerStalled",
    "ProcessSharedCond",
    "ProcessSharedMutex",
    "RawOps",
    "backend_name",
    "init_shared_cond",
    "init_shared_mutex",
]
RawOps = _Ops  # what `AtomicRegion.raw_ops` returns: the primitives by absolute address
# Re-exported for tests and tools that build or swap a backend.
_PRIVATE = (_Ops, _libatomic_ops, _stub_ops, _unavailable, _Pthread, _sliced, _Timespec)

_OPS = _select()

# On x86-64 (TSO) every naturally aligned load is already an acquire load and every aligned
# store a release store: VPP's clib_atomic_load_acq_n / clib_atomic_store_rel_n compile to plain
# movs there.  CPython reads and writes an item of a native "I"/"Q" memoryview with a fixed-size
# memcpy, which is one aligned mov (even an out-of-line glibc memcpy of 4 or 8 bytes moves the
# word whole), so loads and stores need no ctypes call: ~0.05 us instead of ~0.3.  Elsewhere
# (aarch64) a plain access has no ordering, and they go through the backend's ldar/stlr.
PLAIN_ACQ_REL = _MACHINE == "x86_64"


class Words(Protocol):
    """Word-indexed acquire loads (``w[i]``) and release stores (``w[i] = v``)."""

    def __getitem__(self, index: int, /) -> int: ...
    def __setitem__(self, index: int, value: int, /) -> None: ...


def backend_name() -> str:
    """``"libatomic"``, ``"stub-x86_64"``, ``"stub-aarch64"`` or ``"unavailable"``."""
    return _OPS.name


# ---------------------------------------------------------------------------------------------
# AtomicRegion


class AtomicRegion:
    """Atomic access to a writable buffer (usually a MAP_SHARED `mmap.mmap`), by byte offset."""

    __slots__ = (
        "_anchor", "_cas32", "_cas64", "_fadd32", "_fadd64", "_fand32", "_for32", "_fsub32",
        "_fsub64", "_last4", "_last8", "_load32", "_load64", "_ops", "_plain", "_store32",
        "_store64", "_w32", "_w64", "_xchg32", "address", "closed", "size",
    )  # fmt: skip

    def __init__(self, buf: WriteableBuffer) -> None:
        if _OPS.error is not None:
            raise VclError(_OPS.error, errno.ENOSYS)
        with memoryview(buf) as view:
            self.size: int = view.nbytes
        # The ctypes object keeps the buffer exported, so the memory cannot be unmapped or
        # resized under us until close().
        self._anchor: ctypes.c_char | None = ctypes.c_char.from_buffer(buf)
        self.address: int = ctypes.addressof(self._anchor)
        self._last4 = self.size - 4
        self._last8 = self.size - 8
        self.closed = False  # (a plain attribute: per-call paths look at it before raw calls)
        o = self._ops = _OPS
        self._load32, self._load64, self._store32, self._store64 = (
            o.load32, o.load64, o.store32, o.store64
        )  # fmt: skip
        self._cas32, self._cas64, self._xchg32 = o.cas32, o.cas64, o.xchg32
        self._fadd32, self._fadd64, self._fsub32, self._fsub64 = (
            o.fetch_add32, o.fetch_add64, o.fetch_sub32, o.fetch_sub64
        )  # fmt: skip
        self._for32, self._fand32 = o.fetch_or32, o.fetch_and32
        self._w32: memoryview | _AcqRelWords
        self._w64: memoryview | _AcqRelWords
        self._plain = PLAIN_ACQ_REL and not self.address & 7
        if self._plain:
            whole = memoryview(buf).cast("B")
            self._w32 = whole[: self.size & ~3].cast("I")
            self._w64 = whole[: self.size & ~7].cast("Q")
            whole.release()
        else:
            self._w32, self._w64 = _AcqRelWords(self, 4), _AcqRelWords(self, 8)

    def close(self) -> None:
        """Release the buffer export (the mmap can then be closed); later ops raise."""
        self._anchor = None
        self.closed = True
        self._last4 = self._last8 = -1
        for w in (self._w32, self._w64):
            if isinstance(w, memoryview):
                w.release()

    def words32(self) -> Words:
        """The region as 32-bit words for the hot path: ``w[off >> 2]`` is an acquire load of
        the word at byte offset ``off`` and ``w[off >> 2] = v`` a release store.  Index range is
        checked (IndexError); after `close` any access raises ValueError.  A native memoryview
        where plain accesses are acquire/release (`PLAIN_ACQ_REL`), a ctypes-backed stand-in
        elsewhere."""
        return cast(Words, self._w32)

    def words64(self) -> Words:
        """As `words32`, for 64-bit words: ``w[off >> 3]``."""
        return cast(Words, self._w64)

    def word_address(self, off: int, width: int) -> int:
        """The absolute address of the ``width``-byte (4 or 8) word at ``off``, bounds and
        alignment checked (`SharedMemoryError`), for the primitives of `raw_ops`."""
        if width not in (4, 8):
            raise LocalError(f"no {width}-byte atomic words", errno.EINVAL)
        a = self.address + off
        if self._anchor is None or off < 0 or off > self.size - width or a & (width - 1):
            self._fault(off, width)
        return a

    def raw_ops(self) -> RawOps:
        """The backend's primitives by absolute address, without the checks of the methods:
        for a hot path that checks its addresses once (`word_address`).  Valid only while the
        region is open: a caller checks that before each use (e.g. by reading through
        `words32`, which raises ValueError once the region is closed)."""
        return self._ops

    def _fault(self, off: int, width: int) -> NoReturn:
        if self._anchor is None:
            raise LocalError("AtomicRegion used after close()", errno.EBADF)
        raise SharedMemoryError(
            f"atomic access of {width} bytes at offset {off:#x} is outside the {self.size:#x}-byte"
            f" region or misaligned (address {self.address + off:#x})"
        )

    def _object_address(self, off: int, size: int) -> int:
        a = self.address + off
        if self._anchor is None or off < 0 or off + size > self.size or a & 7:
            self._fault(off, size)
        return a

    def load32(self, off: int) -> int:
        a = self.address + off
        if off < 0 or off > self._last4 or a & 3:
            self._fault(off, 4)
        if self._plain:
            return int(self._w32[off >> 2])
        return self._load32(a)

    def load64(self, off: int) -> int:
        a = self.address + off
        if off < 0 or off > self._last8 or a & 7:
            self._fault(off, 8)
        if self._plain:
            return int(self._w64[off >> 3])
        return self._load64(a)

    def store32(self, off: int, v: int) -> None:
        a = self.address + off
        if off < 0 or off > self._last4 or a & 3:
            self._fault(off, 4)
        if self._plain:
            self._w32[off >> 2] = v & 0xFFFFFFFF
        else:
            self._store32(a, v)

    def store64(self, off: int, v: int) -> None:
        a = self.address + off
        if off < 0 or off > self._last8 or a & 7:
            self._fault(off, 8)
        if self._plain:
            self._w64[off >> 3] = v & 0xFFFFFFFFFFFFFFFF
        else:
            self._store64(a, v)

    def cas32(self, off: int, expected: int, new: int) -> int:
        """Strong compare-and-swap; returns the value seen (== expected iff it swapped)."""
        a = self.address + off
        if off < 0 or off > self._last4 or a & 3:
            self._fault(off, 4)
        return self._cas32(a, expected, new)

    def cas64(self, off: int, expected: int, new: int) -> int:
        """Strong compare-and-swap; returns the value seen (== expected iff it swapped)."""
        a = self.address + off
        if off < 0 or off > self._last8 or a & 7:
            self._fault(off, 8)
        return self._cas64(a, expected, new)

    def xchg32(self, off: int, v: int) -> int:
        a = self.address + off
        if off < 0 or off > self._last4 or a & 3:
            self._fault(off, 4)
        return self._xchg32(a, v)

    def bound_xchg32(self, off: int, v: int) -> Callable[[], int]:
        """For a per-call path: a function of no argument exchanging the 32-bit word at
        ``off`` with ``v`` (returning the old value), the offset checked once, now, as
        `xchg32` checks it on every call (`pyvcl.atomics.bound`: about a third of the cost of
        a call of `xchg32`).  Nothing is checked when it is called: the caller must look at
        `closed` first, since after `close` the memory may be unmapped (and an exchange there
        would crash the interpreter)."""
        a = self.address + off
        if self._anchor is None or off < 0 or off > self._last4 or a & 3:
            self._fault(off, 4)
        fn = bound_xchg32(a, v) if self._xchg32 is _OPS.xchg32 else None
        return fn if fn is not None else functools.partial(self._xchg32, a, v & 0xFFFFFFFF)

    def fetch_add32(self, off: int, delta: int) -> int:
        a = self.address + off
        if off < 0 or off > self._last4 or a & 3:
            self._fault(off, 4)
        return self._fadd32(a, delta)

    def fetch_add64(self, off: int, delta: int) -> int:
        a = self.address + off
        if off < 0 or off > self._last8 or a & 7:
            self._fault(off, 8)
        return self._fadd64(a, delta)

    def fetch_sub32(self, off: int, delta: int) -> int:
        a = self.address + off
        if off < 0 or off > self._last4 or a & 3:
            self._fault(off, 4)
        return self._fsub32(a, delta)

    def fetch_sub64(self, off: int, delta: int) -> int:
        a = self.address + off
        if off < 0 or off > self._last8 or a & 7:
            self._fault(off, 8)
        return self._fsub64(a, delta)

    def fetch_or32(self, off: int, bits: int) -> int:
        a = self.address + off
        if off < 0 or off > self._last4 or a & 3:
            self._fault(off, 4)
        return self._for32(a, bits)

    def fetch_and32(self, off: int, bits: int) -> int:
        a = self.address + off
        if off < 0 or off > self._last4 or a & 3:
            self._fault(off, 4)
        return self._fand32(a, bits)


class _AcqRelWords:
    """`AtomicRegion.words32`/`words64` where plain accesses are not acquire/release: item
    access by word index through the backend's load/store (bounds and alignment checked)."""

    __slots__ = ("_load", "_shift", "_store")

    def __init__(self, region: AtomicRegion, width: int) -> None:
        self._shift = width.bit_length() - 1
        self._load, self._store = _backend_word_ops(region, width)

    def __getitem__(self, i: int) -> int:
        return self._load(i << self._shift)

    def __setitem__(self, i: int, v: int) -> None:
        self._store(i << self._shift, v)


def _backend_word_ops(
    region: AtomicRegion, n: int
) -> tuple[Callable[[int], int], Callable[[int, int], None]]:
    """Checked ``n``-byte load/store by byte offset through the backend (not the word views)."""
    load, store = (region._load32, region._store32) if n == 4 else (region._load64, region._store64)
    mask = (1 << (8 * n)) - 1

    def check(off: int) -> int:
        if region._anchor is None:  # never touch memory that may be unmapped by now
            raise ValueError("AtomicRegion used after close()")
        if off < 0 or off + n > region.size or (region.address + off) & (n - 1):
            raise IndexError(f"word at byte offset {off:#x} is outside the region or misaligned")
        return region.address + off

    def load_at(off: int) -> int:
        return int(load(check(off)))

    def store_at(off: int, v: int) -> None:
        store(check(off), v & mask)

    return load_at, store_at
