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
`set` (pyvcl holds the session worker's lock).
"""

from __future__ import annotations

import os
import socket

_FILL = b"\0" * 512  # one write while filling the send buffer
_DRAIN = 1 << 16  # bytes read per call while draining the filler
_MARK_DRAIN = 64  # ... and the readable mark (one byte; os.read allocates what it asks for)


class ReadinessFd:
    """A descriptor that is readable and/or writable exactly when `set` says so."""

    __slots__ = ("_peer", "fd", "readable", "writable")

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
        self.readable = False
        self.writable = True
        self.set(readable, writable)

    def set(self, readable: bool, writable: bool) -> None:
        """Make ``fd`` poll as readable/writable; nothing happens for a state it has."""
        if readable != self.readable:
            if readable:
                os.write(self._peer.fileno(), b"\1")
            else:
                self._drain(self.fd, _MARK_DRAIN)
            self.readable = readable
        if writable != self.writable:
            if writable:
                self._drain(self._peer.fileno(), _DRAIN)
            else:
                self._fill()
            self.writable = writable

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
        """Close pyvcl's end (``fd`` belongs to the socket object and is closed with it)."""
        self._peer.close()

    def __repr__(self) -> str:
        r = "r" if self.readable else "-"
        w = "w" if self.writable else "-"
        return f"<ReadinessFd fd={self.fd} {r}{w}>"
