"""`ReadinessFd`: a real file descriptor whose readability and writability we set.

A VPP session has no kernel descriptor, but select/poll/epoll, selectors, socketserver and
asyncio's own loop only wait on descriptors.  So every interposed socket owns one end (``fd``)
of an AF_UNIX stream socketpair and pyvcl keeps the other (``_peer``).  The two directions of
a socketpair are independent, which gives both bits:

- readable: one byte sits in ``fd``'s receive queue (written into ``_peer``); draining it
  makes ``fd`` unreadable again.
- writable: ``fd``'s send buffer has room.  To make it unwritable we fill it (writing into
  ``fd`` until the kernel says EAGAIN; the bytes wait unread in ``_peer``), and draining
  ``_peer`` makes it writable again.  The send buffer is set to the kernel's minimum so that
  takes a few small writes.

The data of the session never goes through these descriptors: they only say "ready".  Each
change costs a couple of system calls (about 2 µs to toggle readable, 8 µs writable, measured
on a 2-vCPU VM); setting a state it already has costs nothing.  Callers serialise calls to
`set`, `enter_virtual` and `leave_virtual` (pyvcl holds the session worker's lock).

Virtual mode: while the descriptor is registered in one of pyvcl's own pumping selectors
(`pyvcl.interpose.selecting`), nobody else needs the kernel's view of it, so the selector
reads the state straight from this object and `set` makes no system call.  Entering the mode
puts the kernel side in a neutral state (neither readable nor writable, so epoll never reports
it); leaving it gives the kernel the state `set` asked for meanwhile.  ``readable`` and
``writable`` are always the intended state, ``kernel_readable``/``kernel_writable`` what
the kernel side says.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

_FILL = b"\0" * 512  # one write while filling the send buffer
_DRAIN = 1 << 16  # bytes read per call while draining the filler
_MARK_DRAIN = 64  # ... and the readable mark (one byte; os.read allocates what it asks for)

# The ReadinessFds in virtual mode whose intended state is readable: a selector finds its
# ready sockets in this set, in O(ready) rather than O(registered).  Threads change it under
# their worker's lock; a selector reads a snapshot (``list(...)``, one step under the GIL).
virtually_readable: set[ReadinessFd] = set()


class ReadinessFd:
    """A descriptor that is readable and/or writable exactly when `set` says so."""

    __slots__ = (
        "_peer",
        "closed",
        "fd",
        "kernel_readable",
        "kernel_writable",
        "readable",
        "virtual",
        "waker",
        "writable",
        "write_watchers",
    )

    def __init__(self, readable: bool = False, writable: bool = False) -> None:
        flags = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        mine, peer = socket.socketpair(socket.AF_UNIX, flags)
        try:
            mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # the kernel's minimum
        except BaseException:
            mine.close()
            peer.close()
            raise
        self.fd: int = mine.detach()
        self._peer = peer
        self.closed = False
        self.readable = self.kernel_readable = False
        self.writable = self.kernel_writable = True
        self.virtual = 0  # registrations in pumping selectors
        self.write_watchers = 0  # ... of which with write interest (see `watch_write`)
        # Called (in virtual mode only) when `set` makes the state newly ready: a selector
        # may sleep in epoll waiting for exactly that, and no kernel flip wakes it any more.
        self.waker: Callable[[], None] | None = None
        self.set(readable, writable)

    def set(self, readable: bool, writable: bool) -> None:
        """Make ``fd`` poll as readable/writable; nothing happens for a state it has.  In
        virtual mode only the intended state changes (no system call)."""
        if self.virtual:
            newly = (readable and not self.readable) or (writable and not self.writable)
            if readable != self.readable:
                if readable:
                    virtually_readable.add(self)
                else:
                    virtually_readable.discard(self)
            self.readable, self.writable = readable, writable
            if newly and self.waker is not None:
                self.waker()
            return
        self.readable, self.writable = readable, writable
        self._apply(readable, writable)

    def _apply(self, readable: bool, writable: bool) -> None:
        """Give the kernel side this state (system calls only for what changes)."""
        if readable != self.kernel_readable:
            if readable:
                os.write(self._peer.fileno(), b"\1")
            else:
                self._drain(self.fd, _MARK_DRAIN)
            self.kernel_readable = readable
        if writable != self.kernel_writable:
            if writable:
                self._drain(self._peer.fileno(), _DRAIN)
            else:
                self._fill()
            self.kernel_writable = writable

    def enter_virtual(self, waker: Callable[[], None] | None) -> None:
        """One more pumping selector has it registered; the first makes the kernel side
        neutral (a couple of system calls, once per registration, not per event)."""
        if self.closed:
            return
        self.virtual += 1
        if self.virtual > 1:
            return
        self.waker = waker
        # Only "not readable" is needed: the selectors ask the kernel about writability only
        # for descriptors with write interest, and `watch_write` makes it false for those.
        # (Unwritable means filling the send buffer, several writes and as many reads to
        # undo: asyncio re-registers a reader at every pause/resume of a busy stream.)
        self._apply(False, self.kernel_writable and not self.write_watchers)
        if self.readable:
            virtually_readable.add(self)

    def watch_write(self, delta: int) -> None:
        """A pumping selector starts (+1) or stops (-1) watching writability.  In virtual
        mode the kernel side must then not poll writable (epoll would report it at every
        look whatever the tx fifo says): the first watcher makes it so; it stays so until
        virtual mode ends."""
        self.write_watchers = max(0, self.write_watchers + delta)
        if self.virtual and self.write_watchers and self.kernel_writable and not self.closed:
            self._apply(False, False)

    def leave_virtual(self) -> None:
        """One registration fewer; the last gives the kernel the intended state again."""
        if self.virtual <= 0:
            return
        self.virtual -= 1
        if self.virtual:
            return
        self.write_watchers = 0
        self.waker = None
        virtually_readable.discard(self)
        if not self.closed:
            self._apply(self.readable, self.writable)

    def force(self, readable: bool, writable: bool) -> None:
        """The state, in the kernel too even in virtual mode: for when VPP is gone and every
        waiter, whatever it sleeps in, must wake (the kernel side stays so, as nothing
        makes a dead session unready)."""
        self.set(readable, writable)
        self._apply(readable, writable)

    def _fill(self) -> None:
        try:
            while True:
                os.write(self.fd, _FILL)
        except BlockingIOError:
            pass

    @staticmethod
    def _drain(fd: int, size: int) -> None:
        try:
            while len(os.read(fd, size)) == size:
                pass
        except BlockingIOError:
            pass

    def close_peer(self) -> None:
        """Close pyvcl's end (``fd`` belongs to the socket object and is closed with it).
        A selector that still has it registered stops reporting it."""
        self.closed = True
        self.virtual = 0
        self.waker = None
        virtually_readable.discard(self)
        self._peer.close()

    def __repr__(self) -> str:
        r = "r" if self.readable else "-"
        w = "w" if self.writable else "-"
        v = " virtual" if self.virtual else ""
        return f"<ReadinessFd fd={self.fd} {r}{w}{v}>"
