"""Process-shared, robust glibc pthread mutex and condvar in shared memory, through ctypes: the
lock and wake-up of a message queue in condvar mode (``svm_msg_q_shared_queue_t.mutex`` /
``.condvar``), as VPP's svm_msg_q_init_mutex makes them.  Part of `pyvcl.atomics`.

The words of these objects live in memory that other processes can write, and glibc trusts
them: a mutex ``__kind`` with the priority-inheritance bit and a made-up owner aborts the
process (an assertion in pthread_mutex_timedlock), condvar words can make
pthread_cond_broadcast wait forever, and the robust-list pointers inside a held mutex are
written through on unlock.  So every call into glibc is preceded by a check of the words it is
about to act on (see docs/atomics.md, "Hostile memory"), and every wait is bounded."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyvcl.errors import LocalError, PeerStalled, RemoteError, SharedMemoryError, Timeout, VclError
from pyvcl.wire.abi import PTHREAD_COND_SIZE, PTHREAD_MUTEX_SIZES

from .backends import _MACHINE, _V

if TYPE_CHECKING:
    from . import AtomicRegion

# glibc sizes; larger than the real size on unknown machines so bounds checks stay safe.
_MUTEX_SIZE = PTHREAD_MUTEX_SIZES.get(_MACHINE, 64)
_COND_SIZE = PTHREAD_COND_SIZE

_ETIMEDOUT = errno.ETIMEDOUT
_SLICE = 0.1  # blocking calls return to Python this often: Ctrl-C, and checks of the lock word
_CLOCK_REALTIME, _CLOCK_MONOTONIC = 0, 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


# A deadline already past turns timedlock into a trylock.  Not pthread_mutex_trylock itself:
# glibc's (2.36) leaves a not-recoverable robust mutex locked by the caller after returning
# ENOTRECOVERABLE, so the caller's next lock() would deadlock on itself.
_PAST_TS = _Timespec(0, 0)
_PAST = ctypes.addressof(_PAST_TS)


def _sliced(call: Callable[[int], int], timeout: float | None, clock: int) -> int:
    """Run a pthread timed call in slices of at most _SLICE: ``call(abstime)`` gets the address
    of an absolute deadline on `clock`.  Return its result, ETIMEDOUT only once `timeout` has run
    out on the monotonic clock, so wall-clock steps can neither stretch nor cut the wait.

    The timespec lives in a local for the whole loop: glibc reads it again each time its futex
    wait is restarted, long after the ctypes call began (with the GIL released, so any thread
    may allocate meanwhile).  A temporary (``addressof(_Timespec(...))``) is freed before the
    call runs and its memory handed to the next object of that size: a deadline decades away."""
    ts = _Timespec()
    ts_addr = ctypes.addressof(ts)
    slice_ns = int(_SLICE * 1e9)
    end = None if timeout is None else time.monotonic_ns() + max(0, int(timeout * 1e9))
    while True:
        left = slice_ns if end is None else min(slice_ns, end - time.monotonic_ns())
        ts.tv_sec, ts.tv_nsec = divmod(time.clock_gettime_ns(clock) + max(0, left), 1_000_000_000)
        err = call(ts_addr)
        if err != errno.ETIMEDOUT or (end is not None and time.monotonic_ns() >= end):
            return err


class _Pthread:
    """libc's pthread entry points, bound once (glibc >= 2.34 has them in libc itself)."""

    _instance: _Pthread | None = None

    def __init__(self) -> None:
        libs: list[tuple[ctypes.CDLL, ctypes.PyDLL]] = [(ctypes.CDLL(None), ctypes.PyDLL(None))]
        with contextlib.suppress(OSError):  # glibc < 2.34 keeps some of them in libpthread
            pthread = "libpthread.so.0"
            libs.append((ctypes.CDLL(pthread), ctypes.PyDLL(pthread)))

        def fn(name: str, *argtypes: type, keep_gil: bool = False) -> Callable[..., int]:
            for pair in libs:
                f = getattr(pair[keep_gil], name, None)
                if f is not None:
                    f.argtypes = argtypes
                    f.restype = ctypes.c_int
                    return f  # type: ignore[no-any-return]
            raise VclError(f"libc has no {name}; pyvcl needs glibc's pthreads", errno.ENOSYS)

        v, i = _V, ctypes.c_int
        self.timedlock = fn("pthread_mutex_timedlock", v, v)
        # The same two keeping the GIL, for the uncontended path: with a deadline already past
        # timedlock never sleeps (a busy mutex returns ETIMEDOUT at once) and unlock at most
        # wakes a waiter, so releasing and retaking the GIL would cost more than the call.
        self.timedlock_now = fn("pthread_mutex_timedlock", v, v, keep_gil=True)
        self.unlock_now = fn("pthread_mutex_unlock", v, keep_gil=True)
        self.unlock, self.consistent = (
            fn("pthread_mutex_unlock", v),
            fn("pthread_mutex_consistent", v),
        )
        self.timedwait = fn("pthread_cond_timedwait", v, v, v)
        self.broadcast = fn("pthread_cond_broadcast", v)
        # Deadlines for blocking calls: CLOCK_MONOTONIC through the clock* variants (glibc >=
        # 2.30, which also override the condvar's own CLOCK_REALTIME), else CLOCK_REALTIME.
        self.clock = _CLOCK_REALTIME
        self.lock_until: Callable[[int, int], int] = self.timedlock
        self.wait_until: Callable[[int, int, int], int] = self.timedwait
        try:
            clocklock = fn("pthread_mutex_clocklock", v, i, v)
            clockwait = fn("pthread_cond_clockwait", v, v, i, v)
        except VclError:
            pass
        else:
            mono = _CLOCK_MONOTONIC
            self.clock = mono
            self.lock_until = lambda m, ts: clocklock(m, mono, ts)
            self.wait_until = lambda c, m, ts: clockwait(c, m, mono, ts)
        self.mutex_init, self.cond_init = (
            fn("pthread_mutex_init", v, v),
            fn("pthread_cond_init", v, v),
        )
        self.mattr_init = fn("pthread_mutexattr_init", v)
        self.mattr_pshared = fn("pthread_mutexattr_setpshared", v, i)
        self.mattr_robust = fn("pthread_mutexattr_setrobust", v, i)
        self.mattr_destroy = fn("pthread_mutexattr_destroy", v)
        self.cattr_init = fn("pthread_condattr_init", v)
        self.cattr_pshared = fn("pthread_condattr_setpshared", v, i)
        self.cattr_destroy = fn("pthread_condattr_destroy", v)

    @classmethod
    def get(cls) -> _Pthread:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance


