"""Message queues and their locks against shared memory that another process writes (issue 8,
"Never crash VPP or ourselves"): each case is one to three word writes into a queue built the
way VPP builds it, after which pyvcl must raise a pyvcl error promptly -- not abort the
interpreter, hang, spin or leak a built-in exception.

Cases that used to abort or hang run in a fresh interpreter (`run_bounded`), so that a
regression fails here instead of taking the test run down with it."""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvcl import shmview as ins
from pyvcl.atomics import PeerStalled, ProcessSharedCond, ProcessSharedMutex
from pyvcl.errors import LocalError, RemoteError, SharedMemoryError, Timeout, VclError
from pyvcl.mq import events
from pyvcl.mq.queue import CONDVAR, EVENTFD, MessageQueue
from pyvcl.segment import Segment
from pyvcl.wire.enums import MqRing
from pyvcl.wire.enums import SessionEvent as E
from pyvcl.wire.mq import SVM_MSG_Q_RING_SHARED, SVM_MSG_Q_SHARED, SVM_MSG_Q_SHARED_QUEUE
from pyvcl.wire.session import CTRL_EVENT_SLOT_SIZE, CTRL_PAYLOADS, SESSION_EVENT_SIZE

from . import subproc
from .mq_fixtures import build_mq

REPO = Path(__file__).resolve().parent.parent
_Q = SVM_MSG_Q_SHARED_QUEUE
MUTEX, COND = _Q.offset("mutex"), _Q.offset("condvar")
# glibc words (x86-64 / aarch64): mutex __lock @0, __owner @8, __kind @16, __list @24/@32;
# condvar __wseq @0, __g1_start @8, __g_refs @16, __g_size @24, __g1_orig_size @32, __wrefs @36.
M_LOCK, M_OWNER, M_KIND, M_PREV, M_NEXT = 0, 8, 16, 24, 32
CV_WSEQ, CV_G_REFS, CV_G_SIZE, CV_ORIG, CV_WREFS = 0, 16, 24, 32, 36


def q_at(mq: MessageQueue, field_off: int) -> int:
    """Mapping offset of a word in ``mq``'s queue header."""
    return mq.segment.fsh + mq.offset + SVM_MSG_Q_SHARED.size + field_off


def ghost_tid() -> int:
    """A thread id that no thread has in this pid namespace."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for tid in range(min(pid_max, 1 << 22) - 1, 300, -1):
        if not os.path.exists(f"/proc/{tid}"):
            return tid
    raise AssertionError("no free tid")


def run_bounded(code: str, timeout: float = 30) -> str:
    """`tests.subproc.run_bounded` with `PRELUDE`."""
    return subproc.run_bounded(code, timeout, PRELUDE)


PRELUDE = """\
import os, signal, sys, threading, time
from pyvcl.errors import *
from pyvcl.atomics import PeerStalled
from pyvcl.mq.queue import MessageQueue
from pyvcl.wire.enums import SessionEvent as E
from pyvcl.wire.mq import SVM_MSG_Q_SHARED, SVM_MSG_Q_SHARED_QUEUE as Q
from tests.mq_fixtures import build_mq

def words(mq, part):
    return mq.segment.fsh + mq.offset + SVM_MSG_Q_SHARED.size + Q.offset(part)

def expect(exc, fn, *args, **kw):
    t0 = time.monotonic()
    try:
        fn(*args, **kw)
    except exc as e:
        print(type(e).__name__, round(time.monotonic() - t0, 2), e)
        return e
    raise AssertionError(f"{fn} did not raise {exc}")
