"""The producer side of `pyvcl.mq.queue.MessageQueue` (app -> VPP): `Producer.send`,
`send_ctrl`, and `send_io`, the IO event that follows a write, with a fast path of its own.

`send_io` is paid once per write that needs an event (each step of a request/response program),
so its usual case -- blocking, no timeout, room in the queue -- takes the producer lock and
fills the slot with the words it needs looked up once at attach: word indices into the region's
`AtomicRegion.words32` view for the heads, tails and cursizes, and the absolute addresses of the
two cursizes for the backend's fetch-and-add (`AtomicRegion.word_address`, checked there).  The
indices read from shared memory are checked before use as everywhere else; anything unusual
(full, a timeout, non-blocking) takes the general path.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..atomics import PeerStalled, ProcessSharedCond, ProcessSharedMutex, Words
from ..errors import LocalError, SharedMemoryError, Timeout, WouldBlock
from ..interrupts import interruptible
from ..wire.enums import MqRing, ring_for_event
from ..wire.mq import SVM_MSG_Q_MSG, SVM_MSG_Q_SHARED_QUEUE
from ..wire.session import SESSION_EVENT
from . import events
from .layout import Ring

_HANDLE = SVM_MSG_Q_MSG.codec  # {ring_index u32, elt_index u32}
_HANDLE_SIZE = _HANDLE.size  # one entry of the queue's handle array
# head/tail words are written by one side only (the consumer, or producers under the lock) and
# read by nobody else on the hot path, so plain accesses suffice; the release/acquire ordering
# comes from the atomic read-modify-write of cursize that follows/precedes them.
_U32 = SVM_MSG_Q_SHARED_QUEUE["head"].codec
# A whole IO slot in one pack: type, postponed 0, session index, and the rest of the union
# zeroed (an empty byte string is padded with zeros), as `events.encode_io` makes it.
_IO_SLOT = SESSION_EVENT.codec
_IO_RING = int(MqRing.IO_EVT)
_IO_EVENT_TYPES = events.IO_EVENT_TYPES
_BACKOFF_MIN, _BACKOFF_MAX = 50e-6, 2e-3  # producer sleeps while an mq is full

# What a producer copies into a slot: encoded bytes, or an IO event's (type, session index).
_Payload = bytes | bytearray | memoryview | tuple[int, int]


class Producer:
    """The producer half of `MessageQueue` (a mixin: the queue's attributes are its own)."""

    name: str
    eventfd: int | None
    maxsize: int
    n_rings: int
    stall_limit: float
    recovered_owner_deaths: int
    _a: Any
    _view: memoryview
    _rings: list[Ring]
    _q_tail: int
    _q_head: int
    _q_cursize: int
    _q_data: int
    _mutex: ProcessSharedMutex
    _cond: ProcessSharedCond
    _prod_lock: threading.Lock
    # send_io's fast path (_init_producer): the words view, and in one tuple (one attribute
    # read): word indices of queue cursize and tail and IO ring cursize and tail, the IO
    # ring's nitems, slots offset and slot size, and the addresses of the two cursizes.
    _words: Words
    _io_fast: tuple[int, int, int, int, int, int, int, int, int]
    _qc_word: int  # the queue cursize's word and address, for the consumer too
    _qc_addr: int
    _inc_pair: Callable[[int, int], int]

    if TYPE_CHECKING:

        def _bad(self, what: str) -> SharedMemoryError: ...
        def _signal(self, consumer: bool) -> None: ...
        def _lock_mutex(self, timeout: float | None = None) -> None: ...

    def _init_producer(self) -> None:
        """Look up what `send_io`'s fast path needs (the queue and ring headers never move);
        `SharedMemoryError` for a word that is out of the mapping or misaligned."""
        a = self._a
        io = self._rings[_IO_RING]
        for off in (self._q_cursize, self._q_tail, io.cursize, io.tail):
            a.word_address(off, 4)  # in the region and aligned, so off >> 2 is its word
        self._words = a.words32()
        self._qc_word, self._qc_addr = self._q_cursize >> 2, a.word_address(self._q_cursize, 4)
        self._io_fast = (
            self._qc_word,
            self._q_tail >> 2,
            io.cursize >> 2,
            io.tail >> 2,
            io.nitems,
            io.data,
            io.elsize,
            a.word_address(io.cursize, 4),
            self._qc_addr,
        )
        inc_pair = a.raw_ops().fetch_inc_pair32
        assert inc_pair is not None  # every backend has one (pyvcl.atomics.backends)
        self._inc_pair = inc_pair

    def send(
        self,
        data: bytes | bytearray | memoryview,
        ring: int | None = None,
        timeout: float | None = None,
        block: bool = True,
    ) -> None:
        """Post one message: ``data`` is copied into a zeroed slot of ``ring`` (by default the
        ring of its event type, byte 0).  Pass `events.encode_io` / `encode_ctrl` output.

        Blocks while the queue or the ring is full, up to ``timeout`` seconds (`Timeout`), and
        in any case gives up with `PeerStalled` once the consumer has consumed nothing for
        `stall_limit` seconds; with ``block=False`` a full queue/ring or a busy lock raises
        `WouldBlock`.  Shared words that could hang or crash us raise `SharedMemoryError`
        before anything is queued.
        """
        n = len(data)
        if n == 0:
            raise LocalError(f"{self.name}: empty message")
        r = int(ring_for_event(data[0])) if ring is None else ring
        if not 0 <= r < self.n_rings:
            raise LocalError(f"{self.name}: no ring {r}")
        rg = self._rings[r]
        if n > rg.elsize:
            raise LocalError(f"{self.name}: {n}-byte message does not fit ring {r} ({rg.elsize})")
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.eventfd is None:
            self._send_condvar(rg, data, deadline, block)
        else:
            self._send_eventfd(rg, data, deadline, block)

    def _room(self, rg: Ring) -> int:
        """-1 if the queue or ring ``rg`` is full, else the queue's cursize (0: this message
        will make it non-empty, and signal)."""
        a = self._a
        qsize = a.load32(self._q_cursize)
        rsize = a.load32(rg.cursize)
        if qsize > self.maxsize or rsize > rg.nitems:
            raise self._bad(f"queue cursize {qsize} / ring {rg.index} cursize {rsize} too large")
        return -1 if qsize == self.maxsize or rsize == rg.nitems else int(qsize)

    def _full(self, rg: Ring) -> bool:
        return self._room(rg) < 0

    def _send_condvar(self, rg: Ring, data: _Payload, deadline: float | None, block: bool) -> None:
        mutex = self._mutex
        waited: list[Any] = []
        backoff = _BACKOFF_MIN
        while True:
            if block:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._lock_mutex(left)
            elif not mutex.trylock():  # (recoveries from a dead owner are not reported here)
                raise WouldBlock(f"{self.name}: queue lock busy")
            try:
                room = self._room(rg)
                if room >= 0:
                    if room == 0:  # the publish will broadcast: refuse bad words before it
                        self._cond.check()
                    self._put(rg, data)
                    return
            finally:
                mutex.unlock()
            if not block:
                raise WouldBlock(f"{self.name}: queue or ring {rg.index} full")
            # Wait for room without the condvar (see the module notes): the consumer still
            # broadcasts on full->not-full for C peers; we re-check after a short sleep.
            backoff = self._wait_for_room(rg, deadline, backoff, waited)

    @interruptible
    def _wait_for_room(
        self, rg: Ring, deadline: float | None, backoff: float, waited: list[Any]
    ) -> float:
        """One sleep of a producer that found ``rg`` or the queue full; raises `Timeout` at the
        deadline and `PeerStalled` once the consumer indices stood still for `stall_limit`.
        ``waited`` carries [consumer indices, since when] between calls."""
        now = time.monotonic()
        view = self._view
        mark = (_U32.unpack_from(view, self._q_head)[0], _U32.unpack_from(view, rg.head)[0])
        if not waited or waited[0] != mark:
            waited[:] = [mark, now]
        elif now - waited[1] >= self.stall_limit:
            raise PeerStalled(
                f"{self.name}: the consumer (VPP) has not consumed anything for "
                f"{now - waited[1]:.1f} s; queue or ring {rg.index} still full (queue cursize "
                f"{self._a.load32(self._q_cursize)}/{self.maxsize}, ring cursize "
                f"{self._a.load32(rg.cursize)}/{rg.nitems})"
            )
        pause = backoff
        if deadline is not None:
            left = deadline - now
            if left <= 0:
                raise Timeout(f"{self.name}: queue or ring {rg.index} still full")
            pause = min(pause, left)
        time.sleep(min(pause, self.stall_limit))
        return min(backoff * 2, _BACKOFF_MAX)

    def _send_eventfd(
        self,
        rg: Ring,
        data: _Payload,
        deadline: float | None,
        block: bool,
    ) -> None:
        lock = self._prod_lock
        backoff = _BACKOFF_MIN
        waited: list[Any] = []
        while True:
            if block:
                left = self.stall_limit
                if deadline is not None:
                    left = min(left, max(0.0, deadline - time.monotonic()))
                if not lock.acquire(True, left):
                    raise Timeout(f"{self.name}: producer lock not acquired within {left:.3g} s")
            elif not lock.acquire(False):
                raise WouldBlock(f"{self.name}: queue lock busy")
            try:
                if not self._full(rg):
                    self._put(rg, data)
                    return
            finally:
                lock.release()
            if not block:
                raise WouldBlock(f"{self.name}: queue or ring {rg.index} full")
            # Waiting for room without reading the eventfd: it is also the consumer's wake-up
            # (VPP's own epoll on its VPP_MQ_EVENTFD), and stealing a count can leave VPP's
            # blocking read() parked.  Poll the shared state with a short backoff instead.
            backoff = self._wait_for_room(rg, deadline, backoff, waited)

    def _put(self, rg: Ring, data: _Payload) -> None:
        """Reserve a slot, fill it, enqueue its handle (lock held, room checked).

        The slot and the handle are written into free space first and published last (ring
        tail + cursize, then queue tail + cursize), in svm_msg_q_alloc_msg_w_ring /
        svm_msg_q_add_raw order, so a producer dying before the publish leaves no trace."""
        view = self._view
        t = _U32.unpack_from(view, rg.tail)[0]
        if t >= rg.nitems:
            raise self._bad(f"ring {rg.index} tail {t} >= {rg.nitems}")
        qt = _U32.unpack_from(view, self._q_tail)[0]
        if qt >= self.maxsize:
            raise self._bad(f"queue tail {qt} >= {self.maxsize}")
        slot = rg.data + t * rg.elsize
        if isinstance(data, tuple):  # an IO event (send_io): (event_type, session_index)
            _IO_SLOT.pack_into(view, slot, data[0], 0, data[1], b"")
        else:
            n = len(data)
            if n < rg.elsize:
                view[slot : slot + rg.elsize] = rg.zero
            view[slot : slot + n] = data
        _HANDLE.pack_into(view, self._q_data + qt * _HANDLE_SIZE, rg.index, t)
        self._publish(rg, t, qt)

    def _publish(self, rg: Ring, t: int, qt: int) -> None:
        a, put, view = self._a, _U32.pack_into, self._view
        put(view, rg.tail, (t + 1) % rg.nitems)
        a.fetch_add32(rg.cursize, 1)
        put(view, self._q_tail, (qt + 1) % self.maxsize)
        if a.fetch_add32(self._q_cursize, 1) == 0:
            self._signal(consumer=False)

    def send_io(
        self,
        event_type: int,
        session_index: int,
        timeout: float | None = None,
        block: bool = True,
    ) -> None:
        """An IO event (``app_send_io_evt_to_vpp``): type + session index in ring 0.  Blocks
        and fails as `send` does."""
        if event_type not in _IO_EVENT_TYPES:
            raise ValueError(f"event type {event_type} is not an IO event")
        if block and timeout is None:  # the usual call: lock, room?, fill, publish, unlock
            if self.eventfd is None:
                mutex = self._mutex
                mutex.hold_limit = self.stall_limit
                if mutex.lock():
                    self.recovered_owner_deaths += 1
                try:
                    if self._put_io(event_type, session_index):
                        return
                finally:
                    mutex.unlock()
            else:
                lock = self._prod_lock
                if lock.acquire(False):
                    try:
                        if self._put_io(event_type, session_index):
                            return
                    finally:
                        lock.release()
        # Full, busy, a timeout or non-blocking: the general path waits and fails as `send`.
        rg = self._rings[_IO_RING]
        deadline = None if timeout is None else time.monotonic() + timeout
        io = (event_type, session_index)
        if self.eventfd is None:
            self._send_condvar(rg, io, deadline, block)
        else:
            self._send_eventfd(rg, io, deadline, block)

    def _put_io(self, event_type: int, session_index: int) -> bool:
        """`_room` + `_put` + `_publish` of an IO event in one (producer lock held); False, with
        nothing written, if the queue or the IO ring is full."""
        w = self._words
        qc_w, qt_w, rc_w, rt_w, nitems, slots, elsize, rc_addr, qc_addr = self._io_fast
        try:
            qsize = w[qc_w]
        except ValueError:  # the words view is released when the region is
            raise LocalError(f"{self.name}: used after its segment was closed") from None
        rsize = w[rc_w]
        t = w[rt_w]
        qt = w[qt_w]
        maxsize = self.maxsize
        if qsize >= maxsize or rsize >= nitems or t >= nitems or qt >= maxsize:
            if qsize > maxsize or rsize > nitems:
                raise self._bad(f"queue cursize {qsize} / ring 0 cursize {rsize} too large")
            if t >= nitems:
                raise self._bad(f"ring 0 tail {t} >= {nitems}")
            if qt >= maxsize:
                raise self._bad(f"queue tail {qt} >= {maxsize}")
            return False
        # Empty -> non-empty signals: in condvar mode refuse bad condvar words before queueing,
        # and learn whether anyone waits (nobody can start waiting while we hold the mutex).
        condvar = self.eventfd is None
        waiters = condvar and not qsize and self._cond.check()
        view = self._view
        try:
            _IO_SLOT.pack_into(view, slots + t * elsize, event_type, 0, session_index, b"")
        except struct.error:
            raise ValueError(f"session index {session_index} is not a u32") from None
        _HANDLE.pack_into(view, self._q_data + qt * _HANDLE_SIZE, _IO_RING, t)
        # Publish: the tails, then the ring's cursize and last the queue's, in one call.  VPP
        # (svm_msg_q_add_raw) moves the queue tail after the ring cursize; nothing orders
        # them: producers read neither tail outside the mutex, and a consumer reads nothing of
        # this message before the queue cursize says it is there.
        t += 1
        w[rt_w] = 0 if t == nitems else t
        qt += 1
        w[qt_w] = 0 if qt == maxsize else qt
        if self._inc_pair(rc_addr, qc_addr) == 0 and (waiters or qsize or not condvar):
            self._signal(consumer=False)
        return True

    def send_ctrl(
        self, event_type: int, *, timeout: float | None = None, block: bool = True, **fields: Any
    ) -> None:
        """A ctrl event in ring 1: the payload of ``event_type`` built from ``fields``.  Blocks
        and fails as `send` does."""
        self.send(events.encode_ctrl(event_type, **fields), MqRing.CTRL_EVT, timeout, block)