def _error(err: int, what: str) -> VclError:
    cls = LocalError if err in (errno.EPERM, errno.EDEADLK) else RemoteError
    return cls(f"{what}: {os.strerror(err)}", err)


def _check(err: int, what: str) -> None:
    if err:
        raise _error(err, what)


# -- the calling thread --------------------------------------------------------------------------
_SYS_GET_ROBUST_LIST = {"x86_64": 274, "aarch64": 100}.get(_MACHINE)


def _robust_head() -> int:
    """Address of the calling thread's robust-list head (glibc's ``THREAD_SELF->robust_head``,
    which glibc registers with set_robust_list), or 0 where it cannot be had (qemu-user)."""
    if _SYS_GET_ROBUST_LIST is None:
        return 0
    head, size = ctypes.c_void_p(), ctypes.c_size_t()
    c_long = ctypes.c_long
    try:
        syscall = ctypes.CDLL(None).syscall
        syscall.restype = c_long
        rc = syscall(
            c_long(_SYS_GET_ROBUST_LIST), c_long(0), ctypes.byref(head), ctypes.byref(size)
        )
    except (AttributeError, OSError):
        return 0
    return int(head.value or 0) if rc == 0 else 0


class _ThreadState(threading.local):
    """Per thread, looked up once: its kernel TID (what glibc writes into a lock word) and its
    robust-list head, with the head's first word (``robust_head.list``, the list glibc links a
    mutex into when it locks it) as a one-item view (None where the head is unknown)."""

    def __init__(self) -> None:
        self.tid = threading.get_native_id()
        self.head = _robust_head()
        self.head_list: memoryview | None = None
        if self.head:
            raw = (ctypes.c_char * 8).from_address(self.head)
            self.head_list = memoryview(raw).cast("B").cast("Q")
        # All three in one attribute: a thread-local attribute read costs as much as the
        # unpack, and lock/unlock need them on every call.
        self.me = (self.tid, self.head, self.head_list)


