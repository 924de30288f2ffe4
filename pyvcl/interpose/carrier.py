"""`Carrier`: the VPP side of one interposed socket.

It holds the `VclSocket` that carries the data (two for a dual-stack listener: IPv6 and
IPv4 on one port, as a kernel socket bound to ``::`` without IPV6_V6ONLY listens on both),
the `ReadinessFd` that stands for it in select/poll/epoll, and how many socket objects share
it (``dup``, ``socket.fromfd``).

Readiness is kept lazily: nothing is done for it until someone takes the descriptor
(``fileno()``, which select, selectors, asyncio and C extensions all call), since a
descriptor nobody has seen cannot be waited on.  From then on the app's `Pump` re-reads it
after events, and the socket's own calls re-read it when they may have consumed the last of
something (a recv that drained the fifo, a send that filled it, an accept).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from .readiness import ReadinessFd

if TYPE_CHECKING:
    from ..vclsocket import VclApp, VclSocket
    from .pump import Pump

_pumps_lock = threading.Lock()
# The live pumps, for the selectors that handle their events inline (.selecting): a plain
# list, read on every select.
pumps: list[Pump] = []

# Descriptors of live carriers, by inode: how ``socket.socket(fileno=fd)`` (dup, fromfd,
# detach-and-rewrap) finds the session behind a descriptor it is handed.
by_inode: dict[int, Carrier] = {}


# The ports this process listens on through VPP (a count per port): a connect to one of them
# must not come from the listener's own app.
listening_ports: dict[int, int] = {}


def note_port(port: int) -> None:
    listening_ports[port] = listening_ports.get(port, 0) + 1


def _forget_port(port: int) -> None:
    left = listening_ports.get(port, 0) - 1
    if left > 0:
        listening_ports[port] = left
    else:
        listening_ports.pop(port, None)


def pump_for(app: VclApp) -> Pump:
    from .pump import Pump

    with _pumps_lock:
        for pump in pumps:  # (dead pumps leave the list)
            if pump.app is app:
                return pump
        pump = Pump(app)
        pumps.append(pump)
        return pump


class Carrier:
    __slots__ = (
        "__weakref__",
        "app",
        "generation",
        "indexes",
        "inode",
        "pump",
        "refs",
        "rfd",
        "seen",
        "vcls",
    )

    def __init__(self, app: VclApp, vcl: VclSocket) -> None:
        self.app = app
        self.vcls: list[VclSocket] = [vcl]
        self.rfd = ReadinessFd()
        self.inode = os.fstat(self.rfd.fd).st_ino
        self.refs = 1
        self.pump: Pump | None = None  # set once the descriptor was handed out (`watch`)
        self.indexes: list[int] = []
        self.seen: object = None  # `signature` at the last sync
        self.generation = 0  # the fork generation of the process that made it (vsocket)
        by_inode[self.inode] = self

    @property
    def vcl(self) -> VclSocket:
        return self.vcls[0]

    @property
    def watched(self) -> bool:
        return self.pump is not None

    def watch(self) -> None:
        """The descriptor is out: from now on keep its readiness true."""
        if self.pump is not None:
            return
        pump = pump_for(self.app)
        with self.app.worker.lock:
            self.pump = pump
            self._register()
            self.sync_locked()

    def add(self, vcl: VclSocket) -> None:
        """A second session behind the same descriptor (the IPv4 half of a listener)."""
        self.vcls.append(vcl)
        if self.pump is not None:
            with self.app.worker.lock:
                self._register()
                self.sync_locked()

    def _register(self) -> None:
        assert self.pump is not None
        for i in self.indexes:
            self.pump.remove(i)
        self.indexes = [v.session.index for v in self.vcls]
        for i in self.indexes:
            self.pump.add(self, i)

    # -- virtual readiness (pyvcl.interpose.selecting) ------------------------------------
    def enter_virtual(self) -> None:
        """A pumping selector registered the descriptor: keep its readiness in user space."""
        with self.app.worker.lock:  # (against a concurrent `set` by another thread)
            self.rfd.enter_virtual(self._wake_selectors)

    def leave_virtual(self) -> None:
        with self.app.worker.lock:
            self.rfd.leave_virtual()

    def watch_write(self, delta: int) -> None:
        """A pumping selector starts (+1) or stops (-1) watching it for writability."""
        with self.app.worker.lock:
            self.rfd.watch_write(delta)

    def _wake_selectors(self) -> None:
        """The descriptor became ready in virtual mode (worker lock held).  A selector that
        looked at the virtual states and then went to sleep in epoll would miss it: no
        kernel flip wakes it any more.  So set the eventfd of each app a selector sleeps on:
        it wakes, pumps (nothing, or what came meanwhile) and looks again.

        Why `Pump.inline` is the right test: a selector counts itself in it (for every
        live pump) *before* it looks at the virtual states, until it is out of epoll.  Either
        this change was made before its look (it sees it and does not sleep) or the count
        was already up and we signal.  The selector's own inline pumping runs after its
        count went down, so the common case (the selector's thread handling the event itself)
        costs no signal.  Every pump, not only ours: a socket that moved to another app
        (`move_to`) may be registered in a selector asleep since before that app's pump."""
        for pump in list(pumps):  # (a snapshot: a pump may die meanwhile)
            if pump.inline:
                pump.wake_sleepers()

    def signature(self) -> object:
        """What a control event may change: each session's state and pending accepts."""
        return [(v.session.index, v.session.state, len(v.session.accepted)) for v in self.vcls]

    def sync_locked(self, read: bool = True, write: bool = True) -> None:
        """Set the descriptor from the sessions (worker lock held): the directions asked
        (a recv can only have changed readability, a send writability), or both."""
        if self.pump is None:
            return
        if read and write:
            self.seen = self.signature()
        r = self.rfd.readable if not read else False
        w = self.rfd.writable if not write else False
        for v in self.vcls:
            if v.session.index not in self.indexes:  # a failed connect made a new session
                self._register()
            vr, vw = v.readiness(read, write)
            r = r or (read and vr)
            w = w or (write and vw)
        self.rfd.set(r, w)

    def sync(self, read: bool = True, write: bool = True) -> None:
        if self.pump is not None:
            with self.app.worker.lock:
                self.sync_locked(read, write)

    def move_to(self, app: VclApp, vcl: VclSocket) -> None:
        """Carry this socket by ``vcl`` of another app from now on (an unconnected socket
        about to connect to a listener of its own app, which VPP would not connect)."""
        old, watched = self.vcls, self.pump is not None
        if self.pump is not None:
            with self.app.worker.lock:
                for i in self.indexes:
                    self.pump.remove(i)
        self.pump, self.indexes = None, []
        self.app, self.vcls = app, [vcl]
        for v in old:
            v.close()
        if watched:
            self.watch()

    def release(self) -> bool:
        """One socket object let go; True (and everything closed) when it was the last."""
        self.refs -= 1
        if self.refs > 0:
            return False
        by_inode.pop(self.inode, None)
        # (both halves of a dual-stack listener share one port, noted once by listen)
        for port in {
            v.session.local[1] for v in self.vcls if v.session.is_listener and v.session.local
        }:
            _forget_port(port)
        try:
            for v in self.vcls:
                v.close()
        finally:
            if self.pump is not None:
                with self.app.worker.lock:
                    for i in self.indexes:
                        self.pump.remove(i)
            self.rfd.close_peer()
        return True
