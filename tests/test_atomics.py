"""pyvcl.atomics: every op on every backend this machine has, across processes, and the
process-shared robust mutex / condvar VPP's message queues use."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import platform
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyvcl import atomics
from pyvcl.atomics import (
    AtomicRegion,
    ProcessSharedCond,
    ProcessSharedMutex,
    init_shared_cond,
    init_shared_mutex,
)
from pyvcl.errors import LocalError, RemoteError, SharedMemoryError, Timeout, VclError

from .subproc import run_bounded

M32, M64 = (1 << 32) - 1, (1 << 64) - 1

REPO = Path(atomics.__file__).resolve().parents[2]

_built: dict[str, atomics._Ops | str] = {}


def _build(kind: str) -> atomics._Ops | str:
    if kind not in _built:
        try:
            _built[kind] = atomics._libatomic_ops() if kind == "libatomic" else atomics._stub_ops()
        except OSError as e:
            _built[kind] = str(e)
    return _built[kind]


@pytest.fixture(params=["libatomic", "stub"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make regions created in the test (and in its forked children) use one backend."""
    ops = _build(request.param)
    if isinstance(ops, str):
        pytest.skip(f"{request.param} backend unavailable here: {ops}")
    monkeypatch.setattr(atomics, "_OPS", ops)
    return ops.name


def shared_map(size: int = 1 << 16) -> mmap.mmap:
    fd = os.memfd_create("pyvcl-test-atomics")
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size)  # MAP_SHARED: forked children see the same pages
    finally:
        os.close(fd)


@pytest.fixture
def shm(backend: str) -> Iterator[tuple[mmap.mmap, AtomicRegion]]:
    mm = shared_map()
    region = AtomicRegion(mm)
    yield mm, region
    region.close()
    mm.close()


@contextlib.contextmanager
def forked(body: Callable[[int], None], n: int = 1, timeout: float = 20.0) -> Iterator[None]:
    """Fork `n` children running body(i) while the with-block runs in the parent; afterwards
    wait for them (killing any left after `timeout`) and fail if one raised or crashed."""
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                body(i)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
    finished = False
    try:
        yield
        finished = True
    finally:
        deadline = time.monotonic() + (timeout if finished else 1.0)
        codes = []
        for pid in pids:
            while not (done := os.waitpid(pid, os.WNOHANG))[0] and time.monotonic() < deadline:
                time.sleep(0.002)
            if not done[0]:
                os.kill(pid, signal.SIGKILL)
                done = os.waitpid(pid, 0)
            codes.append(os.waitstatus_to_exitcode(done[1]))
    assert codes == [0] * n, f"children exited with {codes}"


def run_children(n: int, body: Callable[[int], None]) -> None:
    with forked(body, n):
        pass


def start_together(r: AtomicRegion, off: int, n: int) -> None:
    """Barrier so that children really overlap rather than run one after another."""
    r.fetch_add32(off, 1)
    while r.load32(off) < n:
        pass


# --------------------------------------------------------------------------------------------
# Single-process semantics


def test_default_backend_is_named() -> None:
    assert atomics.backend_name() in ("libatomic", "stub-x86_64", "stub-aarch64")


EDGES64 = [0, 1, 2, 0x7FFFFFFF, 0x80000000, M32, 1 << 32, 1 << 63, M64 - 1, M64]