_THREAD = _ThreadState()


def _after_fork() -> None:  # the child's one thread has a new TID
    global _THREAD
    _THREAD = _ThreadState()


os.register_at_fork(after_in_child=_after_fork)


def _procfs_is_ours() -> bool:
    """Whether /proc shows this process's pid namespace (so a TID missing there is missing)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def _tid_absent(tid: int) -> bool:
    """True if no thread ``tid`` exists in this process's pid namespace.  False when it exists
    or when that cannot be known (no procfs, or one of another namespace)."""
    try:
        os.stat(f"/proc/{tid}")
    except FileNotFoundError:
        return _procfs_is_ours()
    except OSError:
        return False
    return False


# -- the mutex -----------------------------------------------------------------------------------
# struct __pthread_mutex_s, the same on x86-64 and aarch64 (glibc's generic 64-bit layout) up to
# __list: __lock @0, __count @4, __owner @8, __nusers @12, __kind @16, __spins @20,
# __list.__prev @24, __list.__next @32 (glibc's robust list runs through the held mutexes).
_MUTEX_WORDS = struct.Struct("=IIiIi4xQQ")
_LOCK_KIND = struct.Struct("=I12xi")  # what lock() checks: __lock, __kind
_HELD_WORDS = struct.Struct("=I4xi4xi4xQQ")  # what unlock() checks: __lock, __owner, __kind, __list
_M_KIND, _M_OWNER, _M_PREV, _M_NEXT = 16, 8, 24, 32
# What svm_msg_q_init_mutex makes (pthread_mutexattr_setpshared + setrobust on a default, i.e.
# normal, mutex): glibc's PTHREAD_MUTEX_ROBUST_NORMAL_NP (16) | PTHREAD_MUTEX_PSHARED_BIT (128).
# Other bits select other lock code in glibc: 1-3 the type (recursive/errorcheck/adaptive), 32
# priority inheritance (the kernel's PI futexes, which abort the process on an owner TID that does
# not exist), 64 priority protection, 256/512 lock elision, 19-31 the priority ceiling.
VPP_MUTEX_KIND = 0x90
_FUTEX_WAITERS, _FUTEX_OWNER_DIED, _FUTEX_TID_MASK = 0x80000000, 0x40000000, 0x3FFFFFFF
_OWNER_BITS = _FUTEX_TID_MASK | _FUTEX_OWNER_DIED  # a word with OWNER_DIED is glibc's to take


class ProcessSharedMutex:
    """A glibc ``pthread_mutex_t`` living in shared memory at ``region`` offset ``off``, robust and
    process-shared as VPP makes it (``__kind`` `VPP_MUTEX_KIND`; any other kind is refused).

    Before every call into glibc the words it will act on are checked (one unpack of the
    object): the kind, the lock word (never naming the calling thread unless it holds the
    mutex), and before unlocking, the words glibc wrote when it locked (owner, robust-list
    links), which are put back if another process changed them.  ``lock`` gives up after
    ``hold_limit`` seconds without a timeout (`PeerStalled`), and sooner, with
    `SharedMemoryError`, when the lock word names a thread that does not exist in this pid
    namespace for ``dead_owner_grace`` seconds."""

    __slots__ = (
        "_addr", "_holders", "_mv", "_off", "_pt", "_region", "_timedlock", "_unlock",
        "dead_owner_grace", "hold_limit", "name",
    )  # fmt: skip

    #: Default `hold_limit`: a peer holds the mutex for microseconds; seconds mean frozen.
    HOLD_LIMIT = 5.0
    #: Default `dead_owner_grace`.
    DEAD_OWNER_GRACE = 0.5

    def __init__(self, region: AtomicRegion, off: int, name: str = "") -> None:
        self._region = region
        self._off = off
        self._addr = region._object_address(off, _MUTEX_SIZE)
        self._mv = memoryview((ctypes.c_char * _MUTEX_SIZE).from_address(self._addr)).cast("B")
        pt = self._pt = _Pthread.get()
        self._timedlock, self._unlock = pt.timedlock_now, pt.unlock_now
        # Threads of ours that lock or hold it through this object: TID -> the robust-list link
        # glibc writes into __list.__next when that thread locks (its list's first entry).
        self._holders: dict[int, int] = {}
        self.name = name or f"shared mutex at offset {off:#x}"
        self.hold_limit = self.HOLD_LIMIT
        self.dead_owner_grace = self.DEAD_OWNER_GRACE

    def _bad(self, what: str) -> SharedMemoryError:
        return SharedMemoryError(f"{self.name}: {what}")

    def _words(self) -> tuple[int, int, int, int, int, int, int]:
        """(lock, count, owner, nusers, kind, prev, next), the kind checked."""
        if self._region._anchor is None:
            self._region._fault(0, _MUTEX_SIZE)
        w = _MUTEX_WORDS.unpack_from(self._mv)
        if w[4] != VPP_MUTEX_KIND:
            raise self._bad_kind(w[4])
        return w

    def _bad_kind(self, kind: int) -> SharedMemoryError:
        return self._bad(
            f"__kind {kind & 0xFFFFFFFF:#x} is not the robust, process-shared mutex VPP makes "
            f"({VPP_MUTEX_KIND:#x}): refusing to hand it to glibc"
        )

    def _acquired(self, err: int, what: str) -> bool:
        """Turn a lock result into "recovered from a dead owner?"; raise on anything else."""
        if err == 0:
            return False
        if err == errno.EOWNERDEAD:
            # The previous owner died inside its critical section.  VPP does the same: declare
            # the state consistent and carry on; the queue fields are updated in an order that
            # leaves them usable.
            self._words()
            err = self._pt.consistent(self._addr)
            if err:
                self.unlock()
                raise RemoteError(f"{self.name}: pthread_mutex_consistent: {os.strerror(err)}", err)
            return True
        if err == errno.ENOTRECOVERABLE:
            raise RemoteError(f"{self.name}: {what}: shared mutex is not recoverable", err)
        raise RemoteError(f"{self.name}: {what}: {os.strerror(err)}", err)

    def _not_ours(self, lock: int, tid: int) -> SharedMemoryError:
        return self._bad(
            f"lock word {lock:#x} names this thread (tid {tid}), which does not hold the "
            "mutex: the word was overwritten"
        )

    def _mark_holder(self, t: _ThreadState, tid: int, lock: int) -> bool:
        """Before asking glibc for the mutex: True if ``lock`` (the lock word now) is this
        thread's own, left held by an exception between an earlier lock and its caller's
        ``try``; a SharedMemoryError if it names this thread otherwise.  Else marks this
        thread as the holder first, so that such an exception (a Ctrl-C during the call is
        raised right there) leaves a word the next call recognises, and returns False."""
        if lock & _OWNER_BITS == tid:
            if tid in self._holders:
                return True
            raise self._not_ours(lock, tid)
        head_list = t.head_list
        self._holders[tid] = 0 if head_list is None else head_list[0]
        return False

    def lock(self, timeout: float | None = None) -> bool:
        """Lock; True if the previous owner had died holding it (the state is now ours).

        `Timeout` after ``timeout`` seconds; without one, `PeerStalled` after `hold_limit`."""
        tid, _, head_list = _THREAD.me
        if self._region._anchor is None:
            self._region._fault(0, _MUTEX_SIZE)
        lock, kind = _LOCK_KIND.unpack_from(self._mv)
        if kind != VPP_MUTEX_KIND:
            raise self._bad_kind(kind)
        holders = self._holders
        # _mark_holder, inlined: this is once per message sent in condvar mode.
        if lock & _OWNER_BITS == tid:
            if tid in holders:  # ours, left locked by an exception
                return False
            raise self._not_ours(lock, tid)
        holders[tid] = 0 if head_list is None else head_list[0]
        err = -1
        try:
            err = self._timedlock(self._addr, _PAST)
            if err == 0:
                return False
            if err == _ETIMEDOUT:
                err = self._lock_slow(timeout, tid)
            return self._acquired(err, "pthread_mutex_timedlock")
        except BaseException:
            if err not in (0, errno.EOWNERDEAD):
                holders.pop(tid, None)
            raise

    def _lock_slow(self, timeout: float | None, tid: int) -> int:
        """Wait for the mutex in slices of _SLICE, checking the words before each call and the
        owner after each expired slice.  Returns glibc's result, or raises."""
        pt, addr = self._pt, self._addr
        ts = _Timespec()  # kept alive for the whole call: see _sliced
        ts_addr = ctypes.addressof(ts)
        now = time.monotonic()
        end = now + (self.hold_limit if timeout is None else max(0.0, timeout))
        seen, since = -1, now
        lock = 0
        while True:
            left = end - now
            if left <= 0:
                break
            lock = self._words()[0]
            if lock & _OWNER_BITS == tid:
                raise self._not_ours(lock, tid)
            ts.tv_sec, ts.tv_nsec = divmod(
                time.clock_gettime_ns(pt.clock) + int(min(_SLICE, left) * 1e9), 1_000_000_000
            )
            err = pt.lock_until(addr, ts_addr)
            if err != errno.ETIMEDOUT:
                return int(err)
            now = time.monotonic()
            lock = _MUTEX_WORDS.unpack_from(self._mv)[0]
            key = lock & ~_FUTEX_WAITERS
            if key != seen:
                seen, since = key, now
            owner = lock & _FUTEX_TID_MASK
            if owner and now - since >= self.dead_owner_grace and _tid_absent(owner):
                raise self._bad(
                    f"held for {now - since:.1f} s by tid {owner}, which does not exist in this "
                    "pid namespace: the lock word was overwritten (or its holder, in another "
                    "pid namespace, is frozen)"
                )
        owner = lock & _FUTEX_TID_MASK
        if timeout is not None:
            raise Timeout(f"{self.name} not acquired within {timeout} s (held by tid {owner})")
        raise PeerStalled(
            f"{self.name} held by tid {owner} for {self.hold_limit} s: its holder is frozen or "
            "the lock word was overwritten"
        )

    def trylock(self) -> bool:
        """Lock if free; True if now held (including after recovering from a dead owner)."""
        t = _THREAD
        tid = t.tid
        lock = self._words()[0]
        if self._mark_holder(t, tid, lock):
            return True
        holders = self._holders
        err = -1
        try:
            err = self._timedlock(self._addr, _PAST)
            if err == errno.ETIMEDOUT:
                holders.pop(tid, None)
                return False
            self._acquired(err, "pthread_mutex_timedlock")
        except BaseException:
            if err not in (0, errno.EOWNERDEAD):
                holders.pop(tid, None)
            raise
        return True

    def _restore(self, tid: int) -> list[str]:
        """Before glibc unlocks (or waits, which unlocks): put back the words glibc wrote when
        this thread locked, if another process changed them.  glibc's unlock writes through
        the robust-list links, so links from elsewhere would be writes anywhere in this
        process.  Returns what was changed; raises if the mutex is no longer ours at all."""
        if self._region._anchor is None:
            self._region._fault(0, _MUTEX_SIZE)
        lock, _, owner, _, kind, prev, nxt = _MUTEX_WORDS.unpack_from(self._mv)
        expected = self._holders.get(tid)
        held = expected is not None
        if lock & _FUTEX_TID_MASK != tid:
            if not held:
                raise LocalError(
                    f"{self.name}: unlock by a thread that does not hold it", errno.EPERM
                )
            first = self._holders.pop(tid)
            head_list = _THREAD.head_list
            if head_list is not None:  # take it off our robust list, as glibc's unlock would
                head_list[0] = first
            raise self._bad(
                f"lock word changed to {lock:#x} while this thread (tid {tid}) held the mutex"
            )
        changed = []
        r, off = self._region, self._off
        if kind != VPP_MUTEX_KIND:
            changed.append(f"__kind {kind & 0xFFFFFFFF:#x}")
            r.store32(off + _M_KIND, VPP_MUTEX_KIND)
        if owner != tid and held:
            changed.append(f"__owner {owner}")
            r.store32(off + _M_OWNER, tid)
        head = _THREAD.head
        if head and expected is not None and (prev != head or nxt != expected):
            changed.append(f"__list {prev:#x}/{nxt:#x}")
            r.store64(off + _M_PREV, head)
            r.store64(off + _M_NEXT, expected)
        return changed

    def unlock(self) -> None:
        tid, head, _ = _THREAD.me
        if self._region._anchor is None:
            self._region._fault(0, _MUTEX_SIZE)
        lock, owner, kind, prev, nxt = _HELD_WORDS.unpack_from(self._mv)
        expected = self._holders.pop(tid, None)
        if (
            owner == tid
            and kind == VPP_MUTEX_KIND
            and lock & _FUTEX_TID_MASK == tid
            and expected is not None
            and ((prev == head and nxt == expected) or not head)
        ):  # the words are as glibc left them when this thread locked
            err = self._unlock(self._addr)
            if err:
                raise _error(err, f"{self.name}: pthread_mutex_unlock")
            return
        if expected is not None:
            self._holders[tid] = expected
        changed = self._restore(tid)
        self._holders.pop(tid, None)
        err = self._unlock(self._addr)
        if changed:
            raise self._bad(
                f"words changed by another process while this thread held the mutex (put back "
                f"before unlocking): {', '.join(changed)}"
            )
        if err:
            raise _error(err, f"{self.name}: pthread_mutex_unlock")


