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
  queue;
- keep the readiness of the interposed sockets registered in them in user space (the
  `ReadinessFd` virtual mode: no system call per flip, as C VCL's epoll keeps it): they add
  the virtually ready ones to what the kernel reports, and do not sleep while one is.
  Another thread making one ready while they sleep sets the eventfd (`Carrier`).

What ``select`` returns is what the standard class would: (key, events) of registered file
objects only.  ``SelectSelector``, programs calling ``select.select``/``poll``/``epoll``
themselves, and C extensions keep the pump thread's service -- but they see a descriptor
registered in one of these selectors as never ready (docs/run.md, virtual readiness).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import selectors
import stat
import time
from typing import TYPE_CHECKING, Any

from ..interrupts import interruptible
from . import carrier, readiness

if TYPE_CHECKING:
    from .carrier import Carrier
    from .readiness import ReadinessFd

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
        # Registered descriptors of interposed sockets, whose readiness we read from their
        # ReadinessFd (virtual mode) instead of the kernel: fd -> its Carrier, the
        # ReadinessFd -> our fds for it (dup'd descriptors share one), and the fds with
        # write interest (asyncio asks for it only under backpressure: a short list).
        self._virtual: dict[int, Carrier] = {}
        self._fds_of: dict[ReadinessFd, list[int]] = {}
        self._writers: dict[int, ReadinessFd] = {}

    # -- registrations ------------------------------------------------------------------
    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key: selectors.SelectorKey = super().register(fileobj, events, data)  # type: ignore[misc]
        c = _carrier_of(key.fd)
        if c is not None:
            try:
                c.enter_virtual()
            except BaseException:
                super().unregister(fileobj)  # type: ignore[misc]
                raise
            self._virtual[key.fd] = c
            self._fds_of.setdefault(c.rfd, []).append(key.fd)
            self._watch_write(key.fd, c, bool(events & _WRITE))
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        key: selectors.SelectorKey = super().unregister(fileobj)  # type: ignore[misc]
        self._forget(key.fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        try:
            key: selectors.SelectorKey = super().modify(fileobj, events, data)  # type: ignore[misc]
        except BaseException:
            # (the standard class unregisters what it failed to modify)
            for fd in [fd for fd in self._virtual if fd not in self._fd_to_key]:
                self._forget(fd)
            raise
        c = self._virtual.get(key.fd)
        if c is not None:
            self._watch_write(key.fd, c, bool(events & _WRITE))
        return key

    def _watch_write(self, fd: int, c: Carrier, want: bool) -> None:
        """Note whether ``fd`` (of ``c``) has write interest now."""
        had = self._writers.pop(fd, None) is not None
        if want:
            self._writers[fd] = c.rfd
        if want != had:
            c.watch_write(+1 if want else -1)

    def close(self) -> None:
        try:
            for fd in list(self._virtual):  # they go back to the kernel's readiness
                self._forget(fd)
        finally:
            super().close()  # type: ignore[misc]

    def _forget(self, fd: int) -> None:
        c = self._virtual.pop(fd, None)
        if c is None:
            return
        self._watch_write(fd, c, False)
        fds = self._fds_of.get(c.rfd, [])
        if fd in fds:
            fds.remove(fd)
        if not fds:
            self._fds_of.pop(c.rfd, None)
        with contextlib.suppress(OSError):  # (a descriptor closed while registered)
            c.leave_virtual()

    # -- looking ------------------------------------------------------------------------
    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        pumps = carrier.pumps
        if not pumps:
            virt = self._virtual_events()
            return self._ready(self._poll_raw(0 if virt else timeout), virt)
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
            virt = self._virtual_events()
            now = time.monotonic()
            for p in pumps:
                p.inline_seen = now
        else:
            for p in pumps:
                p.begin_inline()
            try:
                # Only now, counted in `Pump.inline`, look at the virtual states: a thread
                # making one ready from here on sees the count and sets the eventfd
                # (`Carrier._wake_selectors`), so the sleep below cannot miss it.
                virt = self._virtual_events()
                raw = self._poll_raw(0 if virt else timeout)
            finally:
                now = time.monotonic()
                for p in pumps:
                    p.end_inline(now)
        woken = [eventfds[fd] for fd, _ in raw if fd in eventfds]
        if not woken:
            return self._ready(raw, virt)
        for p in woken:
            p.pump_inline()
        # The events changed readiness: look again, without sleeping.
        raw = self._poll_raw(0)
        return self._ready(raw, self._virtual_events())

    def _virtual_events(self) -> dict[int, int]:
        """fd -> events, of our virtual-mode descriptors that are ready and wanted."""
        if not self._virtual:
            return {}
        out: dict[int, int] = {}
        fds_of = self._fds_of
        fd_to_key = self._fd_to_key
        # (a snapshot: other threads change the set; list() of a set is one step under the GIL)
        for rfd in list(readiness.virtually_readable):
            fds = fds_of.get(rfd)
            if fds:
                for fd in fds:
                    key = fd_to_key.get(fd)
                    if key is not None and key.events & _READ:
                        out[fd] = _READ
        for fd, rfd in self._writers.items():
            if rfd.writable and not rfd.closed:
                out[fd] = out.get(fd, 0) | _WRITE
        return out

    def _ready(self, raw: list[tuple[int, int]], virt: dict[int, int]) -> list[tuple[Any, int]]:
        """What the kernel reported and what the virtual states say, one entry per key."""
        out = []
        fd_to_key = self._fd_to_key
        for fd, events in raw:
            key = fd_to_key.get(fd)
            if key is not None:
                if virt:
                    events |= virt.pop(fd, 0)
                events &= key.events
                if events:
                    out.append((key, events))
        for fd, events in virt.items():
            out.append((fd_to_key[fd], events))
        return out

    def _poll_raw(self, timeout: float | None) -> list[tuple[int, int]]:
        raise NotImplementedError

    def _add_eventfd(self, fd: int) -> None:
        raise NotImplementedError


class EpollSelector(_PumpingMixin, _StdEpoll):  # type: ignore[misc]
    @interruptible
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
    @interruptible
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


def _carrier_of(fd: int) -> Carrier | None:
    """The watched carrier behind a descriptor (a dup shares the original's inode), if any."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return None
    c = carrier.by_inode.get(st.st_ino)
    return c if c is not None and c.pump is not None else None


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