def test_ops_match_model(shm: tuple[mmap.mmap, AtomicRegion]) -> None:
    mm, r = shm
    rnd = random.Random(7)
    vals = EDGES64 + [rnd.getrandbits(64) for _ in range(30)]
    guard = 0x5A5A5A5A5A5A5A5A
    for _ in range(400):
        old, v, new = rnd.choice(vals), rnd.choice(vals), rnd.choice(vals)
        if rnd.random() < 0.3:
            v = old  # make CAS succeed often
        o32, v32, n32 = old & M32, v & M32, new & M32
        cases32 = [
            ("load32", (), o32, o32),
            ("xchg32", (v32,), o32, v32),
            ("fetch_add32", (v32,), o32, (o32 + v32) & M32),
            ("fetch_sub32", (v32,), o32, (o32 - v32) & M32),
            ("fetch_or32", (v32,), o32, o32 | v32),
            ("fetch_and32", (v32,), o32, o32 & v32),
            ("cas32", (v32, n32), o32, n32 if v32 == o32 else o32),
        ]
        for name, args, ret, after in cases32:
            struct.pack_into("<QII", mm, 8, guard, o32, guard & M32)
            assert getattr(r, name)(16, *args) == ret, (name, old, args)
            assert struct.unpack_from("<QII", mm, 8) == (guard, after, guard & M32), name
        cases64 = [
            ("load64", (), old, old),
            ("fetch_add64", (v,), old, (old + v) & M64),
            ("fetch_sub64", (v,), old, (old - v) & M64),
            ("cas64", (v, new), old, new if v == old else old),
        ]
        for name, args, ret, after in cases64:
            struct.pack_into("<QQQ", mm, 8, guard, old, guard)
            assert getattr(r, name)(16, *args) == ret, (name, old, args)
            assert struct.unpack_from("<QQQ", mm, 8) == (guard, after, guard), name
        struct.pack_into("<QQQ", mm, 8, guard, old, guard)
        r.store32(16, v32)
        assert struct.unpack_from("<QIIQ", mm, 8) == (guard, v32, old >> 32, guard)
        r.store64(16, v)
        assert struct.unpack_from("<QQQ", mm, 8) == (guard, v, guard)


def test_wrap_around_and_negative_deltas(shm: tuple[mmap.mmap, AtomicRegion]) -> None:
    _, r = shm
    assert r.fetch_add32(0, -1) == 0
    assert r.load32(0) == M32
    assert r.fetch_add32(0, 2) == M32
    assert r.load32(0) == 1
    assert r.fetch_sub32(0, 2) == 1
    assert r.load32(0) == M32
    assert r.fetch_sub32(0, -1) == M32
    assert r.load32(0) == 0
    assert r.fetch_add64(8, -1) == 0
    assert r.load64(8) == M64
    assert r.fetch_add64(8, 1) == M64
    assert r.load64(8) == 0
    assert r.fetch_sub64(8, 1) == 0
    assert r.load64(8) == M64
    r.store32(0, -1)
    assert r.load32(0) == M32  # values are unsigned, taken mod 2**32


def test_cas_failure_leaves_memory(shm: tuple[mmap.mmap, AtomicRegion]) -> None:
    _, r = shm
    r.store64(8, 42)
    assert r.cas64(8, 41, 7) == 42
    assert r.load64(8) == 42
    assert r.cas64(8, 42, 7) == 42
    assert r.load64(8) == 7
    r.store32(4, 9)
    assert r.cas32(4, 8, 1) == 9
    assert r.cas32(4, 9, 1) == 9
    assert r.load32(4) == 1
    assert r.load32(0) == 0  # the neighbouring word was not touched