# glibc >= 2.25 condvar words (struct __pthread_cond_s, the same on every 64-bit port): __wseq
# @0 (bit 0: index of group G2), __g1_start @8, __g_refs[2] @16 (futex waiters x2, per group),
# __g_size[2] @24, __g1_orig_size @32 (bits 0-1: the condvar-internal lock), __wrefs @36 (bit 0:
# process-shared, bit 1: CLOCK_MONOTONIC, from bit 3: waiters).
_CV_WSEQ, _CV_G1_START, _CV_G_REFS, _CV_G_SIZE, _CV_ORIG_SIZE, _CV_WREFS = 0, 8, 16, 24, 32, 36
_CV_WORDS = struct.Struct("=QQIIIIII")
_WEDGED_SPINS = 64  # re-reads before a held internal lock / group reference counts as stuck
_WEDGED_AFTER = 0.5  # such a hold lasting this long is a dead or frozen peer's, not a slow one's
_POLL = 0.01  # how often a wait on a wedged condvar re-checks
_YIELD = 0.0005  # ... and on one that may just be waiting for a released waiter to run


class ProcessSharedCond:
    """A glibc ``pthread_cond_t`` (process-shared, CLOCK_REALTIME) at ``region`` offset ``off``,
    used as svm message queues use it: broadcast only (nobody calls pthread_cond_signal).

    glibc's process-shared condvar is not robust the way the mutex is.  A waiter that dies while
    blocked keeps a reference on its group forever; the next broadcast that must retire that
    group (a waiter being in the other one) waits for it with no timeout while holding the
    condvar-internal lock, and from then on every waiter whose deadline passes blocks on that
    lock inside pthread_cond_timedwait, as does every later broadcast.  So each call first looks
    at those words (`_stuck`): while such a hold lasts, waits poll (unlock, sleep, relock)
    instead of entering glibc and broadcasts are skipped (nobody could be woken anyway).

    `broadcast` is safe against words written by another process, as long as they do not
    change during the call: it refuses (`SharedMemoryError`) words no broadcast-only condvar can
    hold, and skips where glibc would wait.  `wait` is not: glibc re-acquires the mutex and
    the internal lock inside it without a timeout.  pyvcl's message queues never wait on the
    condvar (they poll), and use only `broadcast`."""

    __slots__ = ("_addr", "_mv", "_off", "_pt", "_region", "_suspect", "_suspect_since", "_w",
                 "name", "wedged_after")  # fmt: skip

    #: Default `wedged_after`.
    WEDGED_AFTER = _WEDGED_AFTER

    def __init__(self, region: AtomicRegion, off: int, name: str = "") -> None:
        self._region = region
        self._addr = region._object_address(off, _COND_SIZE)
        self._mv = memoryview((ctypes.c_char * _COND_SIZE).from_address(self._addr)).cast("B")
        self._w = self._mv.cast("I")  # __wrefs is _w[9]: glibc's broadcast reads it relaxed too
        self._off = off
        self._pt = _Pthread.get()
        self._suspect = -1  # __g1_start when a wait last found the condvar held (_stuck)
        self._suspect_since = 0.0
        self.name = name or f"shared condvar at offset {off:#x}"
        self.wedged_after = self.WEDGED_AFTER

    def _bad(self, what: str) -> SharedMemoryError:
        return SharedMemoryError(f"{self.name}: {what}")

    def _check_wrefs(self) -> int:
        """__wrefs, refused unless process-shared with VPP's clock (CLOCK_REALTIME)."""
        r = self._region
        if r._anchor is None:
            r._fault(0, _COND_SIZE)
        wrefs = self._w[_CV_WREFS >> 2]
        if wrefs & 3 != 1:
            raise self._bad_wrefs(wrefs)
        return wrefs

    def _bad_wrefs(self, wrefs: int) -> SharedMemoryError:
        return self._bad(
            f"__wrefs {wrefs:#x}: not the process-shared CLOCK_REALTIME condvar VPP makes"
        )

    def _stuck(self, broadcasting: bool) -> bool:
        """Whether a glibc call could block without bound right now: the internal lock is held,
        or the current G1 group, all of whose waiters were already released, still has futex
        waiters (dead ones: live ones leave at once) that a group switch would wait for -- the
        switch a broadcast makes when group G2 has waiters, or that a wait of ours would make
        necessary by joining G2.  Momentary holds (a few re-reads) do not count.

        Broadcasting, a non-zero size of G1 is refused (`SharedMemoryError`): only
        pthread_cond_signal leaves one (a broadcast zeroes it), and glibc's broadcast would then
        wait for G1's references, which a live waiter drops only after being signalled."""
        r, o, words, mv = self._region, self._off, _CV_WORDS, self._mv
        if r._anchor is None:
            r._fault(0, _COND_SIZE)
        bad = ""
        for _ in range(_WEDGED_SPINS):
            wseq, g1_start, ref0, ref1, size0, size1, orig, _wrefs = words.unpack_from(mv)
            g2 = wseq & 1
            g1 = g2 ^ 1
            if orig & 3:
                continue  # internal lock held
            refs, sizes = (ref0, ref1), (size0, size1)
            # A snapshot of words glibc changes under the internal lock: re-read what marks a
            # group switch and the lock, so a switch between the reads is not misjudged.
            if r.load64(o + _CV_WSEQ) != wseq or r.load32(o + _CV_ORIG_SIZE) != orig:
                continue
            if broadcasting and sizes[g1]:
                bad = f"__g_size[{g1}] (group G1) is {sizes[g1]}, not 0"
                continue
            bad = ""
            if not refs[g1] >> 1:
                return False
            if not broadcasting and sizes[g1]:
                return False
            # __condvar_quiesce_and_switch_g1 only runs if G2 has waiters
            if broadcasting and not (
                ((wseq >> 1) - (g1_start >> 1) - (orig >> 2) + sizes[g2]) & 0xFFFFFFFF
            ):
                return False
        if bad:
            raise self._bad(f"{bad}: glibc's broadcast would wait forever for that group")
        return True

    def wait(self, mutex: ProcessSharedMutex, timeout: float | None = None) -> bool:
        """Wait for a broadcast with `mutex` held; False on timeout.  May wake spuriously, and
        a dead mutex owner is recovered from as in `ProcessSharedMutex.lock`: recheck the
        predicate either way.

        Returns within `timeout` (plus the time to re-acquire `mutex`, which a live peer could
        hold forever: glibc re-acquires it without a timeout too).  Not safe against another
        process writing the mutex or condvar words meanwhile (see the class notes)."""
        self._check_wrefs()
        if mutex._region._anchor is None:
            mutex._region._fault(0, _MUTEX_SIZE)
        if self._stuck(False):
            # Usually a released waiter that has not run yet (it drops its reference as soon as
            # it does): poll briefly.  Held for _WEDGED_AFTER with no group switch: poll slowly.
            g1_start, now = self._region.load64(self._off + _CV_G1_START), time.monotonic()
            if g1_start != self._suspect:
                self._suspect, self._suspect_since = g1_start, now
            pause = _POLL if now - self._suspect_since >= self.wedged_after else _YIELD
            mutex.unlock()
            try:
                time.sleep(pause if timeout is None else max(0.0, min(pause, timeout)))
            finally:
                mutex.lock()
            return False
        tid = _THREAD.tid
        changed = mutex._restore(tid)
        if changed:
            raise mutex._bad(f"words changed by another process while held: {', '.join(changed)}")
        pt = self._pt
        wait, addr, maddr = pt.wait_until, self._addr, mutex._addr
        err = _sliced(lambda ts: wait(addr, maddr, ts), timeout, pt.clock)
        # glibc re-acquired it, and re-linked it to the same place: the holder entry stands.
        if err == errno.ETIMEDOUT:
            return False
        mutex._acquired(err, "pthread_cond_timedwait")
        return True

    def check(self) -> bool:
        """Check the words a `broadcast` now would hand to glibc, without calling it: raise
        `SharedMemoryError` where `broadcast` would refuse.  True if it would call glibc
        (someone waits), False if not.

        With the queue mutex held, False also means no broadcast is needed until it is
        released: a waiter registers (adds to ``__wrefs``) before pthread_cond_wait releases
        the mutex, so none can join meanwhile (only a write from elsewhere, and nobody such a
        write adds is waiting to be woken)."""
        wrefs = self._check_wrefs()
        if not wrefs >> 3:
            return False
        self._stuck(True)  # raises for bad words; a wedge is skipped by broadcast, not refused
        return True

    def broadcast(self) -> bool:
        """Wake every waiter; False if skipped because a dead or frozen peer holds the condvar
        (see the class notes: glibc would block with no timeout, and wake nobody).  Raises
        `SharedMemoryError`, without calling glibc, for words a broadcast could hang on that
        no svm message queue's condvar can hold."""
        wrefs = self._check_wrefs()
        if not wrefs >> 3:  # no waiters: glibc would return at once
            return True
        if self._stuck(True):
            end = time.monotonic() + self.wedged_after
            while self._stuck(True):
                if time.monotonic() >= end:
                    return False
                time.sleep(_POLL / 10)
        err = self._pt.broadcast(self._addr)
        if err:
            raise RemoteError(f"{self.name}: pthread_cond_broadcast: {os.strerror(err)}", err)
        return True


