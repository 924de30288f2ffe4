"""The per-call paths of a `Fifo`, as closures: ``enqueue``, ``dequeue_into`` and ``dequeue``.

Each closure holds in cell variables everything that does not change for the fifo's life (the
mapping's views, word indices, the bound of ``size``), so the common case -- a write or read
that stays inside the chunk holding ``tail`` / ``head`` -- costs its checks, the
word loads, one slice copy and one store, with no attribute look-up beyond the fifo's cached
chunk.  `Fifo` builds them once and they *are* its methods of those names; anything but the
common case goes to the fifo's general code (``_enqueue_slow`` and friends), which re-reads
and re-checks the chunk headers and walks the chain.

The cached chunk (``Fifo._tc`` / ``_hc``, see `Fifo`) is used only while ``tail_chunk`` /
``head_chunk`` still names it and its (start_byte, length) word still has the value checked
when it was cached.  A hostile or corrupt index can then only move the copy inside that checked
chunk, never outside it: every offset used to address the mapping comes from the cache.

The producer also keeps the consumer's ``head`` as last read (a lower bound of the room),
re-reading it only when that bound does not fit the write, and a write ending exactly at its
chunk's end moves ``tail_chunk`` on to the chunk's ``next`` itself, as VPP's copy does.

Short names, kept short because each is read on every call:

- ``f``: the `Fifo`; ``view``: its mapping as bytes; ``w32`` / ``w64``: the same mapping as
  32- / 64-bit words (``w32[i]`` is one word load), indexed by the ``*_i`` word indices;
- ``tc`` / ``hc``: the cached tail / head chunk, the tuple ``(c, key, word, data_m, start,
  length)``: ``c`` the chunk's offset, ``key`` the word index of its (start_byte, length) pair
  and ``word`` that pair's value when cached, ``data_m`` the mapping offset of its data,
  ``start`` / ``length`` its first position and size;
- ``d``: the mapping offset the copy starts at; ``src`` / ``dst``: the caller's bytes as a
  sliceable buffer; ``want`` / ``n``: byte counts; ``M32``: the 32-bit position mask.

`after_read` is what C VCL does after each read of an rx fifo
(``vppcom_session_read_internal``); the socket data path (`pyvcl.session.worker.DataPath`)
builds its own ``dequeue_into`` / ``dequeue`` with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..wire.enums import DeqNotify

if TYPE_CHECKING:
    from .fifo import Fifo

M32 = 0xFFFFFFFF


def as_bytes(data: Any) -> Any:
    """``data`` as something whose ``len`` is its byte count and that slices into the mapping
    as it is: bytes and bytearray unchanged, anything else a 1-D unsigned-byte memoryview."""
    kind = type(data)
    if kind is bytes or kind is bytearray:
        return data
    mv = data if kind is memoryview else memoryview(data)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv


def writable_bytes(buffer: Any) -> Any:
    """``buffer`` as a writable 1-D unsigned-byte buffer (a bytearray as it is)."""
    kind = type(buffer)
    if kind is bytearray or (kind is memoryview and buffer.format == "B" and buffer.ndim == 1):
        return buffer  # sliced into as it is
    mv = memoryview(buffer)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv


def make_enqueue(f: Fifo) -> Callable[[Any], int]:
    view, w32, w64 = f._view, f._w32, f._w64
    tail_i, head_i, size_i, tail_chunk_i = f._tail_i, f._head_i, f._size_i, f._tail_chunk_i
    max_size = f._max_size
    slow = f._enqueue_slow
    # The consumer's head as last read: it only moves forward, so the room it gives is a
    # lower bound of the room there is, and head (on the consumer's cache line, written on
    # every read) is re-read only when that bound is too small for the write.  (It must be a
    # value head really had: any other could look like a head close behind tail.)
    head_seen = w32[head_i]

    def enqueue(data: Any) -> int:
        """Append as much of ``data`` (any bytes-like object) as fits; the number of bytes
        written.  0 means the fifo is full, or -- if `max_enqueue` is not 0 -- that the segment
        has no chunk memory left (VPP's ``SVM_FIFO_EGROW``); a short write can happen for the
        same reason.  Call `set_event` afterwards to know whether to send an IO event."""
        nonlocal head_seen
        kind = type(data)
        src = data if kind is bytes or kind is bytearray else as_bytes(data)
        want = len(src)
        tc = f._tc
        if tc is not None and want:
            # Word reads: tail and tail_chunk are ours, head and size the consumer's / VPP's.
            c, key, word, data_m, start, length = tc
            tail = w32[tail_i]
            end = ((tail - start) & M32) + want
            if end <= length and c == w64[tail_chunk_i] and w64[key] == word:
                size = w32[size_i]
                if ((tail - head_seen) & M32) + want > size:
                    head_seen = w32[head_i]
                if ((tail - head_seen) & M32) + want <= size <= max_size:
                    d = data_m + end - want
                    view[d : d + want] = src
                    if end == length:
                        # Up to the chunk's end: tail_chunk moves to the next chunk (0 when
                        # there is none yet), as VPP's copy leaves it, and is cached anew.
                        w64[tail_chunk_i] = w64[key + 1]  # (``next``, our own link)
                        f._tc = None
                    w32[tail_i] = (tail + want) & M32  # release: publishes the data
                    return want
        return slow(src, want)

    return enqueue


def make_dequeue_into(f: Fifo, after: Callable[[int], None] | None = None) -> Callable[[Any], int]:
    """``Fifo.dequeue_into``; with ``after`` (`after_read`), also called with the count after
    every read that got bytes."""
    view, w32, w64 = f._view, f._w32, f._w64
    tail_i, head_i, head_chunk_i = f._tail_i, f._head_i, f._head_chunk_i
    slow = f._dequeue_into_slow

    def dequeue_into(buffer: Any) -> int:
        """Remove up to ``len(buffer)`` bytes into the writable ``buffer``; the count (0 if
        empty).  One copy, straight from the chunks."""
        dst = buffer if type(buffer) is bytearray else writable_bytes(buffer)
        # The cached head chunk is also the first one: a read inside it frees nothing.
        hc = f._hc
        if hc is not None:
            head = w32[head_i]
            present = (w32[tail_i] - head) & M32  # acquire: the producer's index
            n = len(dst)
            if present < n:
                n = present
            c, key, word, data_m, start, length = hc
            idx = (head - start) & M32
            if n and idx + n < length and c == w64[head_chunk_i] and w64[key] == word:
                d = data_m + idx
                dst[:n] = view[d : d + n]
                w32[head_i] = (head + n) & M32  # release: the bytes may be overwritten
                if after is not None:
                    after(n)
                return n
        n = slow(dst)
        if n and after is not None:
            after(n)
        return n

    return dequeue_into


def make_dequeue(f: Fifo, after: Callable[[int], None] | None = None) -> Callable[[int], bytes]:
    """``Fifo.dequeue``; with ``after`` as for `make_dequeue_into`."""
    view, w32, w64 = f._view, f._w32, f._w64
    tail_i, head_i, head_chunk_i = f._tail_i, f._head_i, f._head_chunk_i
    slow = f._dequeue_slow

    def dequeue(n: int) -> bytes:
        """Remove and return up to ``n`` bytes (b"" if the fifo is empty)."""
        hc = f._hc
        if hc is not None and n > 0:
            head = w32[head_i]
            present = (w32[tail_i] - head) & M32  # acquire: the producer's index
            k = n if n < present else present
            c, key, word, data_m, start, length = hc
            idx = (head - start) & M32
            if k and idx + k < length and c == w64[head_chunk_i] and w64[key] == word:
                d = data_m + idx
                data = view[d : d + k].tobytes()
                w32[head_i] = (head + k) & M32  # release
                if after is not None:
                    after(k)
                return data
        data = slow(n)
        if data and after is not None:
            after(len(data))
        return data

    return dequeue


def after_read(f: Fifo, notify: Callable[[], None]) -> Callable[[int], None]:
    """What C VCL does after a read of ``n`` bytes from an rx fifo
    (``vppcom_session_read_internal``): when the read drained the fifo clear ``has_event``
    (VPP must send an event for the next bytes), and when the producer asked for a dequeue
    notification that is now due, clear the request and call ``notify`` (which sends the
    producer its event).  The exchange on ``has_event`` is skipped when the flag is 0
    already: only VPP sets it, so the outcome is the one of exchanging then."""
    w32 = f._w32
    tail_i, head_i = f._tail_i, f._head_i
    sig = f.signals
    flags, has_event_i, want_i = sig.words()
    region, clear = sig.event_exchanger(0)
    unset = sig.unset_event  # (the checked exchange, which raises once the region is closed)

    def after(n: int) -> None:
        if flags[has_event_i] and w32[tail_i] == w32[head_i]:
            # Drained: VPP must tell us about the next bytes.
            if region.closed:
                unset()
            else:
                clear()
        if flags[want_i] and f.needs_deq_ntf(n):
            sig.clear_deq_ntf()
            notify()

    return after


def needs_deq_ntf(f: Fifo, n_last_deq: int) -> bool:
    """``svm_fifo_needs_deq_ntf`` (`Fifo.needs_deq_ntf`)."""
    s = f.signals
    want = s.want_deq_ntf
    if not want:
        return False
    w32 = f._w32
    if want & DeqNotify.WANT_DEQ_NOTIF:
        used = (w32[f._tail_i] - w32[f._head_i]) & M32
        return (w32[f._size_i] - used) & M32 >= s.deq_thresh  # (size unchecked, as VPP)
    if want & DeqNotify.WANT_DEQ_NOTIF_IF_FULL:
        max_deq = (w32[f._tail_i] - w32[f._head_i]) & M32
        size = w32[f._size_i]
        if max_deq < size and (max_deq + n_last_deq) & M32 >= size and not s.has_deq_ntf:
            return True
    return bool(
        want & DeqNotify.WANT_DEQ_NOTIF_IF_EMPTY and not s.has_deq_ntf and f.max_dequeue() == 0
    )