@pytest.mark.parametrize("name", ["load32", "load64", "store32", "cas64", "fetch_or32"])
def test_bounds_and_alignment(shm: tuple[mmap.mmap, AtomicRegion], name: str) -> None:
    _, r = shm
    width = 8 if name.endswith("64") else 4
    extra = {"load": (), "store": (0,), "cas64": (0, 0), "fetch": (0,)}
    args = next(v for k, v in extra.items() if name.startswith(k))
    op = getattr(r, name)
    op(r.size - width, *args)  # the last whole word is fine
    for off in (-width, -1, r.size - width + 1, r.size, r.size + 4096, width // 2, 2):
        with pytest.raises(SharedMemoryError) as info:
            op(off, *args)
        assert info.value.errno == errno.EFAULT


def test_alignment_is_of_the_address_not_the_offset(backend: str) -> None:
    buf = bytearray(64)
    view = memoryview(buf)[1:]
    r = AtomicRegion(view)
    first = -r.address % 8  # bytearray storage is 8-aligned, so this is 7
    assert first != 0
    r.store64(first, 3)
    assert r.load64(first) == 3
    for off in (0, 1, first - 4):
        with pytest.raises(SharedMemoryError):
            r.load64(off)
    r.close()
    view.release()


def test_bytearray_and_close(backend: str) -> None:
    buf = bytearray(16)
    r = AtomicRegion(buf)
    assert r.size == 16
    r.store64(8, 5)
    assert buf[8] == 5
    with pytest.raises(BufferError):
        buf.extend(b"x")  # the export pins the buffer while the region is open
    r.close()
    r.close()  # idempotent
    buf.extend(b"x")
    calls: list[Callable[[], int]] = [
        lambda: r.load32(0),
        lambda: r.cas64(8, 0, 1),
        lambda: r.fetch_add64(8, 1),
    ]
    for call in calls:
        with pytest.raises(LocalError) as info:
            call()
        assert info.value.errno == errno.EBADF


def test_close_lets_the_mmap_close(backend: str) -> None:
    mm = shared_map(4096)
    r = AtomicRegion(mm)
    with pytest.raises(BufferError):
        mm.close()
    r.close()
    mm.close()


def test_bound_xchg32_exchanges_its_word(shm: tuple[mmap.mmap, AtomicRegion]) -> None:
    mm, r = shm
    set_one, set_all = r.bound_xchg32(64, 1), r.bound_xchg32(64, -1)
    assert set_one() == 0 and set_one() == 1
    assert set_all() == 1 and r.load32(64) == M32
    assert r.xchg32(64, 5) == M32 and set_one() == 5
    assert struct.unpack_from("<4I", mm, 60) == (0, 1, 0, 0)  # its word only
    assert r.closed is False
    for off in (-4, 1 << 16, 62):  # checked when bound, as every xchg32 call is
        with pytest.raises(SharedMemoryError):
            r.bound_xchg32(off, 1)
    r.close()
    assert r.closed is True
    with pytest.raises(LocalError):
        r.bound_xchg32(64, 1)


def test_bound_stubs_of_a_forked_child_leave_the_parents_alone() -> None:
    """The stub arena is shared memory: a child binding a stub where its parent binds its
    next one would run the parent's exchanges on the child's address."""
    if atomics.backend_name() != "stub-x86_64":
        pytest.skip("bound stubs are made with the x86-64 stub backend only")
    mm = shared_map(4096)
    r = AtomicRegion(mm)
    r.bound_xchg32(8, 1)()  # an arena exists before the fork
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.read(go_r, 1)  # the parent bound its stub first
            child = r.bound_xchg32(512, 7)
            code = 0 if child() == 0 and r.load32(512) == 7 else 2
        finally:
            os._exit(code)
    mine = r.bound_xchg32(256, 3)
    os.write(go_w, b"!")
    _, status = os.waitpid(pid, 0)
    os.close(go_r)
    os.close(go_w)
    assert os.waitstatus_to_exitcode(status) == 0
    assert mine() == 0 and r.load32(256) == 3 and r.load32(512) == 7
    r.close()
    mm.close()


def test_readonly_buffer_is_refused(backend: str) -> None:
    with pytest.raises(TypeError):
        AtomicRegion(b"\0" * 16)


def test_threads_cas_increment(shm: tuple[mmap.mmap, AtomicRegion]) -> None:
    # libatomic's CAS passes the expected value through a per-thread scratch word.
    _, r = shm
    n = 3000

    def work() -> None:
        for _ in range(n):
            old = r.load64(8)
            while (seen := r.cas64(8, old, old + 1)) != old:
                old = seen
            old32 = r.load32(4)
            while (seen := r.cas32(4, old32, old32 + 1)) != old32:
                old32 = seen

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (r.load64(8), r.load32(4)) == (3 * n, 3 * n)


# --------------------------------------------------------------------------------------------
# Across processes


def test_processes_count_exactly(shm: tuple[mmap.mmap, AtomicRegion]) -> None:
    _, r = shm
    n, procs = 4000, 2

    def child(_: int) -> None:
        start_together(r, 0, procs)
        for _ in range(n):
            old = r.load64(8)
            while (seen := r.cas64(8, old, old + 1)) != old:
                old = seen
            old32 = r.load32(4)
            while (seen := r.cas32(4, old32, (old32 + 3) & M32)) != old32:
                old32 = seen
            r.fetch_add32(16, 1)
            r.fetch_sub64(24, 1)
            r.fetch_add64(32, 1 << 33)
            r.fetch_or32(40, 1 << (_ % 32))

    run_children(procs, child)
    assert r.load64(8) == procs * n
    assert r.load32(4) == procs * n * 3
    assert r.load32(16) == procs * n
    assert r.load64(24) == (-procs * n) & M64
    assert r.load64(32) == procs * n << 33
    assert r.load32(40) == M32


def test_inc_pair_counts_both_words_across_processes(shm: tuple[mmap.mmap, AtomicRegion]) -> None:
    _, r = shm
    ops = r.raw_ops()
    pair = ops.fetch_inc_pair32
    assert pair is not None
    first, second = r.word_address(16, 4), r.word_address(20, 4)
    r.store32(20, M32)
    assert pair(first, second) == M32  # the second word's old value, wrapping
    assert (r.load32(16), r.load32(20)) == (1, 0)
    n, procs = 3000, 2

    def child(_: int) -> None:
        start_together(r, 0, procs)
        for _ in range(n):
            pair(first, second)

    run_children(procs, child)
    assert (r.load32(16), r.load32(20)) == (1 + procs * n, procs * n)


def test_dec_pair_returns_both_old_values(shm: tuple[mmap.mmap, AtomicRegion]) -> None:
    _, r = shm
    pair = r.raw_ops().fetch_dec_pair32
    assert pair is not None
    first, second = r.word_address(16, 4), r.word_address(20, 4)
    r.store32(16, 7)
    r.store32(20, 0)
    assert pair(first, second) == 7 | 0 << 32
    assert (r.load32(16), r.load32(20)) == (6, M32)  # the second wrapped
    assert pair(first, second) == 6 | M32 << 32
    assert r.load64(16) == 5 | (M32 - 1) << 32


def test_word_address_checks_bounds_and_alignment(shm: tuple[mmap.mmap, AtomicRegion]) -> None:
    _, r = shm
    assert r.word_address(r.size - 8, 8) == r.address + r.size - 8
    for off, width in ((r.size - 4, 8), (r.size, 4), (-4, 4), (2, 4), (4, 8)):
        with pytest.raises(SharedMemoryError):
            r.word_address(off, width)
    with pytest.raises(LocalError):
        r.word_address(0, 2)
    r.close()
    with pytest.raises(LocalError):  # closed: no address to hand out
        r.word_address(0, 4)


MASK48, TAG_ONE, TAG_MASK = (1 << 48) - 1, 1 << 48, 0xFFFF << 48


def stack_pop(r: AtomicRegion, head: int) -> int:
    """fss_chunk_free_list_pop from protocol.md 3.6; returns a node offset or 0."""
    old = r.load64(head)
    while True:
        node = old & MASK48
        if node == 0:
            return 0
        new = r.load64(node) | ((old + TAG_ONE) & TAG_MASK)
        seen = r.cas64(head, old, new)
        if seen == old:
            return node
        old = seen


def stack_push(r: AtomicRegion, head: int, node: int) -> None:
    old = r.load64(head)
    while True:
        r.store64(node, old & MASK48)
        seen = r.cas64(head, old, node | ((old + TAG_ONE) & TAG_MASK))
        if seen == old:
            return
        old = seen


def test_tagged_stack_under_two_processes(shm: tuple[mmap.mmap, AtomicRegion]) -> None:
    _, r = shm
    head, nodes, rounds, procs = 64, [4096 + 64 * i for i in range(16)], 1500, 2
    for node in nodes:
        stack_push(r, head, node)
    assert r.load64(head) >> 48 == len(nodes)

    def child(i: int) -> None:
        start_together(r, 0, procs)
        done = 0
        for k in range(rounds):
            held = [stack_pop(r, head) for _ in range(1 + k % 3)]
            held = [n for n in held if n]
            for n in reversed(held):
                stack_push(r, head, n)
            done += 2 * len(held)
        r.store64(8 + 8 * i, done)

    run_children(procs, child)
    seen: list[int] = []
    node = r.load64(head) & MASK48
    while node and len(seen) <= len(nodes):
        seen.append(node)
        node = r.load64(node)
    assert sorted(seen) == nodes  # nothing lost, nothing duplicated, no cycle
    ops = len(nodes) + sum(r.load64(8 + 8 * i) for i in range(procs))
    assert r.load64(head) >> 48 == ops & 0xFFFF  # one tag step per push and per pop


# --------------------------------------------------------------------------------------------
# pthread mutex / condvar

MUTEX, COND, FLAG, COUNTER = 0, 64, 128, 136


class Hung(Exception):
    pass


def _hung(signum: int, frame: object) -> None:
    raise Hung


@pytest.fixture
def sync(
    shm: tuple[mmap.mmap, AtomicRegion],
) -> Iterator[tuple[mmap.mmap, AtomicRegion, ProcessSharedMutex, ProcessSharedCond]]:
    mm, r = shm
    init_shared_mutex(r, MUTEX)
    init_shared_cond(r, COND)
    # Untimed waits wake every _SLICE to let signal handlers run; this one ends a hang.
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.setitimer(signal.ITIMER_REAL, 15)
    yield mm, r, ProcessSharedMutex(r, MUTEX), ProcessSharedCond(r, COND)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


SyncFixture = tuple[mmap.mmap, AtomicRegion, ProcessSharedMutex, ProcessSharedCond]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="glibc x86-64 layout")
def test_init_matches_vpp_layout(sync: SyncFixture) -> None:
    _, r, _, _ = sync
    assert r.load32(MUTEX + 16) == 144  # __kind: robust 16 | process-shared 128
    assert r.load32(COND + 36) & 1 == 1  # __wrefs: process-shared bit