_PTHREAD_PROCESS_SHARED, _PTHREAD_MUTEX_ROBUST = 1, 1


def init_shared_mutex(region: AtomicRegion, off: int) -> None:
    """Initialise a robust, process-shared mutex at `off`, as VPP's svm_msg_q_init_mutex."""
    addr, pt = region._object_address(off, _MUTEX_SIZE), _Pthread.get()
    attr = (ctypes.c_uint64 * 8)()  # pthread_mutexattr_t is 4 (x86-64) or 8 bytes
    a = ctypes.addressof(attr)
    _check(pt.mattr_init(a), "pthread_mutexattr_init")
    try:
        _check(pt.mattr_pshared(a, _PTHREAD_PROCESS_SHARED), "pthread_mutexattr_setpshared")
        _check(pt.mattr_robust(a, _PTHREAD_MUTEX_ROBUST), "pthread_mutexattr_setrobust")
        _check(pt.mutex_init(addr, a), "pthread_mutex_init")
    finally:
        pt.mattr_destroy(a)


def init_shared_cond(region: AtomicRegion, off: int) -> None:
    """Initialise a process-shared condvar (default clock, CLOCK_REALTIME) at `off`."""
    addr, pt = region._object_address(off, _COND_SIZE), _Pthread.get()
    attr = (ctypes.c_uint64 * 8)()
    a = ctypes.addressof(attr)
    _check(pt.cattr_init(a), "pthread_condattr_init")
    try:
        _check(pt.cattr_pshared(a, _PTHREAD_PROCESS_SHARED), "pthread_condattr_setpshared")
        _check(pt.cond_init(addr, a), "pthread_cond_init")
    finally:
        pt.cattr_destroy(a)