"""


@pytest.fixture
def hang_guard() -> Iterator[None]:
    """Dump every stack and exit if a test hangs inside glibc (no signal handler runs there)."""
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


class Hung(Exception):
    pass


@pytest.fixture
def alarm() -> Iterator[None]:
    def hung(*_: Any) -> None:
        raise Hung

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 20)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


# -- 1. interpreter abort: a mutex __kind glibc would take for a PI mutex --------------------------
@pytest.mark.parametrize(
    "kind",
    [
        0xB0,  # priority inheritance: glibc asserts on a lock word naming no thread (ESRCH)
        0xD0,  # priority protection
        0x91,  # robust recursive
        0x92,  # robust errorcheck
        0x190,  # elision
        0x10,  # robust, without the process-shared bit
        0x00,
    ],
)
def test_mutex_kind_other_than_vpps_is_refused_at_attach(kind: int) -> None:
    seg, off, mq = build_mq(16)
    seg.atomics.store32(q_at(mq, MUTEX + M_KIND), kind)
    with pytest.raises(SharedMemoryError, match="__kind"):
        MessageQueue(seg, off)


def test_pi_kind_written_after_attach_never_reaches_glibc() -> None:
    # Before: "pthread_mutex_timedlock.c: Assertion `e != ESRCH || !robust' failed", SIGABRT.
    out = run_bounded(
        f"""
        seg, off, mq = build_mq(16)
        a, m = seg.atomics, words(mq, "mutex")
        a.store32(m + 16, 0xB0)  # PTHREAD_MUTEX_PI_ROBUST_NORMAL_NP | PSHARED
        a.store32(m, {ghost_tid()})  # owned by a thread that does not exist
        e = expect(SharedMemoryError, mq.send_io, E.IO_TX, 1)
        assert "mq@" in str(e) and "mutex at fsh offset" in str(e) and "__kind 0xb0" in str(e)
        expect(SharedMemoryError, mq.send_ctrl, E.CTRL_DISCONNECT, handle=1)
        expect(SharedMemoryError, mq._mutex.lock, 1)
        expect(SharedMemoryError, mq._mutex.trylock)
        assert mq.size_now() == 0  # nothing was queued
        """
    )
    assert out.count("SharedMemoryError") == 4


# -- 2a. endless waits: condvar words that would hold glibc's broadcast forever --------------------
def test_g1_size_that_would_hang_broadcast_is_refused() -> None:
    # Before: pthread_cond_broadcast waited forever for G1's (non-existent) waiter, holding the
    # queue mutex, deaf to timeouts and Ctrl-C.
    out = run_bounded(
        """
        seg, off, mq = build_mq(16)
        a, c = seg.atomics, words(mq, "condvar")
        a.store32(c + 36, 1 | 8)  # __wrefs: process-shared, one waiter
        a.store64(c + 0, 2 << 1)  # __wseq: two waiters so far, G2 = group 0 (G1 = group 1)
        a.store32(c + 16 + 4, 2)  # __g_refs[1]: one waiter in G1 holds a reference
        a.store32(c + 24 + 4, 1)  # __g_size[1]: and has not been signalled
        e = expect(SharedMemoryError, mq.send_io, E.IO_TX, 1)
        assert "condvar at fsh offset" in str(e) and "__g_size[1]" in str(e)
        assert mq.size_now() == 0  # refused before anything was queued
        assert mq._mutex.trylock() is True  # and the mutex was released
        mq._mutex.unlock()
        """
    )
    assert "SharedMemoryError" in out


def test_condvar_checks_for_broadcast(alarm: None) -> None:
    seg, _, mq = build_mq(16)
    a, c = seg.atomics, q_at(mq, COND)
    cond = ProcessSharedCond(a, c, name="cv")
    assert cond.check() is False and cond.broadcast() is True  # nobody waits: no glibc call
    a.store32(c + CV_WREFS, 8)  # a waiter, but not process-shared
    with pytest.raises(SharedMemoryError, match="cv: __wrefs"):
        cond.broadcast()
    a.store32(c + CV_WREFS, 1 | 2 | 8)  # CLOCK_MONOTONIC: not VPP's condvar either
    with pytest.raises(SharedMemoryError):
        cond.check()
    a.store32(c + CV_WREFS, 1 | 8)
    a.store32(c + CV_G_SIZE + 4, 3)  # G1 = group 1 of a fresh condvar
    with pytest.raises(SharedMemoryError, match="__g_size"):
        cond.check()
    a.store32(c + CV_G_SIZE + 4, 0)
    assert cond.check() is True and cond.broadcast() is True  # consistent words: glibc runs
    cond.wedged_after = 0.05
    a.store32(c + CV_ORIG, 2)  # the condvar-internal lock, held by nobody: skipped, bounded
    t0 = time.monotonic()
    assert cond.broadcast() is False
    assert time.monotonic() - t0 < 1
    a.store32(c + CV_ORIG, 0)
    a.store32(c + CV_WREFS, 8)
    mq._mutex.lock()
    try:
        with pytest.raises(SharedMemoryError):  # waits are refused the same words
            cond.wait(mq._mutex, 0.01)
    finally:
        mq._mutex.unlock()


def test_a_consumer_broadcast_refused_is_raised_by_the_next_drain(alarm: None) -> None:
    seg, _, mq = build_mq(2, ((4, SESSION_EVENT_SIZE), (4, CTRL_EVENT_SLOT_SIZE)))
    mq.send_io(E.IO_RX, 1)
    mq.send_io(E.IO_RX, 2)  # full: draining owes producers a broadcast
    a, c = seg.atomics, q_at(mq, COND)
    a.store32(c + CV_WREFS, 1 | 8)
    a.store32(c + CV_G_SIZE + 4, 1)
    assert [e.session_index for e in mq.drain(max_n=1)] == [1]  # consumed, not lost
    with pytest.raises(SharedMemoryError, match="__g_size"):
        mq.drain()  # pays the owed broadcast first: refused, nothing consumed
    assert mq.size_now() == 1
    a.store32(c + CV_G_SIZE + 4, 0)
    assert [e.session_index for e in mq.drain()] == [2]


# -- 2b. endless waits: lock words naming a thread that does not exist, or ourselves ---------------
def test_lock_word_naming_no_thread_is_detected() -> None:
    # Before: mq.send_io() (timeout None) waited forever.
    out = run_bounded(
        f"""
        seg, off, mq = build_mq(16)
        seg.atomics.store32(words(mq, "mutex"), {ghost_tid()})
        e = expect(SharedMemoryError, mq.send_io, E.IO_TX, 1)
        assert "does not exist in this pid namespace" in str(e), e
        """
    )
    assert float(out.split()[1]) < 2, out


def test_lock_word_naming_this_thread_is_shared_memory_error(alarm: None) -> None:
    seg, _, mq = build_mq(16)
    seg.atomics.store32(q_at(mq, MUTEX + M_LOCK), threading.get_native_id())
    for call in (lambda: mq.send_io(E.IO_TX, 1, timeout=5), mq._mutex.trylock):
        t0 = time.monotonic()
        with pytest.raises(SharedMemoryError, match="names this thread"):
            call()
        assert time.monotonic() - t0 < 0.5
    with pytest.raises(SharedMemoryError, match="names this thread"):
        MessageQueue(seg, mq.offset)._mutex.lock(timeout=5)
    # ... but the same word left by this very object's lock (an exception between lock() and
    # the caller's try) is its own, and taken back.
    seg.atomics.store32(q_at(mq, MUTEX + M_LOCK), 0)
    mq._mutex.lock()
    mq.send_io(E.IO_TX, 2, timeout=5)
    assert [e.session_index for e in mq.drain()] == [2]


def test_words_changed_while_held_are_put_back_before_unlock() -> None:
    # glibc's unlock writes through the robust-list links in the mutex: links written by another
    # process while we hold it would be writes anywhere in this process.
    out = run_bounded(
        """
        seg, off, mq = build_mq(16)
        a, m = seg.atomics, words(mq, "mutex")
        mx = mq._mutex
        for word, value in ((24, 0x10), (32, 0xDEAD0000), (16, 0xB0), (8, 4242)):
            mx.lock()
            (a.store64 if word >= 24 else a.store32)(m + word, value)
            e = expect(SharedMemoryError, mx.unlock)
            assert "put back" in str(e)
            assert mx.trylock() is True  # it was unlocked, and is sane
            mx.unlock()
        mx.lock()
        a.store32(m, 777)  # the lock word itself: no longer ours to unlock
        e = expect(SharedMemoryError, mx.unlock)
        assert "lock word changed" in str(e)
        a.store32(m, 0)
        mq.send_io(E.IO_TX, 1)
        assert [ev.session_index for ev in mq.drain()] == [1]
        """
    )
    assert out.count("SharedMemoryError") == 5


def test_unlocking_a_mutex_this_thread_never_locked_is_still_a_local_error() -> None:
    seg, _, mq = build_mq(16)
    seg.atomics.store32(q_at(mq, MUTEX + M_LOCK), 1)
    with pytest.raises(LocalError):
        mq._mutex.unlock()


def test_mutex_held_by_a_live_thread_stalls_boundedly(alarm: None) -> None:
    seg, _, mq = build_mq(16)
    seg.atomics.store32(q_at(mq, MUTEX + M_LOCK), 1)  # pid 1 exists here: a live, stuck holder
    mq.stall_limit = 0.3
    t0 = time.monotonic()
    with pytest.raises(PeerStalled, match="held by tid 1"):
        mq.send_io(E.IO_TX, 1)
    assert 0.25 < time.monotonic() - t0 < 1.5
    with pytest.raises(Timeout):
        mq.send_io(E.IO_TX, 1, timeout=0.1)
    m = ProcessSharedMutex(seg.atomics, q_at(mq, MUTEX))
    m.hold_limit = 0.2
    with pytest.raises(PeerStalled) as info:
        m.lock()
    assert isinstance(info.value, RemoteError) and info.value.errno == errno.ETIMEDOUT


# -- 2c. endless waits: a ring that stays full ---------------------------------------------------
@pytest.mark.parametrize("mode", [CONDVAR, EVENTFD])
def test_a_ring_nobody_drains_stalls_every_send(alarm: None, mode: str) -> None:
    fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) if mode == EVENTFD else None
    try:
        _, _, mq = build_mq(4, ((4, SESSION_EVENT_SIZE), (2, CTRL_EVENT_SLOT_SIZE)), eventfd=fd)
        for i in range(4):
            mq.send_io(E.IO_TX, i)
        mq.stall_limit = 0.3
        for send in (
            lambda: mq.send_io(E.IO_TX, 9),  # timeout None
            lambda: mq.send_io(E.IO_TX, 9, timeout=30),  # the stall limit wins
            lambda: mq.send_ctrl(E.CTRL_DISCONNECT, handle=9),
            lambda: mq.send(events.encode_io(E.IO_TX, 9)),
        ):
            t0 = time.monotonic()
            with pytest.raises(PeerStalled, match="has not consumed anything for"):
                send()
            assert 0.25 < time.monotonic() - t0 < 1.5
        with pytest.raises(Timeout):
            mq.send_io(E.IO_TX, 9, timeout=0.05)
    finally:
        if fd is not None:
            os.close(fd)


def test_a_slow_consumer_is_not_a_stalled_one(alarm: None) -> None:
    _, _, mq = build_mq(4, ((4, SESSION_EVENT_SIZE), (2, CTRL_EVENT_SLOT_SIZE)))
    mq.stall_limit = 0.25
    stop = threading.Event()
    got: list[int] = []

    def consume() -> None:
        while not stop.is_set():
            time.sleep(0.1)  # one message per 0.1 s: far below the producer's pace
            got.extend(e.session_index for e in mq.drain(max_n=1))

    t = threading.Thread(target=consume)
    t.start()
    try:
        for i in range(12):  # ~0.8 s of a full ring, never 0.25 s without progress
            mq.send_io(E.IO_TX, i)
    finally:
        stop.set()
        t.join()
    got += [e.session_index for e in mq.drain()]
    assert got == list(range(12))


# -- 2d. every wait stays interruptible ----------------------------------------------------------
@pytest.mark.parametrize(
    "setup, call",
    [
        # a full ring nobody drains, with a stall limit far away
        ("for i in range(4): mq.send_io(E.IO_TX, i)", "mq.send_io(E.IO_TX, 9)"),
        # a mutex held by a live thread (pid 1), with a hold limit far away
        ("seg.atomics.store32(words(mq, 'mutex'), 1)", "mq.send_io(E.IO_TX, 9)"),
        ("seg.atomics.store32(words(mq, 'mutex'), 1)", "mq._mutex.lock()"),
        # nothing to read
        ("", "mq.wait()"),
        ("", "mq.recv()"),
    ],
)
def test_ctrl_c_ends_every_wait_promptly(setup: str, call: str) -> None:
    out = run_bounded(
        f"""
        seg, off, mq = build_mq(4, ((4, 18), (2, 256)))
        mq.stall_limit = mq._mutex.hold_limit = 60
        {setup}
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        try:
            {call}
        except KeyboardInterrupt:
            print(round(time.monotonic() - t0, 3))
        else:
            raise AssertionError("returned")
        """
    )
    assert 0.25 < float(out) < 0.8, out


# -- 3. the inspector on absurd rings --------------------------------------------------------------
def ring_hdr(mq: MessageQueue, ring: int) -> int:
    base = mq.segment.fsh + mq.offset + SVM_MSG_Q_SHARED.size + _Q.size + 8 * mq.maxsize
    for r in range(ring):
        base += SVM_MSG_Q_RING_SHARED.size + mq.ring_nitems(r) * mq.ring_elsize(r)
    return base


@pytest.mark.parametrize("ring", [0, 1])
def test_describe_mq_is_bounded_on_a_ring_of_empty_slots(alarm: None, ring: int) -> None:
    # Before: 2**32 - 1 slots of 0 bytes were walked one by one (~100 MiB/s, for good).
    seg, off, mq = build_mq(16)
    mq.send_io(E.IO_TX, 1)
    h = ring_hdr(mq, ring)
    SVM_MSG_Q_RING_SHARED["elsize"].put(seg.view, h, 0)
    SVM_MSG_Q_RING_SHARED["nitems"].put(seg.view, h, 0xFFFFFFFF)
    SVM_MSG_Q_RING_SHARED["cursize"].put(seg.view, h, 0xFFFFFFF0)
    t0 = time.monotonic()
    d = ins.describe_mq(seg, off)
    assert time.monotonic() - t0 < 2
    r = d["rings"][ring]
    assert r["slots"] == [] and any("elsize 0" in p for p in r["problems"])
    assert len(d["rings"]) == 2  # ring 1, wherever it now lands, is read within the mapping


def test_describe_mq_caps_what_it_lists(alarm: None, monkeypatch: pytest.MonkeyPatch) -> None:
    seg, off, mq = build_mq(64)
    for i in range(40):
        mq.send_io(E.IO_TX, i)
    monkeypatch.setattr(ins, "MAX_SLOTS", 8)
    d = ins.describe_mq(seg, off)
    assert len(d["queue"]["pending_handles"]) == 8 and d["queue"]["pending_not_listed"] == 32
    assert len(d["rings"][0]["slots"]) == 8 and d["rings"][0]["slots_not_listed"] == 32


def test_describe_mq_reports_a_ring_past_the_mapping() -> None:
    seg, off, mq = build_mq(16)
    SVM_MSG_Q_RING_SHARED["nitems"].put(seg.view, ring_hdr(mq, 0), 1 << 28)
    d = ins.describe_mq(seg, off)
    assert d["rings"] == [] and "ring 0" in d["problems"][0]


def test_queue_describe_reports_words_it_would_refuse() -> None:
    seg, _, mq = build_mq(16)
    mq.send_io(E.IO_TX, 1)
    seg.atomics.store32(q_at(mq, MUTEX + M_KIND), 0xB0)
    seg.atomics.store32(q_at(mq, COND + CV_WREFS), 8)
    d = mq.describe()
    assert any("__kind 0xb0" in p for p in d["problems"])
    assert any("__wrefs" in p for p in d["problems"])
    assert d["queue"]["pending_handles"] == [{"ring_index": 0, "elt_index": 0}]


# -- 4. events of the wrong ring -------------------------------------------------------------------
def _slot(ring: int, event_type: int, fill: int = 0) -> bytes:
    size = SESSION_EVENT_SIZE if ring == MqRing.IO_EVT else CTRL_EVENT_SLOT_SIZE
    return bytes([event_type]) + bytes([fill]) * (size - 1)


@pytest.mark.parametrize("event_type", [E.CTRL_CONNECTED, E.CTRL_ACCEPTED, 9, 39, 255])
def test_control_event_in_the_io_ring_is_refused(event_type: int) -> None:
    with pytest.raises(SharedMemoryError, match="in the IO ring"):
        events.decode(MqRing.IO_EVT, _slot(MqRing.IO_EVT, event_type))
    d = ins.describe_event(MqRing.IO_EVT, _slot(MqRing.IO_EVT, event_type))
    assert d["error_kind"] == "SharedMemoryError" and d["event_type"] == event_type


@pytest.mark.parametrize(
    "event_type", [E.IO_RX, E.IO_TX_MAIN, E.CTRL_RPC, E.CTRL_CLOSE, 35, 36, 200]
)
def test_events_that_do_not_belong_to_the_ctrl_ring_are_refused(event_type: int) -> None:
    with pytest.raises(SharedMemoryError):
        events.decode(MqRing.CTRL_EVT, _slot(MqRing.CTRL_EVT, event_type))


def test_vpp_internal_events_decode_only_where_asked_for() -> None:
    # VPP's worker mqs carry RPC/HALF_CLOSE/CLOSE/RESET in their IO ring, without a message;
    # an app mq never does, and a RESET without its message would break whoever handles it.
    for t in (E.CTRL_RPC, E.CTRL_HALF_CLOSE, E.CTRL_CLOSE, E.CTRL_RESET):
        ev = events.decode(MqRing.IO_EVT, _slot(MqRing.IO_EVT, t, 7))
        assert ev.type == t and ev.msg is None and ev.session_index is None
        assert ins.describe_event(MqRing.IO_EVT, _slot(MqRing.IO_EVT, t, 7))["type_name"]
        with pytest.raises(SharedMemoryError, match="in the IO ring"):
            events.decode(MqRing.IO_EVT, _slot(MqRing.IO_EVT, t, 7), vpp_internal=False)


def test_drain_refuses_vpp_internal_events() -> None:
    seg, _, mq = build_mq(16)
    mq.send_io(E.IO_RX, 1)
    seg.view[ring_hdr(mq, 0) + SVM_MSG_Q_RING_SHARED.size] = E.CTRL_RESET
    assert mq.pending()[0].type == E.CTRL_RESET  # shown when looked at
    with pytest.raises(SharedMemoryError, match="ring 0 slot 0: CTRL_RESET"):
        mq.drain()
    assert mq.size_now() == 0  # consumed and dropped: it cannot wedge the queue


@pytest.mark.parametrize("batch", [1, 3])
def test_an_undecodable_slot_is_dropped_and_reported_after_the_good_ones(batch: int) -> None:
    seg, _, mq = build_mq(16)
    for i in range(batch + 1):
        mq.send_io(E.IO_RX, i)
    # IO slot ``batch - 1`` becomes a CONNECTED event (type byte 13) in the IO ring.
    slot = ring_hdr(mq, 0) + SVM_MSG_Q_RING_SHARED.size + (batch - 1) * SESSION_EVENT_SIZE
    seg.view[slot] = E.CTRL_CONNECTED
    bad = f"ring 0 slot {batch - 1}: CTRL_CONNECTED"
    if batch > 1:  # the good ones before it first, then its error
        assert [ev.session_index for ev in mq.drain()] == list(range(batch - 1))
    with pytest.raises(SharedMemoryError, match=bad):
        mq.drain()
    assert [ev.session_index for ev in mq.drain()] == [batch]  # the rest, not lost
    assert mq.size_now() == 0


@settings(max_examples=300, deadline=None)
@given(
    ring=st.sampled_from([0, 1, 2, 7]),
    data=st.binary(min_size=0, max_size=300),
    vpp_internal=st.booleans(),
)
def test_decode_raises_nothing_but_shared_memory_error(
    ring: int, data: bytes, vpp_internal: bool
) -> None:
    try:
        ev = events.decode(ring, data, vpp_internal)
    except SharedMemoryError:
        return
    assert ev.ring == ring and ev.raw == data
    assert ev.msg is not None or ev.session_index is not None or vpp_internal
    ev.fields()
    assert ev.name


def test_every_payload_type_decodes_from_any_bytes() -> None:
    for event_type in CTRL_PAYLOADS:
        for fill in (0, 0x7F, 0xFF):
            ev = events.decode(MqRing.CTRL_EVT, _slot(MqRing.CTRL_EVT, event_type, fill))
            assert ev.msg is not None
            ins.describe_event(MqRing.CTRL_EVT, _slot(MqRing.CTRL_EVT, event_type, fill))


# -- 5. sweep: a few random words written into a valid queue ---------------------------------------
_QUEUE_WORDS = [
    *(MUTEX + o for o in range(0, 40, 4)),
    *(COND + o for o in range(0, 48, 4)),
    *(_Q.offset(f) for f in ("head", "tail", "cursize", "maxsize", "elsize")),
]
_VALUES = st.one_of(
    st.sampled_from(
        [
            0,
            1,
            2,
            3,
            8,
            9,
            16,
            0x90,
            0xB0,
            0x7FFFFFFE,
            0x7FFFFFFF,
            0x40000000,
            0x80000000,
            0xFFFFFFFF,
            0xFFFFFFF0,
        ]
    ),
    st.integers(0, 64),
    st.integers(0, 0xFFFFFFFF),
    st.just(-1),  # stands for this thread's TID (with or without the owner-died bit)
    st.just(-2),
)


def _tweak(value: int) -> int:
    tid = threading.get_native_id()
    return tid if value == -1 else tid | 0x40000000 if value == -2 else value


@st.composite
def _writes(draw: Any) -> list[tuple[str, int, int]]:
    """1-3 (area, offset, value): a queue-header word, a ring-header word, or a slot word."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        area = draw(st.sampled_from(["queue", "queue", "ring", "slot", "handle"]))
        if area == "queue":
            off = draw(st.sampled_from(_QUEUE_WORDS))
        elif area == "ring":
            off = draw(st.integers(0, 1)) * 100 + 4 * draw(st.integers(0, 4))
        else:
            off = 4 * draw(st.integers(0, 15))
        out.append((area, off, _tweak(draw(_VALUES))))
    return out