def test_mutex_excludes_processes(sync: SyncFixture) -> None:
    mm, r, m, _ = sync
    n, procs = 1500, 2

    def child(_: int) -> None:
        start_together(r, FLAG, procs)
        for _ in range(n):
            assert m.lock() is False
            (v,) = struct.unpack_from("<Q", mm, COUNTER)  # deliberately not atomic
            for _ in range(30):  # widen the window a missing exclusion would show through
                pass
            struct.pack_into("<Q", mm, COUNTER, v + 1)
            m.unlock()

    run_children(procs, child)
    assert struct.unpack_from("<Q", mm, COUNTER)[0] == procs * n


def test_robust_recovery_from_dead_owner(sync: SyncFixture) -> None:
    _, _, m, _ = sync

    def child(_: int) -> None:
        m.lock()
        os._exit(0)  # dies holding it

    run_children(1, child)
    assert m.lock(timeout=5) is True
    m.unlock()
    assert m.lock(timeout=5) is False
    m.unlock()
    run_children(1, child)
    assert m.trylock() is True  # trylock recovers too
    m.unlock()


def test_not_recoverable_is_remote_error(sync: SyncFixture) -> None:
    _, r, m, _ = sync

    def child(_: int) -> None:
        m.lock()
        os._exit(0)

    run_children(1, child)
    libc = ctypes.CDLL(None)
    addr = ctypes.c_void_p(r.address + MUTEX)
    assert libc.pthread_mutex_lock(addr) == errno.EOWNERDEAD
    assert libc.pthread_mutex_unlock(addr) == 0  # without pthread_mutex_consistent
    for call in (m.lock, m.trylock, m.lock, m.trylock):  # and it stays that way
        with pytest.raises(RemoteError) as info:
            call()
        assert info.value.errno == errno.ENOTRECOVERABLE


