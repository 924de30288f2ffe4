"""The svm message queue, read and written in place (protocol.md section 5).

A `MessageQueue` is attached at an fsh-relative offset of a `Segment`: ``svm_msg_q_shared_t``,
the queue header (glibc mutex + condvar, head/tail/cursize/maxsize) followed by ``maxsize``
8-byte handles ``{ring_index, elt_index}``, then ring 0 (18-byte IO slots) and ring 1 (256-byte
ctrl slots) back to back.  Everything read from the header is validated at attach, and every
index read later (queue head/tail, ring head/tail, handles) is checked again before use: a bad
value raises `SharedMemoryError`, never an access outside the mapping.

Two signalling modes (5.5), picked at attach:

* **eventfd** (``eventfd=fd``): the app worker mq with ``MQ_EVENTFD``, or a VPP worker mq with
  VPP's ``VPP_MQ_EVENTFD`` (private rx mqs).  Producers are serialised by a process-local lock
  (the shared mutex is never touched, as in VPP); the producer writes the fd on empty->non-empty,
  the consumer on full->not-full, and the consumer polls + reads the fd to wait.
* **condvar** (no fd): producers take the shared robust mutex and broadcast the condvar under
  it on empty->non-empty; the consumer locks, broadcasts, unlocks on full->not-full.  Nobody
  here ever *waits* on the condvar: a consumer waiting for messages and a producer waiting for
  room poll ``cursize`` with short sleeps (glibc's condvar wait re-acquires locks inside it with
  no timeout, so words written by another process could hold us there forever; see
  docs/atomics.md, "Hostile memory").  The mutex is never held outside those few calls.

Every wait is bounded and interruptible (Ctrl-C): a producer finding no room for
`MessageQueue.stall_limit` seconds without the consumer making progress raises `PeerStalled`,
whatever its timeout, and so does a shared mutex held that long.  Waiting for messages
(`MessageQueue.wait`, `recv` without a timeout) is the one wait without an end, but nothing in
shared memory can stretch any single step of it.

The app is the only consumer of its worker mq and one producer among many of VPP's mqs.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from ..atomics import VPP_MUTEX_KIND, PeerStalled, ProcessSharedCond, ProcessSharedMutex
from ..errors import LocalError, SharedMemoryError, Timeout, VclError
from ..segment import Segment
from ..wire.enums import MqRing
from ..wire.mq import (
    PTHREAD_COND_FIELDS,
    PTHREAD_MUTEX_FIELDS,
    SVM_MSG_Q_SHARED,
    SVM_MSG_Q_SHARED_QUEUE,
)
from . import events
from .events import Event
from .layout import QueueState, Ring, RingState, read_layout
from .producer import _HANDLE, _HANDLE_SIZE, _U32, Producer
from .waiting import Waiter, WaitResult, poll_fds

__all__ = ["CONDVAR", "EVENTFD", "MessageQueue", "PeerStalled", "WaitResult"]

EVENTFD = "eventfd"
CONDVAR = "condvar"

_SMQ = SVM_MSG_Q_SHARED
_Q = SVM_MSG_Q_SHARED_QUEUE

_ONE = (1).to_bytes(8, "little")  # an eventfd write of 1
_IO_RING = int(MqRing.IO_EVT)
_IO_TYPES_END = events.IO_TYPES_END
_IO_INDEX, _IO_INDEX_AT = events.IO_INDEX_CODEC, events.IO_INDEX_AT
# Event(...) without the Python-level __new__ a named tuple gets: half the cost, same object.
_new_tuple = tuple.__new__
_LOW32 = 0xFFFFFFFF  # the first word's old value in fetch_dec_pair32's result
_SIGNAL_LOCK = 0.2  # longest a consumer waits for the mutex to signal producers (else: owed)


class MessageQueue(Producer):
    """An svm message queue at fsh-relative ``offset`` in ``segment``.

    ``eventfd`` selects eventfd signalling (the fd stays owned by the caller; as VCL does, the
    consumer side sets it non-blocking).  Without it the queue's shared mutex/condvar are used.
    """

    #: Seconds a producer waits for room without the consumer (VPP) consuming anything, and a
    #: shared mutex may stay held, before `PeerStalled`.  Applies whatever the timeout, also to
    #: ``timeout=None`` and to callers that rely on it.  Set on the class or on one queue.
    stall_limit = 5.0
    #: Longest sleep between two looks at ``cursize`` while a condvar-mode `wait` polls for
    #: messages (it starts at 20 us and doubles): the latency bound of an idle condvar consumer.
    poll_max = 0.002

    def __init__(
        self, segment: Segment, offset: int, *, eventfd: int | None = None, name: str = ""
    ) -> None:
        self.segment = segment
        self.offset = offset
        self.name = name or f"mq@{offset:#x}"
        self.eventfd = eventfd
        self.mode = CONDVAR if eventfd is None else EVENTFD
        self.recovered_owner_deaths = 0  # EOWNERDEAD recoveries seen by this process
        view = segment.view
        self._view = view
        layout = read_layout(segment, offset, self.name)
        q, rings = layout.q, layout.rings
        self.maxsize = layout.maxsize
        self.n_rings = len(rings)
        self._q = q
        self._q_head = q + _Q.offset("head")
        self._q_tail = q + _Q.offset("tail")
        self._q_cursize = q + _Q.offset("cursize")
        self._q_data = layout.handles
        self._rings = rings
        self._slot_bounds = [(rg.data, rg.elsize) for rg in rings]
        self.size = layout.size  # svm_msg_q_size_to_alloc
        self._a = segment.atomics
        q_rel = offset + _SMQ.size
        self._mutex = ProcessSharedMutex(
            self._a,
            q + _Q.offset("mutex"),
            name=f"{self.name}: mutex at fsh offset {q_rel + _Q.offset('mutex'):#x}",
        )
        self._cond = ProcessSharedCond(
            self._a,
            q + _Q.offset("condvar"),
            name=f"{self.name}: condvar at fsh offset {q_rel + _Q.offset('condvar'):#x}",
        )
        if self.mode == CONDVAR:
            kind = int(PTHREAD_MUTEX_FIELDS["__kind"].get(view, q + _Q.offset("mutex")))
            if kind != VPP_MUTEX_KIND:
                raise SharedMemoryError(
                    f"{self.name}: mutex __kind {kind:#x} is not the robust, process-shared "
                    f"mutex VPP makes ({VPP_MUTEX_KIND:#x})"
                )
            self._cond._check_wrefs()
        self._prod_lock = threading.Lock()  # eventfd mode: the producers' lock
        self._cons_lock = threading.Lock()  # one consumer at a time within this process
        self._fd_nonblocking = False
        self._waiter = Waiter()
        self._undecodable_error: SharedMemoryError | None = None  # for the next drain
        self._signal_owed = False  # a consumer broadcast that could not be made (_signal)
        self._signal_error: VclError | None = None  # ... and why
        self.skipped_signals = 0  # broadcasts skipped: a dead/frozen peer wedged the condvar
        # Indices in shared memory must be sane now; they are re-checked on every use.
        self._queue_indices()
        for ring in rings:
            self._ring_indices(ring)
        self._init_producer()
        self._init_consumer()

    def _init_consumer(self) -> None:
        """What `_drain_one` needs, looked up once (after `_init_producer`, which checked the
        queue's words): the queue head's word, and per ring its head and cursize words, the
        cursize's address, its slots, slot size and item count."""
        a = self._a
        for off in (self._q_head, *(rg.head for rg in self._rings)):
            a.word_address(off, 4)  # in the region and aligned, so off >> 2 is its word
        self._qh_word = self._q_head >> 2
        self._ring_fast = [
            (
                rg.head >> 2,
                rg.cursize >> 2,
                a.word_address(rg.cursize, 4),
                rg.data,
                rg.elsize,
                rg.nitems,
            )
            for rg in self._rings
        ]
        dec_pair = a.raw_ops().fetch_dec_pair32
        assert dec_pair is not None  # every backend has one (pyvcl.atomics.backends)
        self._dec_pair = dec_pair

    # -- small helpers -------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"<MessageQueue {self.name} {self.mode} maxsize={self.maxsize} "
            f"rings={[(r.nitems, r.elsize) for r in self._rings]}>"
        )

    def _bad(self, what: str) -> SharedMemoryError:
        return SharedMemoryError(f"{self.name}: {what}")

    def _queue_indices(self) -> tuple[int, int, int]:
        a = self._a
        get, view = _U32.unpack_from, self._view
        head, tail = get(view, self._q_head)[0], get(view, self._q_tail)[0]
        size = a.load32(self._q_cursize)
        if head >= self.maxsize or tail >= self.maxsize or size > self.maxsize:
            raise self._bad(
                f"queue head {head} / tail {tail} / cursize {size} invalid for maxsize "
                f"{self.maxsize}"
            )
        return head, tail, size

    def _ring_indices(self, ring: Ring) -> tuple[int, int, int]:
        a = self._a
        get, view = _U32.unpack_from, self._view
        head, tail = get(view, ring.head)[0], get(view, ring.tail)[0]
        size = a.load32(ring.cursize)
        if head >= ring.nitems or tail >= ring.nitems or size > ring.nitems:
            raise self._bad(
                f"ring {ring.index} head {head} / tail {tail} / cursize {size} invalid for "
                f"{ring.nitems} items"
            )
        return head, tail, size

    def ring_nitems(self, ring: int) -> int:
        return self._rings[ring].nitems

    def ring_elsize(self, ring: int) -> int:
        return self._rings[ring].elsize

    def size_now(self) -> int:
        """Messages in the queue now (``cursize``)."""
        n = self._a.load32(self._q_cursize)
        if n > self.maxsize:
            raise self._bad(f"queue cursize {n} > maxsize {self.maxsize}")
        return int(n)

    def head_now(self) -> int:
        """The consumer's position in the queue (``head``), read now: it moves only when a
        consumer takes messages, so an unchanged head with messages waiting says nobody did."""
        return int(self._words[self._qh_word])

    def fileno(self) -> int:
        """The eventfd (eventfd mode only), for selectors/asyncio.  When it is readable call
        `clear_signal` and then `drain` until it returns nothing."""
        if self.eventfd is None:
            raise LocalError(f"{self.name}: a condvar-mode queue has no file descriptor")
        return self.eventfd

    def close(self) -> None:
        """Forget the segment (the eventfd stays the caller's).  Idempotent."""
        self._waiter.forget()

    # -- signalling ----------------------------------------------------------------------------
    def _lock_mutex(self, timeout: float | None = None) -> None:
        """Lock the shared mutex within ``timeout`` (`Timeout`), or, without one, within
        `stall_limit` (`PeerStalled`)."""
        mutex = self._mutex
        mutex.hold_limit = self.stall_limit
        if mutex.lock(timeout):
            self.recovered_owner_deaths += 1

    def _signal(self, consumer: bool) -> None:
        """svm_msg_q_send_signal: condvar broadcast (the consumer takes the mutex for it, a
        producer already holds it) or one eventfd write.  Never raises: a producer's broadcast
        that the condvar's words forbid is skipped and counted (the message is already queued,
        and `send` checked those words before queueing it); a consumer's is owed, and made, or
        its error raised, by the next `drain`."""
        fd = self.eventfd
        if fd is None:
            if consumer:
                try:
                    self._consumer_broadcast()
                except VclError as e:
                    self._signal_owed, self._signal_error = True, e
                return
            try:
                if not self._cond.broadcast():
                    self.skipped_signals += 1
            except VclError:
                self.skipped_signals += 1
            return
        with contextlib.suppress(BlockingIOError):  # counter at its maximum: already signalled
            os.write(fd, _ONE)

    def _consumer_broadcast(self) -> None:
        """Lock, broadcast, unlock.  The mutex is waited for at most _SIGNAL_LOCK: a peer
        holding it that long makes the broadcast owed (`Timeout`)."""
        self._lock_mutex(_SIGNAL_LOCK)
        try:
            if not self._cond.broadcast():
                self.skipped_signals += 1
        finally:
            self._mutex.unlock()
        self._signal_owed, self._signal_error = False, None

    def _pay_owed_signal(self) -> None:
        """Make a consumer broadcast owed by an earlier `drain`; raise what stops it unless the
        mutex is only busy (then it stays owed)."""
        try:
            self._consumer_broadcast()
        except Timeout:
            pass
        except VclError as e:
            self._signal_error = e
            raise

    def _consumer_fd(self) -> int:
        fd = self.eventfd
        assert fd is not None
        if not self._fd_nonblocking:
            # VCL does the same (vcl_mq_epoll_add_evfd): a read racing another reader of the
            # shared eventfd must never block.
            os.set_blocking(fd, False)
            self._fd_nonblocking = True
        return fd

    def resignal(self) -> None:
        """Set the eventfd again (eventfd mode; nothing in condvar mode): for a consumer
        leaving messages queued after its signal was reset.  VPP signals only when the queue
        goes from empty to non-empty, so messages queued while a `drain` ran raise none; a
        consumer that reset the signal and does not drain again must set it for whoever
        sleeps on it next."""
        if self.eventfd is not None:
            with contextlib.suppress(BlockingIOError):  # at its maximum: set already
                os.write(self.eventfd, _ONE)

    def clear_signal(self) -> int:
        """Reset the eventfd (eventfd mode) and return its counter (0 if it was not set).
        Call before `drain` when a selector reported `fileno` readable."""
        if self.eventfd is None:
            return 0
        try:
            return int.from_bytes(os.read(self._consumer_fd(), 8), "little")
        except BlockingIOError:
            return 0

    # -- consumer side (VPP -> app) ------------------------------------------------------------
    def drain(self, max_n: int | None = None, decode: bool = True) -> list[Any]:
        """Dequeue up to ``max_n`` (default: all) pending messages without blocking.

        Returns `Event` objects, or ``(ring, slot_bytes)`` with ``decode=False``.  Every handle
        is validated before anything is consumed, so a bad handle or index raises
        `SharedMemoryError` with the queue untouched.  A slot that does not decode (a message
        VPP would never send) is consumed and dropped, so it cannot wedge the queue: the
        messages before it are returned, and its `SharedMemoryError` (naming the ring and slot)
        is raised by this call if none came before it, else by the next one.
        """
        with self._cons_lock:
            if self._undecodable_error is not None:
                err, self._undecodable_error = self._undecodable_error, None
                raise err
            if self._signal_owed:
                self._pay_owed_signal()
            a, view, maxsize = self._a, self._view, self.maxsize
            try:
                size = self._words[self._qc_word]
            except ValueError:  # the words view is released when the region is
                raise LocalError(f"{self.name}: used after its segment was closed") from None
            if size == 0:
                return []
            if size > maxsize:
                raise self._bad(f"queue cursize {size} > maxsize {maxsize}")
            n = size if max_n is None or max_n >= size else max(0, max_n)
            if n == 0:
                return []
            if n == 1:
                return self._drain_one(decode)
            get, put = _U32.unpack_from, _U32.pack_into
            head = get(view, self._q_head)[0]
            if head >= maxsize:
                raise self._bad(f"queue head {head} >= maxsize {maxsize}")
            handles = self._read_handles(head, n)
            rings = self._rings
            n_rings = self.n_rings
            # Validate the whole batch first: ring and element in range, and each ring's
            # elements consumed in order from its head (svm_msg_q_free_msg's rule).
            heads = [-1] * n_rings
            counts = [0] * n_rings
            for r, e in handles:
                if r >= n_rings:
                    raise self._bad(f"handle names ring {r} of {n_rings}")
                rg = rings[r]
                if e >= rg.nitems:
                    raise self._bad(f"handle names element {e} of ring {r} ({rg.nitems} items)")
                h = heads[r]
                if h < 0:
                    h = get(view, rg.head)[0]
                    if h >= rg.nitems:
                        raise self._bad(f"ring {r} head {h} >= {rg.nitems}")
                if h != e:
                    raise self._bad(f"message out of order: ring {r} element {e}, head {h}")
                heads[r] = (h + 1) % rg.nitems
                counts[r] += 1
            for rg in rings:
                k = counts[rg.index]
                if k:
                    c = a.load32(rg.cursize)
                    if not k <= c <= rg.nitems:
                        raise self._bad(f"ring {rg.index} cursize {c} with {k} messages pending")
            raws = []
            for r, e in handles:
                base, size_ = self._slot_bounds[r]
                slot = base + e * size_
                raws.append((r, bytes(view[slot : slot + size_])))
            out: list[Any] = raws
            bad: SharedMemoryError | None = None
            if decode:
                dec = events.decode
                try:  # IO events decoded inline, as in _drain_one
                    out = [
                        _new_tuple(
                            Event,
                            (raw[0], r, _IO_INDEX.unpack_from(raw, _IO_INDEX_AT)[0], None, raw),
                        )
                        if r == _IO_RING and raw[0] < _IO_TYPES_END
                        else dec(r, raw, False)
                        for r, raw in raws
                    ]
                except SharedMemoryError:
                    out, bad, n = self._decode_until_bad(handles, raws)
                    heads, counts = self._heads_after(handles[:n], rings)
            # Consume the handles (svm_msg_q_sub_raw_batch), then free the slots (copied
            # above): each ring's head moves over its slots in order and its cursize drops once.
            put(view, self._q_head, (head + n) % maxsize)
            need_signal = a.fetch_sub32(self._q_cursize, n) == maxsize
            for rg in rings:
                k = counts[rg.index]
                if k:
                    put(view, rg.head, heads[rg.index])
                    if a.fetch_sub32(rg.cursize, k) >= rg.nitems:  # was full: wake producers
                        need_signal = True
            if need_signal:
                self._signal(consumer=True)
            if bad is not None:
                if not out:
                    raise bad
                self._undecodable_error = bad
            return out

    def _decode_until_bad(
        self, handles: list[tuple[int, int]], raws: list[tuple[int, bytes]]
    ) -> tuple[list[Event], SharedMemoryError, int]:
        """The events before the first slot that does not decode, its error, and how many
        messages to consume (those events and the bad slot)."""
        out: list[Event] = []
        for (r, e), (_, raw) in zip(handles, raws, strict=True):
            try:
                out.append(events.decode(r, raw, False))
            except SharedMemoryError as err:
                return out, self._bad(f"ring {r} slot {e}: {err.strerror}"), len(out) + 1
        raise AssertionError("a slot failed to decode, then decoded")  # pragma: no cover

    def _heads_after(
        self, handles: list[tuple[int, int]], rings: list[Ring]
    ) -> tuple[list[int], list[int]]:
        """Each ring's head after consuming ``handles`` (validated in order), and counts."""
        get = _U32.unpack_from
        heads = [-1] * self.n_rings
        counts = [0] * self.n_rings
        for r, _ in handles:
            rg = rings[r]
            h = heads[r] if heads[r] >= 0 else get(self._view, rg.head)[0]
            heads[r] = (h + 1) % rg.nitems
            counts[r] += 1
        return heads, counts

    def _drain_one(self, decode: bool) -> list[Any]:
        """`drain` of exactly one message, the usual case on the data path: the same checks
        and order as the batch path, without its bookkeeping (consumer lock held), through
        the words and addresses looked up at attach (`_init_consumer`)."""
        w, view, maxsize = self._words, self._view, self.maxsize
        head = w[self._qh_word]
        if head >= maxsize:
            raise self._bad(f"queue head {head} >= maxsize {maxsize}")
        r, e = _HANDLE.unpack_from(view, self._q_data + head * _HANDLE_SIZE)
        if r >= self.n_rings:
            raise self._bad(f"handle names ring {r} of {self.n_rings}")
        head_word, cursize_word, cursize_addr, slots, elsize, nitems = self._ring_fast[r]
        if e >= nitems:
            raise self._bad(f"handle names element {e} of ring {r} ({nitems} items)")
        h = w[head_word]
        if h >= nitems:
            raise self._bad(f"ring {r} head {h} >= {nitems}")
        if h != e:
            raise self._bad(f"message out of order: ring {r} element {e}, head {h}")
        c = w[cursize_word]
        if not 1 <= c <= nitems:
            raise self._bad(f"ring {r} cursize {c} with 1 messages pending")
        slot = slots + e * elsize
        raw = bytes(view[slot : slot + elsize])
        out: list[Any]
        bad: SharedMemoryError | None = None
        if not decode:
            out = [(r, raw)]
        elif r == _IO_RING and raw[0] < _IO_TYPES_END:
            # events.decode's IO case, inline (the slot is session_event_t-sized: read_layout
            # refused any other ring 0 slot size).
            idx = _IO_INDEX.unpack_from(raw, _IO_INDEX_AT)[0]
            out = [_new_tuple(Event, (raw[0], r, idx, None, raw))]
        else:
            try:
                out = [events.decode(r, raw, False)]
            except SharedMemoryError as exc:  # consumed and dropped, then reported
                bad = self._bad(f"ring {r} slot {e}: {exc.strerror}")
        # Free it: both heads, then the queue's cursize and the ring's in one call (the heads
        # are read by nobody but this consumer; producers look at the cursizes).
        head += 1
        w[self._qh_word] = 0 if head == maxsize else head
        h += 1
        w[head_word] = 0 if h == nitems else h
        old = self._dec_pair(self._qc_addr, cursize_addr)
        if old & _LOW32 == maxsize or old >> 32 >= nitems:  # was full: wake producers
            self._signal(consumer=True)
        if bad is not None:
            raise bad
        return out

    def _read_handles(self, head: int, n: int) -> list[tuple[int, int]]:
        view, data = self._view, self._q_data
        first = min(n, self.maxsize - head)
        start = data + head * _HANDLE_SIZE
        handles = list(_HANDLE.iter_unpack(view[start : start + first * _HANDLE_SIZE]))
        if first < n:
            handles += _HANDLE.iter_unpack(view[data : data + (n - first) * _HANDLE_SIZE])
        return handles

    def wait(self, timeout: float | None = None, also_fds: Iterable[int] = ()) -> WaitResult:
        """Block until messages are pending, one of ``also_fds`` (e.g. the app socket, to
        notice VPP going away) is readable/hung up, or ``timeout`` expires.

        eventfd mode polls the eventfd with the fds and reads it to reset it; condvar mode
        polls ``cursize`` (and the fds) with sleeps from 20 us growing to `poll_max`, never
        touching the mutex or condvar.  ``timeout=None`` waits until something happens, in
        bounded, interruptible steps.  Returns at once if messages are already pending.
        Spurious returns are possible only when nothing is pending and no fd fired, i.e. on
        timeout.
        """
        fds = tuple(also_fds)
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.size_now():
            return WaitResult(True, poll_fds(fds, 0) if fds else ())
        if self.eventfd is None:
            return self._waiter.poll_cursize(deadline, fds, self.size_now, self.poll_max)
        return self._waiter.wait_eventfd(deadline, fds, self.size_now, self._consumer_fd())

    def recv(self, timeout: float | None = None, max_n: int | None = None) -> list[Event]:
        """Wait for and return all pending events (up to ``max_n``); `Timeout` if none
        arrived within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            got: list[Event] = self.drain(max_n)
            if got:
                return got
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(f"{self.name}: no message within {timeout} s")
            self.wait(left)

    # -- inspection (pyvcl.mq.describe) ---------------------------------------------------------
    def read_state(self) -> QueueState:
        """The queue's header and ring words as they are now, as plain data: reads only, and
        never raises for bad indices (reporting them is the caller's business: `describe`).
        Racy against live peers by nature."""
        get, view, a, seg = _U32.unpack_from, self._view, self._a, self.segment
        rings = tuple(
            RingState(
                index=rg.index,
                fsh_offset=seg.offset_of(rg.hdr),
                data_fsh_offset=seg.offset_of(rg.data),
                nitems=rg.nitems,
                elsize=rg.elsize,
                head=get(view, rg.head)[0],
                tail=get(view, rg.tail)[0],
                cursize=a.load32(rg.cursize),
            )
            for rg in self._rings
        )
        return QueueState(
            fsh_offset=seg.offset_of(self._q),
            handles_fsh_offset=seg.offset_of(self._q_data),
            head=get(view, self._q_head)[0],
            tail=get(view, self._q_tail)[0],
            cursize=a.load32(self._q_cursize),
            maxsize=self.maxsize,
            elsize=_HANDLE_SIZE,
            mutex=_words(PTHREAD_MUTEX_FIELDS, view, self._q + _Q.offset("mutex")),
            condvar=_words(PTHREAD_COND_FIELDS, view, self._q + _Q.offset("condvar")),
            rings=rings,
        )

    def read_handles(self, head: int, n: int) -> list[tuple[int, int]]:
        """``n`` handles ``(ring_index, elt_index)`` from queue position ``head`` on (wrapping),
        as they are now; what they point at is not checked."""
        if not (0 <= head < self.maxsize and 0 <= n <= self.maxsize):
            raise LocalError(f"{self.name}: no {n} handles from {head} in {self.maxsize}")
        return self._read_handles(head, n) if n else []

    def describe(self) -> dict[str, Any]:
        """Everything the inspector shows, read now (racy against live peers by nature).
        Never raises for bad indices: they are reported under ``problems``."""
        from .describe import describe_queue

        return describe_queue(self)

    def pending(self) -> list[Event]:
        """Decode the pending messages in queue order without consuming them."""
        head, _, size = self._queue_indices()
        return [self.peek_slot(r, e) for r, e in (self._read_handles(head, size) if size else [])]

    def peek_slot(self, ring: int, elt: int) -> Event:
        """Decode slot ``elt`` of ``ring`` as it is now, live or already consumed (consumed
        slots keep their bytes until reused).  Unlike `drain`, shows the VPP-internal events of
        VPP's worker mqs."""
        if not 0 <= ring < self.n_rings:
            raise self._bad(f"no ring {ring}")
        rg = self._rings[ring]
        if not 0 <= elt < rg.nitems:
            raise self._bad(f"element {elt} beyond ring {ring}'s {rg.nitems} items")
        slot = rg.data + elt * rg.elsize
        return events.decode(ring, bytes(self._view[slot : slot + rg.elsize]))


def _words(decl: Any, view: memoryview, off: int) -> dict[str, Any]:
    """Every field of ``decl`` at mapping offset ``off`` by its C name (arrays as lists)."""
    out: dict[str, Any] = {}
    for name, f in decl.fields.items():
        v = f.get(view, off)
        out[name] = list(v) if isinstance(v, tuple) else v
    return out
