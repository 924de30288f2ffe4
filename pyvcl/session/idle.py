"""`IdleDrain`: takes VPP's messages off an app's queue when none of its threads does.

pyvcl consumes an app's message queue only while one of its threads waits on it: a blocking
call, a selector, an asyncio loop, the pump of ``pyvcl run``.  An app none of whose threads
is in pyvcl for a while still gets messages, above all the CLEANUPs VPP sends when sessions
are freed (for a TCP session the app closed first, a TIME_WAIT later).  Left in the queue,
they fill its control ring (``event-queue-size`` / 16 slots: 128 by default) and VPP marks
the app congested: it refuses the app's connects (ECONNREFUSED) and drops SYNs to its
listeners until the ring has room again, and on a VPP with worker threads its congestion
counter can wrap and keep the app refused long after (`pyvcl.testing.congestion`).
Measured: the conformance suite's server app, left alone for the 10 s of one check after
80 connections, had all 128 slots taken by CLEANUPs.

One daemon thread per app looks every `PERIOD`.  Messages waiting with the consumer's
position unchanged since the last look mean that nobody consumed them for a whole period;
the thread then handles them as the poller would (`SessionWorker.drain_unattended`) and sets
the eventfd again, so that whoever sleeps on it (a selector, an event loop) wakes and
re-checks what it waits for.  A consumer at work moves the position at once, so the thread
stands aside whenever one is there; a look costs two loads from shared memory.
"""

from __future__ import annotations

import threading

from ..errors import VclError
from .worker import SessionWorker

__all__ = ["PERIOD", "IdleDrain"]

PERIOD = 0.05  # seconds between looks; messages are left unconsumed two periods at most


class IdleDrain:
    """The thread that drains one app's queue while nobody else does."""

    def __init__(self, worker: SessionWorker, period: float = PERIOD) -> None:
        self._worker = worker
        self._period = period
        self._stopping = threading.Event()
        self._seen: int | None = None  # the queue head at the last look that found messages
        self._held = False  # `hold`: someone wants the queue left as VPP wrote it
        self.drains = 0  # how many times the thread had to step in
        self._thread = threading.Thread(target=self._run, name="pyvcl-idle-drain", daemon=True)
        self._thread.start()

    def look(self) -> bool:
        """One look (what the thread does every period); True if it handled messages."""
        mq = self._worker.app.app_mq
        if self._held or mq is None or mq.size_now() == 0:
            self._seen = None
            return False
        head = mq.head_now()
        if head != self._seen:  # first sight of these, or someone consumed since
            self._seen = head
            return False
        self._seen = None
        if not self._worker.drain_unattended():
            return False
        self.drains += 1
        mq.resignal()
        return True

    def _run(self) -> None:
        while not self._stopping.wait(self._period):
            if self._worker.app.closed:
                return
            try:
                self.look()
            except VclError:
                return  # VPP gone or the app closed: the worker reports it to its callers

    def hold(self) -> None:
        """Leave the queue alone until `release`: for a look at messages as they wait
        (``mq().wait_pending()`` in ``pyvcl repl``).  The holder must release soon: while
        held, nobody may be consuming."""
        self._held = True

    def release(self) -> None:
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop looking (the app is closing); waits for a look in progress unless called
        from the thread itself."""
        self._stopping.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(1.0)
