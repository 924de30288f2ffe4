"""Fifo signals: ``svm_fifo_signals_t``, the event and dequeue-notification words of a fifo.

They sit inside ``svm_fifo_shared_t`` but a client may use the signals of another header than
the one holding the data: the connecting side of a cut-through session moves data through the
CT fifos and signals through its regular fifos (protocol.md 4.7).  Hence a separate object.

All accesses use the atomics VPP uses (``src/svm/svm_fifo.h``): ``has_event`` is exchanged,
``want_deq_ntf`` or-ed/and-ed and loaded with acquire, ``has_deq_ntf`` release-stored and
acquire-loaded; ``deq_thresh`` and the subscriber list are plain.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ..atomics import AtomicRegion, Words
from ..errors import SharedMemoryError
from ..segment import Segment
from ..wire.enums import DeqNotify
from ..wire.fifo import SVM_FIFO_MAX_EVT_SUBSCRIBERS, SVM_FIFO_SHARED

__all__ = ["FIFO_ALIGN", "SignalWords", "Signals"]

M32 = 0xFFFFFFFF
FIFO_ALIGN = 64  # svm_fifo_shared_t is cache-line aligned (fsh_try_alloc_fifo_hdr_batch)

_F = SVM_FIFO_SHARED
_HAS_EVENT = _F.offset("has_event")
_WANT = _F.offset("want_deq_ntf")
_HAS_NTF = _F.offset("has_deq_ntf")
_THRESH = _F["deq_thresh"]
_NSUB = _F["n_subscribers"]
_SUBS = _F["subscribers"]


def fifo_header_m(segment: Segment, offset: int, what: str = "fifo") -> int:
    """Mapping offset of the ``svm_fifo_shared_t`` at fsh-relative ``offset``, checked."""
    m = segment.at(offset, _F.size, what)
    if offset % FIFO_ALIGN:
        raise SharedMemoryError(
            f"segment {segment.name!r}: {what} header offset {offset:#x} is not "
            f"{FIFO_ALIGN}-byte aligned"
        )
    return m


class Signals:
    """The signal words of the fifo header at fsh-relative ``offset`` in ``segment``."""

    __slots__ = (
        "_a", "_has_event_i", "_has_event_m", "_has_ntf_i", "_has_ntf_m", "_m", "_view", "_w32",
        "_want_i", "_want_m", "offset", "segment",
    )  # fmt: skip

    def __init__(self, segment: Segment, offset: int) -> None:
        self.segment = segment
        self.offset = offset
        self._m = m = fifo_header_m(segment, offset, "fifo signals")
        self._view = segment.view
        self._a: AtomicRegion = segment.atomics
        self._has_event_m = m + _HAS_EVENT
        self._want_m = m + _WANT
        self._has_ntf_m = m + _HAS_NTF
        # Acquire loads / release stores by word index (the header is 64-byte aligned).
        self._w32: Words = self._a.words32()
        self._has_event_i = self._has_event_m >> 2
        self._want_i = self._want_m >> 2
        self._has_ntf_i = self._has_ntf_m >> 2

    # -- has_event ---------------------------------------------------------------------------------
    @property
    def has_event(self) -> bool:
        return bool(self._w32[self._has_event_i])

    def set_event(self) -> bool:
        """Exchange ``has_event`` with 1 (``svm_fifo_set_event``); True if it was 0, i.e. the
        caller must send the IO event."""
        return self._a.xchg32(self._has_event_m, 1) == 0

    def unset_event(self) -> None:
        """Exchange ``has_event`` with 0 (``svm_fifo_unset_event``)."""
        self._a.xchg32(self._has_event_m, 0)

    def event_exchanger(self, value: int) -> tuple[AtomicRegion, Callable[[], int]]:
        """For a per-call path: ``(region, fn)``, where ``fn()`` exchanges ``has_event`` with
        ``value`` and returns the old value, as `set_event` / `unset_event` do but with the
        address checked once, now (`AtomicRegion.bound_xchg32`).  Look at ``region.closed``
        before every call: after it is closed the memory may be unmapped."""
        return self._a, self._a.bound_xchg32(self._has_event_m, value)

    def words(self) -> tuple[Words, int, int]:
        """For a per-call path: ``(w, has_event_i, want_deq_ntf_i)``, ``w[i]`` being an
        acquire load of the word (`AtomicRegion.words32`)."""
        return self._w32, self._has_event_i, self._want_i

    # -- dequeue notifications -------------------------------------------------------------------
    @property
    def want_deq_ntf(self) -> int:
        """The ``DeqNotify`` bits requested (acquire load)."""
        return int(self._w32[self._want_i])

    def add_want_deq_ntf(self, bits: int) -> None:
        """Atomically or in ``bits`` (``svm_fifo_add_want_deq_ntf``)."""
        self._a.fetch_or32(self._want_m, bits & M32)

    def del_want_deq_ntf(self, bits: int) -> None:
        """Atomically clear ``bits`` (``svm_fifo_del_want_deq_ntf``)."""
        self._a.fetch_and32(self._want_m, ~bits & M32)

    @property
    def has_deq_ntf(self) -> bool:
        return bool(self._w32[self._has_ntf_i])

    def set_has_deq_ntf(self) -> None:
        self._w32[self._has_ntf_i] = 1

    def reset_has_deq_ntf(self) -> None:
        """``svm_fifo_reset_has_deq_ntf``: re-arm IF_FULL / IF_EMPTY notifications."""
        self._w32[self._has_ntf_i] = 0

    def clear_deq_ntf(self) -> None:
        """``svm_fifo_clear_deq_ntf``, after sending a dequeue notification: set ``has_deq_ntf``
        if IF_FULL or IF_EMPTY was requested, and drop WANT_DEQ_NOTIF."""
        want = self.want_deq_ntf
        if want & (DeqNotify.WANT_DEQ_NOTIF_IF_FULL | DeqNotify.WANT_DEQ_NOTIF_IF_EMPTY):
            self.set_has_deq_ntf()
        if want & DeqNotify.WANT_DEQ_NOTIF:
            self.del_want_deq_ntf(DeqNotify.WANT_DEQ_NOTIF)

    @property
    def deq_thresh(self) -> int:
        return int(_THRESH.get(self._view, self._m))

    @deq_thresh.setter
    def deq_thresh(self, value: int) -> None:
        _THRESH.put(self._view, self._m, value & M32)

    # -- subscribers (VLS); read-only here ------------------------------------------------------
    @property
    def subscribers(self) -> list[int]:
        n = min(int(_NSUB.get(self._view, self._m)), SVM_FIFO_MAX_EVT_SUBSCRIBERS)
        return list(struct.unpack_from(f"<{n}B", self._view, self._m + _SUBS.offset))

    def __repr__(self) -> str:
        return (
            f"<Signals {self.segment.name!r}@{self.offset:#x} has_event={int(self.has_event)} "
            f"want_deq_ntf={self.want_deq_ntf} has_deq_ntf={int(self.has_deq_ntf)} "
            f"deq_thresh={self.deq_thresh}>"
        )


class SignalWords:
    """`Fifo`'s signal methods, delegated to its `Signals` (``signals``)."""

    __slots__ = ()
    signals: Signals

    @property
    def has_event(self) -> bool:
        return self.signals.has_event

    def set_event(self) -> bool:
        """``svm_fifo_set_event``: True if the flag was clear, i.e. send an IO event now."""
        return self.signals.set_event()

    def unset_event(self) -> None:
        """``svm_fifo_unset_event``: after draining an rx fifo (then re-check emptiness)."""
        self.signals.unset_event()

    @property
    def want_deq_ntf(self) -> int:
        return self.signals.want_deq_ntf

    def add_want_deq_ntf(self, bits: int) -> None:
        self.signals.add_want_deq_ntf(bits)

    def del_want_deq_ntf(self, bits: int) -> None:
        self.signals.del_want_deq_ntf(bits)

    @property
    def has_deq_ntf(self) -> bool:
        return self.signals.has_deq_ntf

    def reset_has_deq_ntf(self) -> None:
        self.signals.reset_has_deq_ntf()

    @property
    def deq_thresh(self) -> int:
        return self.signals.deq_thresh

    @deq_thresh.setter
    def deq_thresh(self, value: int) -> None:
        self.signals.deq_thresh = value

    def clear_deq_ntf(self) -> None:
        """``svm_fifo_clear_deq_ntf``: call after sending the dequeue notification."""
        self.signals.clear_deq_ntf()
