"""How the consumer of a message queue waits for messages (protocol.md 5.5), in bounded,
interruptible steps whatever shared memory says.

* **eventfd** mode polls the eventfd together with the caller's other fds (the app socket, to
  notice VPP going away) and reads the eventfd to reset it.  One poll object per set of fds is
  kept: a blocked reader waits here once per message.
* **condvar** mode never waits on the condvar: glibc's ``pthread_cond_timedwait`` re-acquires
  the condvar-internal lock and the mutex inside it without a timeout, so words another
  process wrote could keep us there for good (atomics.md, "Hostile memory").  It looks at
  ``cursize`` (and polls the fds) with sleeps from 20 us doubling up to ``poll_max``;
  producers' broadcasts go unheard.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ..interrupts import interruptible

__all__ = ["WaitResult", "Waiter", "poll_fds"]

_RESYNC = 1.0  # longest single sleep of an untimed wait: re-check shared state this often
_POLL_MIN = 20e-6  # first sleep of a condvar-mode wait for messages (then doubling)


class WaitResult(NamedTuple):
    """What `MessageQueue.wait` saw: ``pending`` messages, and which ``also_fds`` fired
    (readable, hung up or in error).  Both empty means the timeout expired."""

    pending: bool
    fds: tuple[int, ...] = ()


@interruptible
def poll_fds(fds: tuple[int, ...], timeout_ms: int) -> tuple[int, ...]:
    """Which of ``fds`` are readable, hung up or in error within ``timeout_ms``."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN | select.POLLPRI)
    return tuple(fd for fd, _ in poller.poll(timeout_ms))


class Waiter:
    """The waits of one queue's consumer.  Each takes ``pending``, which counts the messages
    queued now (and raises for a bad count); the eventfd wait takes the consumer's
    non-blocking eventfd.  (Passed per call, not kept: a queue keeping a waiter that kept the
    queue's methods would be a cycle, and its segment's views would outlive its close.)"""

    def __init__(self) -> None:
        self._poller: tuple[tuple[int, ...], Any] | None = None  # (fds, select.poll)
        self._poller_lock = threading.Lock()

    def forget(self) -> None:
        """Drop the kept poll object (the queue is closed)."""
        self._poller = None

    # -- eventfd mode ------------------------------------------------------------------------
    def wait_eventfd(
        self,
        deadline: float | None,
        fds: tuple[int, ...],
        pending: Callable[[], int],
        evfd: int,
    ) -> WaitResult:
        # A poll object cannot be polled by two threads at once, so a second concurrent
        # waiter (two threads misusing the one consumer) gets a fresh one.
        if not self._poller_lock.acquire(False):
            return _wait_eventfd_with(_new_poller(fds, evfd), deadline, pending, evfd)
        try:
            cached = self._poller
            if cached is None or cached[0] != fds:
                cached = self._poller = (fds, _new_poller(fds, evfd))
            return _wait_eventfd_with(cached[1], deadline, pending, evfd)
        finally:
            self._poller_lock.release()

    # -- condvar mode ------------------------------------------------------------------------
    @staticmethod
    @interruptible
    def poll_cursize(
        deadline: float | None, fds: tuple[int, ...], pending: Callable[[], int], poll_max: float
    ) -> WaitResult:
        poller = None
        if fds:
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN | select.POLLPRI)
        pause = _POLL_MIN
        while True:
            step = pause
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return WaitResult(False, ())
                step = min(step, left)
            fired: tuple[int, ...] = ()
            if poller is not None and step >= 0.001:  # poll's unit: wakes at once on an fd
                fired = tuple(fd for fd, _ in poller.poll(int(step * 1000)))
            else:
                time.sleep(step)
                if poller is not None:
                    fired = tuple(fd for fd, _ in poller.poll(0))
            got = pending() > 0
            if got or fired:
                return WaitResult(got, fired)
            pause = min(pause * 2, poll_max)


def _new_poller(fds: tuple[int, ...], evfd: int) -> Any:
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN | select.POLLPRI)
    poller.register(evfd, select.POLLIN)
    return poller


@interruptible
def _wait_eventfd_with(
    poller: Any, deadline: float | None, pending: Callable[[], int], evfd: int
) -> WaitResult:
    while True:
        slice_ = _RESYNC if deadline is None else min(_RESYNC, deadline - time.monotonic())
        ready = poller.poll(max(0, int(slice_ * 1000 + 0.999))) if slice_ > 0 else []
        fired = tuple(fd for fd, _ in ready if fd != evfd)
        if any(fd == evfd for fd, _ in ready):
            with contextlib.suppress(BlockingIOError):
                os.read(evfd, 8)
        got = pending() > 0
        if got or fired:
            return WaitResult(got, fired)
        if deadline is not None and time.monotonic() >= deadline:
            return WaitResult(False, ())
