"""The standard epoll and poll selectors, pumping VPP's events in the waiting thread itself.

An interposed socket's descriptor is made ready by whoever handles the app's message queue.
Left to the pump thread, every event costs two thread switches (the pump wakes, flips the
descriptor, the waiting thread wakes), which dominates the latency of a request.  What LDP
does for C programs (it adds VCL's queue to the program's epoll set), these selectors do
for Python's: while interposition is on, `selectors.DefaultSelector` (asyncio's loop and
most libraries), ``EpollSelector`` and ``PollSelector`` (socketserver) are subclasses that

- add the eventfd of each app with watched sockets to their own epoll/poll set, once;
- sleep as the standard class does; when the wake-up includes an eventfd, handle the app's
  events right there (`Pump.pump_inline`, which flips the descriptors of the sessions they
  touched) and look once more, without sleeping, to report what became ready;
- count themselves in `Pump.inline` while they sleep, and note when they last looked
  without sleeping, so that the pump thread stands aside instead of racing them for the
  queue.

What ``select`` returns is what the standard class would: (key, events) of registered file
objects only.  ``SelectSelector``, programs calling ``select.select``/``poll``/``epoll``
themselves, and C extensions keep the pump thread's service.
"""

from __future__ import annotations

import math
import select
import selectors
import time
from typing import Any

from . import carrier

_PATCHED = ("DefaultSelector", "EpollSelector", "PollSelector")
originals: dict[str, Any] = {name: getattr(selectors, name) for name in _PATCHED}
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_StdEpoll: Any = originals["EpollSelector"]
_StdPoll: Any = originals["PollSelector"]


class _PumpingMixin:
    """Shared by both subclasses; ``_poll_raw`` and ``_add_eventfd`` are theirs."""

    _fd_to_key: dict[int, selectors.SelectorKey]

    def __init__(self) -> None:
        super().__init__()
        self._eventfds: dict[int, Any] = {}  # the pumps' eventfds in our set, and their pumps

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        pumps = carrier.pumps
        if not pumps:
            return self._ready(self._poll_raw(timeout))
        eventfds = self._eventfds
        for p in pumps:
            if eventfds.get(p.eventfd) is not p and not p.dead:
                # (a new app's eventfd may reuse the number of a dead one's)
                self._add_eventfd(p.eventfd)
                eventfds[p.eventfd] = p
        if timeout is not None and timeout <= 0:
            # A look, no sleep (a busy loop makes nothing else): the eventfd is in it, so this
            # thread watches it as much as a sleeping one does -- the pump must keep standing
            # aside.  (Left to take over after STAND_ASIDE, it raced this thread for the
            # queue, the worker's lock and the GIL: three futex calls a request.)
            raw = self._poll_raw(0)
            now = time.monotonic()
            for p in pumps:
                p.inline_seen = now
        else:
            for p in pumps:
                p.begin_inline()
            try:
                raw = self._poll_raw(timeout)
            finally:
                now = time.monotonic()
                for p in pumps:
                    p.end_inline(now)
        woken = [eventfds[fd] for fd, _ in raw if fd in eventfds]
        if not woken:
            return self._ready(raw)
        for p in woken:
            p.pump_inline()
        # The events flipped descriptors: look again, without sleeping.
        return self._ready(self._poll_raw(0))

    def _ready(self, raw: list[tuple[int, int]]) -> list[tuple[Any, int]]:
        out = []
        fd_to_key = self._fd_to_key
        for fd, events in raw:
            key = fd_to_key.get(fd)
            if key is not None:
                events &= key.events
                if events:
                    out.append((key, events))
        return out

    def _poll_raw(self, timeout: float | None) -> list[tuple[int, int]]:
        raise NotImplementedError

    def _add_eventfd(self, fd: int) -> None:
        raise NotImplementedError


class EpollSelector(_PumpingMixin, _StdEpoll):  # type: ignore[misc]
    def _poll_raw(self, timeout: float | None) -> list[tuple[int, int]]:
        if timeout is None:
            t = -1.0
        elif timeout <= 0:
            t = 0.0
        else:  # epoll's unit is the millisecond: round up, never spin (as the base does)
            t = math.ceil(timeout * 1e3) * 1e-3
        n = max(len(self._fd_to_key) + len(self._eventfds), 1)
        try:
            got = self._selector.poll(t, n)
        except InterruptedError:
            return []
        return [(fd, _events_of(ev, select.EPOLLIN, select.EPOLLOUT)) for fd, ev in got]

    def _add_eventfd(self, fd: int) -> None:
        try:
            self._selector.register(fd, select.EPOLLIN)
        except FileExistsError:
            self._selector.modify(fd, select.EPOLLIN)


class PollSelector(_PumpingMixin, _StdPoll):  # type: ignore[misc]
    def _poll_raw(self, timeout: float | None) -> list[tuple[int, int]]:
        if timeout is None:
            t = None
        elif timeout <= 0:
            t = 0
        else:
            t = math.ceil(timeout * 1e3)
        try:
            got = self._selector.poll(t)
        except InterruptedError:
            return []
        return [(fd, _events_of(ev, select.POLLIN, select.POLLOUT)) for fd, ev in got]

    def _add_eventfd(self, fd: int) -> None:
        self._selector.register(fd, select.POLLIN)


def _events_of(ev: int, readable: int, writable: int) -> int:
    """Selector events from poll bits: errors and hang-ups wake readers and writers, as the
    standard selectors report them."""
    out = 0
    if ev & ~writable:
        out |= _READ
    if ev & ~readable:
        out |= _WRITE
    return out


def install() -> None:
    """Put the pumping subclasses in the `selectors` module (idempotent)."""
    if getattr(selectors, "EpollSelector", None) is not originals["EpollSelector"]:
        return
    epoll, poll = EpollSelector, PollSelector
    selectors.EpollSelector = epoll  # type: ignore[misc]
    selectors.PollSelector = poll  # type: ignore[misc]
    default = originals["DefaultSelector"]
    if default is originals["EpollSelector"]:
        selectors.DefaultSelector = epoll  # type: ignore[misc]
    elif default is originals["PollSelector"]:
        selectors.DefaultSelector = poll  # type: ignore[misc]


def uninstall() -> None:
    for name, cls in originals.items():
        setattr(selectors, name, cls)
