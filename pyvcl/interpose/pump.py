"""`Pump`: keeps the readiness descriptors of one `VclApp`'s interposed sockets true.

A program blocked in select/poll/epoll on an interposed socket's descriptor runs none of
pyvcl's code, so somebody else must consume the app's message queue and flip descriptors
when sessions change.  That is the pump: one daemon thread per attached app that sleeps on
the app mq's eventfd (and on the app socket, to notice VPP's death), handles the events as
the session worker's poller (`SessionWorker.pump_signalled`), and then re-reads the readiness
of the sessions the events touched (`Carrier.sync`).

Which sessions: an IO event names its session; a control event (connected, accepted,
disconnected, reset...) may change any session's state, so after one the pump compares each
carrier's cheap signature (states and pending accepts) with the last it saw.  Threads that
block in a socket call (recv, accept...) go on waiting as they always did: on the worker's
condition, woken by the pump after every round.

When VPP dies, every descriptor is made readable and writable, so that waiting programs
wake up and their calls raise ECONNRESET.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from typing import TYPE_CHECKING

from ..errors import VclError
from ..mq.events import Event
from ..wire.enums import SessionEvent
from .carrier import pumps

if TYPE_CHECKING:
    from ..vclsocket import VclApp
    from .carrier import Carrier

log = logging.getLogger(__name__)

IO_TX = SessionEvent.IO_TX
MAX_SLEEP = 1.0  # longest sleep on the eventfd: how late a closing app's pump notices
STAND_ASIDE = 0.05  # the pump's nap while a selector's thread watches the eventfd


class Pump:
    """The thread that follows one app's message queue for its interposed sockets."""

    def __init__(self, app: VclApp) -> None:
        mq = app.app.app_mq
        if mq is None or mq.eventfd is None:
            raise VclError("interposed sockets need an app mq with an eventfd (use_mq_eventfd)")
        self.app = app
        self.worker = app.worker
        self._mq = mq
        self.eventfd = mq.fileno()
        self.inline = 0  # threads sleeping on the eventfd themselves (pyvcl.interpose.selecting)
        self.inline_seen = 0.0  # when the last of them woke
        self.sleeping = False  # the pump thread sleeps in select (wake it with _wake_w)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sapi_fd = app.app.sapi.fileno()
        self._carriers: dict[int, Carrier] = {}  # by session index (a listener pair: both)
        self.dead = False
        self.worker.on_events = self._on_events
        self._thread = threading.Thread(target=self._run, name="pyvcl-pump", daemon=True)
        self._thread.start()

    # -- registry (callers hold the worker's lock) ------------------------------------------
    def add(self, carrier: Carrier, session_index: int) -> None:
        self._carriers[session_index] = carrier

    def remove(self, session_index: int) -> None:
        self._carriers.pop(session_index, None)

    # -- the thread -------------------------------------------------------------------------
    def _on_events(self, events: list[Event]) -> None:
        """After a round of events (worker lock held, whichever thread polled)."""
        # Each touched carrier, with the directions its events may have changed: an RX
        # event readability, a TX event (room in the tx fifo) writability.
        touched: dict[Carrier, tuple[bool, bool]] = {}
        control = False
        carriers = self._carriers
        for ev in events:
            idx = ev.session_index
            if idx is None:
                control = True
                continue
            c = carriers.get(idx)
            if c is not None:
                r, w = touched.get(c, (False, False))
                if ev.type == IO_TX:
                    touched[c] = (r, True)
                else:
                    touched[c] = (True, w)
        if control:
            for c in set(carriers.values()):
                if c.signature() != c.seen:
                    touched[c] = (True, True)
        for c, (r, w) in touched.items():
            c.sync_locked(r, w)

    def _run(self) -> None:
        w = self.worker
        queued_before = 0
        try:
            while True:
                if self.inline or time.monotonic() - self.inline_seen < STAND_ASIDE:
                    # A selector's thread watches the eventfd between its callbacks: leave it
                    # the work (and the poller's role), looking only for VPP's death -- not
                    # even taking the worker's lock: a pump handling events (lock and GIL
                    # held) while the loop's thread sends stalled that send for up to the
                    # interpreter's switch interval (5 ms), 20 times a second.
                    time.sleep(STAND_ASIDE)
                    if not w.check_vpp():
                        break
                    queued = self._mq.size_now()
                    if queued and queued_before:
                        # Events queued at two looks in a row: if the selector sleeps past
                        # them (a consumer that left some behind without their signal) it
                        # wakes now.  A spurious wake-up costs it one empty drain.
                        self._mq.resignal()
                    queued_before = queued
                    continue
                queued_before = 0
                w.pump_signalled()  # raises once VPP is gone or the app closed
                if not w.claim_poller():
                    with w.lock:  # another thread polls (it syncs us) or events are queued
                        if w.polling:
                            w.cond.wait(0.05)
                    continue
                self.sleeping = True
                try:
                    fds = [self.eventfd, self._sapi_fd, self._wake_r]
                    ready, _, _ = select.select(fds, [], [], MAX_SLEEP)
                finally:
                    self.sleeping = False
                    w.release_poller()
                if self._wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 64)
                if self._sapi_fd in ready:
                    w.check_vpp()
        except VclError as e:
            log.debug("pump of %s stops: %s", self.app, e)
        except (OSError, ValueError) as e:  # a descriptor closed under us by detach
            log.debug("pump of %s stops: %s", self.app, e)
        finally:
            self._wake_all()

    def begin_inline(self) -> None:
        """A selector's thread is about to sleep on the eventfd itself (`end_inline` after):
        the pump thread wakes from its own sleep, gives up the poller's role and stands
        aside until no selector has slept for `STAND_ASIDE`."""
        self.inline += 1
        if self.sleeping:
            self.wake()

    def wake(self) -> None:
        """Cut the pump thread's sleep short (it looks at the worker again at once)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\1")

    def end_inline(self, now: float) -> None:
        self.inline -= 1
        self.inline_seen = now

    def wake_sleepers(self) -> None:
        """Wake the selectors sleeping on the eventfd (a virtually ready descriptor)."""
        if not self.dead:
            with contextlib.suppress(OSError):  # (closed by a detach under us)
                self._mq.resignal()

    def pump_inline(self) -> None:
        """Handle the queued events in the calling thread (a selector about to look)."""
        if self.dead:
            return
        try:
            # VPP signals the eventfd only when the queue was empty: events that came while
            # we drained raised no signal, so drain until it stays empty.
            while self.worker.pump_signalled() and self._mq.size_now():
                pass
        except VclError:
            self._wake_all()

    def _wake_all(self) -> None:
        """VPP is gone or the app closed: every descriptor ready, so waiters call and fail."""
        self.dead = True
        with contextlib.suppress(ValueError):
            pumps.remove(self)
        with self.worker.lock:
            for c in set(self._carriers.values()):
                with contextlib.suppress(OSError):
                    # In the kernel too: a selector keeping it virtual sleeps on an eventfd
                    # that may be gone with the app.
                    c.rfd.force(True, True)