def test_trylock_timeout_and_blocking_lock(sync: SyncFixture) -> None:
    _, r, m, _ = sync

    def holder(_: int) -> None:
        m.lock()
        r.store32(FLAG, 1)
        while r.load32(FLAG) != 2:
            time.sleep(0.001)
        time.sleep(0.05)
        m.unlock()

    with forked(holder):
        while r.load32(FLAG) != 1:
            time.sleep(0.001)
        assert m.trylock() is False
        t0 = time.monotonic()
        with pytest.raises(Timeout) as info:
            m.lock(timeout=0.05)
        assert time.monotonic() - t0 >= 0.04
        assert info.value.errno == errno.ETIMEDOUT
        with pytest.raises(LocalError):
            m.unlock()  # not ours
        r.store32(FLAG, 2)
        assert m.lock() is False  # blocks until the holder lets go
        m.unlock()
        assert m.trylock() is True
        m.unlock()


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_cond_broadcast_from_child_wakes_parent(sync: SyncFixture, timeout: float | None) -> None:
    _, r, m, c = sync
    m.lock()

    def child(_: int) -> None:
        time.sleep(0.02)
        m.lock()  # only succeeds once the parent waits
        r.store32(FLAG, 1)
        c.broadcast()
        m.unlock()

    with forked(child):
        t0 = time.monotonic()
        while r.load32(FLAG) == 0:
            assert c.wait(m, timeout) is True
        assert time.monotonic() - t0 < 4
        m.unlock()


def test_cond_wait_timeout(sync: SyncFixture) -> None:
    _, _, m, c = sync
    m.lock()
    t0 = time.monotonic()
    assert c.wait(m, 0.05) is False
    assert time.monotonic() - t0 >= 0.04
    m.unlock()  # the mutex was reacquired: unlocking it is legal
    c.broadcast()  # nobody waiting: harmless