def _apply(seg: Segment, mq: MessageQueue, writes: list[tuple[str, int, int]]) -> None:
    base = mq.segment.fsh + mq.offset + SVM_MSG_Q_SHARED.size
    handles = base + _Q.size
    for area, off, value in writes:
        if area == "queue":
            at = base + off
        elif area == "ring":
            at = ring_hdr(mq, off // 100) + off % 100
        elif area == "handle":
            at = handles + off % (8 * mq.maxsize)
        else:
            at = ring_hdr(mq, 0) + SVM_MSG_Q_RING_SHARED.size + off
            seg.view[at] = value & 0xFF  # slot bytes are not aligned: one byte
            continue
        seg.atomics.store32(at, value)


_OPS: list[Any] = [
    lambda q: q.send_io(E.IO_TX, 3, timeout=0.05),
    lambda q: q.send_ctrl(E.CTRL_DISCONNECT, handle=4),
    lambda q: q.drain(),
    lambda q: q.wait(0),
    lambda q: q.describe(),
    lambda q: q.pending(),
    lambda q: q.size_now(),
    lambda q: q.drain(decode=False),
]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(writes=_writes(), mode=st.sampled_from([CONDVAR, EVENTFD]))
def test_hostile_words_give_only_pyvcl_errors(
    hang_guard: None, writes: list[tuple[str, int, int]], mode: str
) -> None:
    fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) if mode == EVENTFD else None
    try:
        seg, off, mq = build_mq(8, ((8, SESSION_EVENT_SIZE), (4, CTRL_EVENT_SLOT_SIZE)), eventfd=fd)
        mq.send_io(E.IO_RX, 1)
        mq.send_ctrl(E.CTRL_DISCONNECT, handle=2)
        _apply(seg, mq, writes)
        t0 = time.monotonic()
        attached: MessageQueue | None = None
        with contextlib.suppress(SharedMemoryError):
            attached = MessageQueue(seg, off, eventfd=fd)
        for q in [mq] if attached is None else [mq, attached]:
            q.stall_limit = 0.05
            q._mutex.dead_owner_grace = 0.02
            q._cond.wedged_after = 0.02
            for op in _OPS:
                with contextlib.suppress(VclError):
                    op(q)
        with contextlib.suppress(SharedMemoryError):  # handles or rings past the mapping
            ins.describe_mq(seg, off)
        assert time.monotonic() - t0 < 5
    finally:
        if fd is not None:
            os.close(fd)


# -- no false alarms ------------------------------------------------------------------------------
def test_threads_sharing_one_queue_object_raise_nothing(alarm: None) -> None:
    # Every thread's lock/unlock checks its own words; threads contending for the same
    # ProcessSharedMutex object must not take each other for corruption.
    _, _, mq = build_mq(8, ((8, SESSION_EVENT_SIZE), (4, CTRL_EVENT_SLOT_SIZE)))
    n, producers = 1500, 4
    errors: list[BaseException] = []
    got: list[tuple[int, int]] = []

    def produce(tag: int) -> None:
        try:
            for i in range(n):
                # odd tags take send_io's fast path (no timeout), even ones the general path
                mq.send_io(E.IO_TX, tag << 16 | i, timeout=None if tag % 2 else 10)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(producers)]
    for t in threads:
        t.start()
    while len(got) < n * producers and not errors:
        got += [(e.session_index >> 16, e.session_index & 0xFFFF) for e in mq.recv(timeout=10)]
    for t in threads:
        t.join()
    assert errors == []
    for tag in range(producers):
        assert [i for t, i in got if t == tag] == list(range(n))
    assert mq.skipped_signals == 0 and mq._mutex._holders == {}
