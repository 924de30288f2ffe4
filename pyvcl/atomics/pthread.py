"""Process-shared, robust glibc pthread mutex and condvar in shared memory, through ctypes: the
lock and wake-up of a message queue in condvar mode (``svm_msg_q_shared_queue_t.mutex`` /
``.condvar``), as VPP's svm_msg_q_init_mutex makes them.  Part of `pyvcl.atomics`."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyvcl.errors import LocalError, RemoteError, Timeout, VclError
from pyvcl.wire.abi import PTHREAD_COND_SIZE, PTHREAD_MUTEX_SIZES

from .backends import _MACHINE, _V

if TYPE_CHECKING:
    from . import AtomicRegion

# glibc sizes; larger than the real size on unknown machines so bounds checks stay safe.
_MUTEX_SIZE = PTHREAD_MUTEX_SIZES.get(_MACHINE, 64)
_COND_SIZE = PTHREAD_COND_SIZE

_SLICE = 1.0  # blocking calls return to Python this often so Ctrl-C (a signal handler) runs
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
        libs = [ctypes.CDLL(None)]
        with contextlib.suppress(OSError):  # glibc < 2.34 keeps some of them in libpthread
            libs.append(ctypes.CDLL("libpthread.so.0"))

        def fn(name: str, *argtypes: type) -> Callable[..., int]:
            for lib in libs:
                f = getattr(lib, name, None)
                if f is not None:
                    f.argtypes = argtypes
                    f.restype = ctypes.c_int
                    return f  # type: ignore[no-any-return]
            raise VclError(f"libc has no {name}; pyvcl needs glibc's pthreads", errno.ENOSYS)

        v, i = _V, ctypes.c_int
        self.timedlock = fn("pthread_mutex_timedlock", v, v)
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


class ProcessSharedMutex:
    """A glibc ``pthread_mutex_t`` living in shared memory at ``region`` offset ``off``."""

    __slots__ = ("_addr", "_pt", "_region")

    def __init__(self, region: AtomicRegion, off: int) -> None:
        self._region = region
        self._addr = region._object_address(off, _MUTEX_SIZE)
        self._pt = _Pthread.get()

    def _acquired(self, err: int, what: str) -> bool:
        """Turn a lock result into "recovered from a dead owner?"; raise on anything else."""
        if err == 0:
            return False
        if err == errno.EOWNERDEAD:
            # The previous owner died inside its critical section.  VPP does the same: declare
            # the state consistent and carry on; the queue fields are updated in an order that
            # leaves them usable.
            _check(self._pt.consistent(self._addr), "pthread_mutex_consistent")
            return True
        if err == errno.ENOTRECOVERABLE:
            raise RemoteError(f"{what}: shared mutex is not recoverable", err)
        raise _error(err, what)

    def lock(self, timeout: float | None = None) -> bool:
        """Lock; True if the previous owner had died holding it (the state is now ours)."""
        if self._region._anchor is None:
            self._region._fault(0, _MUTEX_SIZE)
        pt, addr = self._pt, self._addr
        err = pt.timedlock(addr, _PAST)
        if err == errno.ETIMEDOUT:
            err = _sliced(lambda ts: pt.lock_until(addr, ts), timeout, pt.clock)
            if err == errno.ETIMEDOUT:
                raise Timeout(f"shared mutex not acquired within {timeout} s")
        return self._acquired(err, "pthread_mutex_timedlock")

    def trylock(self) -> bool:
        """Lock if free; True if now held (including after recovering from a dead owner)."""
        if self._region._anchor is None:
            self._region._fault(0, _MUTEX_SIZE)
        err = self._pt.timedlock(self._addr, _PAST)
        if err == errno.ETIMEDOUT:
            return False
        self._acquired(err, "pthread_mutex_timedlock")
        return True

    def unlock(self) -> None:
        if self._region._anchor is None:
            self._region._fault(0, _MUTEX_SIZE)
        _check(self._pt.unlock(self._addr), "pthread_mutex_unlock")


# glibc >= 2.25 condvar words (struct __pthread_cond_s, the same on every 64-bit port): __wseq
# @0 (bit 0: index of group G2), __g1_start @8, __g_refs[2] @16 (futex waiters x2, per group),
# __g_size[2] @24, __g1_orig_size @32 (bits 0-1: the condvar-internal lock), __wrefs @36.
_CV_WSEQ, _CV_G1_START, _CV_G_REFS, _CV_G_SIZE, _CV_ORIG_SIZE, _CV_WREFS = 0, 8, 16, 24, 32, 36
_WEDGED_SPINS = 64  # re-reads before a held internal lock / group reference counts as stuck
_WEDGED_AFTER = 0.5  # such a hold lasting this long is a dead or frozen peer's, not a slow one's
_POLL = 0.01  # how often a wait on a wedged condvar re-checks
_YIELD = 0.0005  # ... and on one that may just be waiting for a released waiter to run


class ProcessSharedCond:
    """A glibc ``pthread_cond_t`` (process-shared, CLOCK_REALTIME) at ``region`` offset ``off``.

    glibc's process-shared condvar is not robust the way the mutex is.  A waiter that dies while
    blocked keeps a reference on its group forever; the next broadcast that must retire that
    group (a waiter being in the other one) waits for it with no timeout while holding the
    condvar-internal lock, and from then on every waiter whose deadline passes blocks on that
    lock inside pthread_cond_timedwait, as does every later broadcast.  So each call first looks
    at those words (`_stuck`): while such a hold lasts, waits poll (unlock, sleep, relock)
    instead of entering glibc and broadcasts are skipped (nobody could be woken anyway)."""

    __slots__ = ("_addr", "_off", "_pt", "_region", "_suspect", "_suspect_since")

    def __init__(self, region: AtomicRegion, off: int) -> None:
        self._region = region
        self._addr = region._object_address(off, _COND_SIZE)
        self._off = off
        self._pt = _Pthread.get()
        self._suspect = -1  # __g1_start when a wait last found the condvar held (_stuck)
        self._suspect_since = 0.0

    def _stuck(self, broadcasting: bool) -> bool:
        """Whether a glibc call could block without bound right now: the internal lock is held,
        or the current G1 group, all of whose waiters were already released, still has futex
        waiters (dead ones: live ones leave at once) that a group switch would wait for -- the
        switch a broadcast makes when group G2 has waiters, or that a wait of ours would make
        necessary by joining G2.  Momentary holds (a few re-reads) do not count."""
        r, o = self._region, self._off
        for _ in range(_WEDGED_SPINS):
            wseq = r.load64(o + _CV_WSEQ)
            g2 = wseq & 1
            g1 = g2 ^ 1
            orig = r.load32(o + _CV_ORIG_SIZE)
            if not orig & 3:  # internal lock free: is there a dead reference to wait for?
                if not r.load32(o + _CV_G_REFS + 4 * g1) >> 1 or r.load32(o + _CV_G_SIZE + 4 * g1):
                    return False
                if broadcasting:  # __condvar_quiesce_and_switch_g1 only runs if G2 has waiters
                    g1_start = r.load64(o + _CV_G1_START) >> 1
                    g2_size = r.load32(o + _CV_G_SIZE + 4 * g2)
                    if ((wseq >> 1) - g1_start - (orig >> 2) + g2_size) & 0xFFFFFFFF == 0:
                        return False
        return True

    def wait(self, mutex: ProcessSharedMutex, timeout: float | None = None) -> bool:
        """Wait for a broadcast with `mutex` held; False on timeout.  May wake spuriously, and
        a dead mutex owner is recovered from as in `ProcessSharedMutex.lock`: recheck the
        predicate either way.

        Returns within `timeout` (plus the time to re-acquire `mutex`, which a live peer could
        hold forever: glibc re-acquires it without a timeout too)."""
        if self._region._anchor is None or mutex._region._anchor is None:
            self._region._fault(0, _COND_SIZE)
        if self._stuck(False):
            # Usually a released waiter that has not run yet (it drops its reference as soon as
            # it does): poll briefly.  Held for _WEDGED_AFTER with no group switch: poll slowly.
            g1_start, now = self._region.load64(self._off + _CV_G1_START), time.monotonic()
            if g1_start != self._suspect:
                self._suspect, self._suspect_since = g1_start, now
            pause = _POLL if now - self._suspect_since >= _WEDGED_AFTER else _YIELD
            mutex.unlock()
            try:
                time.sleep(pause if timeout is None else max(0.0, min(pause, timeout)))
            finally:
                mutex.lock()
            return False
        pt = self._pt
        wait, addr, maddr = pt.wait_until, self._addr, mutex._addr
        err = _sliced(lambda ts: wait(addr, maddr, ts), timeout, pt.clock)
        if err == errno.ETIMEDOUT:
            return False
        mutex._acquired(err, "pthread_cond_timedwait")
        return True

    def broadcast(self) -> bool:
        """Wake every waiter; False if skipped because a dead or frozen peer holds the condvar
        (see the class notes: glibc would block with no timeout, and wake nobody)."""
        r = self._region
        if r._anchor is None:
            r._fault(0, _COND_SIZE)
        if not r.load32(self._off + _CV_WREFS) >> 3:  # no waiters: glibc would return at once
            return True
        if self._stuck(True):
            end = time.monotonic() + _WEDGED_AFTER
            while self._stuck(True):
                if time.monotonic() >= end:
                    return False
                time.sleep(_POLL / 10)
        _check(self._pt.broadcast(self._addr), "pthread_cond_broadcast")
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