def test_untimed_wait_lets_signal_handlers_run(
    sync: SyncFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, m, c = sync
    monkeypatch.setattr(atomics.pthread, "_SLICE", 0.05)
    m.lock()
    signal.setitimer(signal.ITIMER_REAL, 0.1)  # nobody broadcasts: only the alarm ends this
    t0 = time.monotonic()
    with pytest.raises(Hung):
        c.wait(m)
    assert 0.09 <= time.monotonic() - t0 < 1
    m.unlock()  # the exception left with the mutex held, as after any wait


def test_cond_wait_recovers_from_dead_owner(sync: SyncFixture) -> None:
    _, r, m, c = sync
    m.lock()

    def child(_: int) -> None:
        m.lock()
        r.store32(FLAG, 1)
        c.broadcast()
        os._exit(0)  # dies holding the mutex the parent must reacquire

    with forked(child):
        while r.load32(FLAG) == 0:
            assert c.wait(m, 5) is True
    m.unlock()  # consistent() was called, so the mutex is usable again
    assert m.lock(timeout=1) is False
    m.unlock()


def test_sync_objects_check_bounds(shm: tuple[mmap.mmap, AtomicRegion]) -> None:
    _, r = shm
    for make in (ProcessSharedMutex, ProcessSharedCond, init_shared_mutex, init_shared_cond):
        for off in (-8, 4, r.size - 32, r.size):
            with pytest.raises(SharedMemoryError):
                make(r, off)
    init_shared_cond(r, r.size - 48)  # the last whole object is fine
    ProcessSharedCond(r, r.size - 48).broadcast()
    m = ProcessSharedMutex(r, 0)
    r.close()
    with pytest.raises(LocalError):
        m.lock()


# --------------------------------------------------------------------------------------------
# Blocking calls end by their timeout (run in a fresh interpreter: a regression hangs there, not
# here)


def test_timed_calls_keep_their_deadline_alive() -> None:
    # glibc reads the abstime during the call, with the GIL released: it must not be a freed
    # temporary, whose memory the next object of its size (from any thread) takes over.
    seen: list[int] = []

    def call(ts: int) -> int:
        junk = [atomics._Timespec(1 << 40, 0) for _ in range(64)]
        t = atomics._Timespec.from_address(ts)
        seen.append(t.tv_sec * 1_000_000_000 + t.tv_nsec)
        del junk
        return errno.ETIMEDOUT

    clock = time.CLOCK_MONOTONIC
    for timeout in (0.0, 0.02):
        seen.clear()
        t0 = time.clock_gettime_ns(clock)
        assert atomics._sliced(call, timeout, clock) == errno.ETIMEDOUT
        t1 = time.clock_gettime_ns(clock)
        assert seen and all(t0 <= d <= t1 + 5_000_000 for d in seen)  # not decades away


def test_deadlines_are_monotonic() -> None:
    lib, version = platform.libc_ver()
    if lib != "glibc" or tuple(int(x) for x in version.split(".")[:2]) < (2, 30):
        pytest.skip("pthread_mutex_clocklock / pthread_cond_clockwait need glibc >= 2.30")
    assert atomics._Pthread.get().clock == time.CLOCK_MONOTONIC  # immune to wall-clock steps


def test_cond_wait_times_out_while_other_threads_allocate() -> None:
    out = run_bounded(
        """
        import mmap, sys, threading, time
        from pyvcl import atomics as A
        r = A.AtomicRegion(mmap.mmap(-1, 4096))
        A.init_shared_mutex(r, 0)
        A.init_shared_cond(r, 64)
        m, c = A.ProcessSharedMutex(r, 0), A.ProcessSharedCond(r, 64)

        def churn():  # objects the size of a freed timespec, holding a deadline decades away
            while True:
                junk = [A._Timespec(1 << 40, 0) for _ in range(8)]
                del junk

        threading.Thread(target=churn, daemon=True).start()
        sys.setswitchinterval(0.0005)
        m.lock()
        worst = 0.0
        for _ in range(800):
            t0 = time.monotonic()
            assert c.wait(m, 0.002) is False
            worst = max(worst, time.monotonic() - t0)
        m.unlock()
        print(worst)
        """
    )
    assert float(out) < 5


def test_dead_waiter_does_not_wedge_wait_or_broadcast() -> None:
    # glibc's condvar is not robust: a waiter killed while blocked keeps a group reference, the
    # next broadcast that must switch groups waits for it forever holding the internal lock, and
    # from then on a waiter whose deadline passes blocks on that lock inside timedwait.
    out = run_bounded(
        """
        import ctypes, mmap, os, signal, time
        from pyvcl import atomics as A
        libc = ctypes.CDLL(None)
        r = A.AtomicRegion(mmap.mmap(-1, 4096))
        A.init_shared_mutex(r, 0)
        A.init_shared_cond(r, 64)
        m, c = A.ProcessSharedMutex(r, 0), A.ProcessSharedCond(r, 64)
        maddr, caddr = ctypes.c_void_p(r.address), ctypes.c_void_p(r.address + 64)
        far = A._Timespec(int(time.time()) + 3600, 0)

        def child(body):  # glibc's own calls, as a C peer (VCL, VPP) makes them
            pid = os.fork()
            if pid == 0:
                libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
                body()
                os._exit(0)
            return pid

        def waiter():
            libc.pthread_mutex_lock(maddr)
            libc.pthread_cond_timedwait(caddr, maddr, ctypes.byref(far))

        def settle(what):
            for _ in range(2000):
                if what():
                    return
                time.sleep(0.001)
            raise AssertionError("child did not get there")

        refs = lambda: r.load32(64 + 16) + r.load32(64 + 20)
        dead = child(waiter)
        settle(lambda: refs() == 2)
        os.kill(dead, signal.SIGKILL)
        os.waitpid(dead, 0)
        assert m.lock(timeout=5) is False  # the mutex was released: only the reference stays
        m.unlock()
        assert c.broadcast() is True  # moves the dead waiter's group to G1, signalled
        live = child(waiter)  # now in G2: a group switch would wait for the dead reference
        settle(lambda: refs() == 4)
        t0 = time.monotonic()
        assert c.broadcast() is False  # glibc would block forever
        print("broadcast", round(time.monotonic() - t0, 2))
        stuck = child(lambda: libc.pthread_cond_broadcast(caddr))  # and does, holding the lock
        settle(lambda: r.load32(64 + 32) & 3)
        m.lock(timeout=5)
        t0 = time.monotonic()
        assert c.wait(m, 0.2) is False  # glibc would time out, then block on that lock
        print("wait", round(time.monotonic() - t0, 2))
        m.unlock()
        assert c.broadcast() is False
        for pid in (live, stuck):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        """
    )
    times = dict(line.split() for line in out.splitlines())
    assert float(times["broadcast"]) < 3 and float(times["wait"]) < 1, out


# --------------------------------------------------------------------------------------------
# Backend selection in a fresh interpreter

HIDE_LIBATOMIC = """
import ctypes, ctypes.util
_real_init, _real_find = ctypes.CDLL.__init__, ctypes.util.find_library
def _init(self, name, *a, **k):
    if name and "atomic" in str(name):
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")
    _real_init(self, name, *a, **k)
ctypes.CDLL.__init__ = _init  # PyDLL inherits it
ctypes.util.find_library = lambda n: None if "atomic" in n else _real_find(n)
"""

USE_IT = """
import errno, mmap
from pyvcl import atomics
from pyvcl.errors import VclError
print(atomics.backend_name())
try:
    r = atomics.AtomicRegion(mmap.mmap(-1, 4096))
except VclError as e:
    print("ERROR", e.errno == errno.ENOSYS, e.strerror)
else:
    assert r.cas64(8, 0, 5) == 0 and r.cas64(8, 0, 6) == 5 and r.fetch_add32(0, -1) == 0
    print("OK", open("/proc/self/maps").read().count("pyvcl-atomics"))
"""


def run_fresh(prelude: str, env_value: str | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYVCL_ATOMICS"}
    env["PYTHONPATH"] = str(REPO)
    if env_value is not None:
        env["PYVCL_ATOMICS"] = env_value
    code = textwrap.dedent(prelude) + USE_IT
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split(maxsplit=1)


STUB = f"stub-{platform.machine()}"
needs_stub = pytest.mark.skipif(
    isinstance(_build("stub"), str), reason="no machine-code stub for this machine"
)


def test_forced_libatomic() -> None:
    if isinstance(_build("libatomic"), str):
        pytest.skip("libatomic not installed")
    assert run_fresh("", "libatomic")[0] == "libatomic"


def test_default_choice() -> None:
    """x86-64 prefers the stub (cheaper calls); elsewhere libatomic comes first."""
    order = ["stub", "libatomic"] if platform.machine() == "x86_64" else ["libatomic", "stub"]
    for kind in order:
        ops = _build(kind)
        if not isinstance(ops, str):
            assert run_fresh("", None)[0] == ops.name
            return
    pytest.skip("no backend works here")


@needs_stub
def test_forced_stub() -> None:
    name, rest = run_fresh("", "stub")
    assert (name, rest.split()) == (STUB, ["OK", "0"])


@needs_stub
def test_clean_environment_falls_back_to_stub() -> None:
    name, rest = run_fresh(HIDE_LIBATOMIC)
    assert (name, rest.split()[0]) == (STUB, "OK")


@needs_stub
def test_write_xor_execute_policy_uses_memfd() -> None:
    # prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN) forbids mprotect(PROT_EXEC) on memory we wrote.
    mdwe = """
    import ctypes, sys
    if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0:
        print("no-mdwe"); sys.exit()
    """
    out = run_fresh(HIDE_LIBATOMIC + textwrap.dedent(mdwe))
    if out == ["no-mdwe"]:
        pytest.skip("kernel has no PR_SET_MDWE")
    assert out[0] == STUB
    assert out[1].split()[0] == "OK" and int(out[1].split()[1]) >= 1  # mapped from the memfd


def test_no_backend_fails_at_first_use_not_import() -> None:
    unsupported = HIDE_LIBATOMIC + "import platform; platform.machine = lambda: 'riscv64'\n"
    name, rest = run_fresh(unsupported)
    assert name == "unavailable"
    assert rest.startswith("ERROR True")
    assert "apt-get install libatomic1" in rest and "riscv64" in rest


@needs_stub
def test_no_executable_memory_and_no_libatomic() -> None:
    refuse_exec = """
    import ctypes, os, sys
    if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0:
        print("no-mdwe"); sys.exit()
    def _no_memfd(*a, **k):
        raise PermissionError(1, "memfd refused")
    os.memfd_create = _no_memfd
    """
    out = run_fresh(HIDE_LIBATOMIC + textwrap.dedent(refuse_exec))
    if out == ["no-mdwe"]:
        pytest.skip("kernel has no PR_SET_MDWE")
    assert out[0] == "unavailable"
    assert out[1].startswith("ERROR True") and "libatomic1" in out[1]


def test_forced_libatomic_when_absent_and_bad_value() -> None:
    name, rest = run_fresh(HIDE_LIBATOMIC, "libatomic")
    assert name == "unavailable" and "libatomic1" in rest
    name, rest = run_fresh("", "bogus")
    assert name == "unavailable" and "PYVCL_ATOMICS" in rest
    with pytest.raises(VclError):
        atomics._unavailable("x").cas64(0, 0, 0)


@pytest.mark.parametrize("plain", [True, False], ids=["plain-views", "backend-words"])
def test_words_views_load_store_and_bounds(
    backend: str, plain: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """words32/words64 (the fifo hot path) agree with load/store, wrap values, check bounds,
    and fail once the region is closed -- with native views (x86-64) and through the backend."""
    if plain and not atomics.PLAIN_ACQ_REL:
        pytest.skip("plain loads/stores are acquire/release only on x86-64")
    monkeypatch.setattr(atomics, "PLAIN_ACQ_REL", plain)
    mm = mmap.mmap(-1, 4096)
    r = AtomicRegion(mm)
    try:
        w32, w64 = r.words32(), r.words64()
        assert isinstance(w32, memoryview) == plain
        w32[5] = 0xDEADBEEF
        assert r.load32(20) == 0xDEADBEEF == w32[5]
        r.store64(4088, -1)
        assert w64[511] == M64
        r.store32(0, -2)
        assert w32[0] == M32 - 1
        with pytest.raises(IndexError):
            w32[1024]
        with pytest.raises(IndexError):
            w64[512] = 1
        with pytest.raises(SharedMemoryError):
            r.load32(4096)
        with pytest.raises(SharedMemoryError):
            r.store64(4, 1)  # misaligned
    finally:
        r.close()
        mm.close()
    with pytest.raises(ValueError):
        w32[0]
    with pytest.raises(LocalError):
        r.load64(0)
