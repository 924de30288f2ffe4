"""Opportunistic use of VPP: attach when VPP is there, use the kernel's sockets when it is not.

    app = pyvcl.open_app()                  # VclApp if VPP answers, else KernelApp
    with app.create_connection(("10.0.0.1", 80), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    print("via VPP" if pyvcl.is_vpp(app) else "via the kernel")

`open_app` attaches like `VclApp` (``app_socket``, ``config``, attach options); only
`VppUnreachable` -- no VPP at the app socket -- makes it fall back.  Everything else (a bad
option, VPP refusing the attach, a broken vcl.conf) is raised as usual, since a fallback would
hide a mistake.  `KernelApp` has `VclApp`'s surface (``socket``, ``create_connection``,
``create_server``, ``close``, ``closed``, context manager) over Python's `socket` module.

The module-level `create_connection` and `create_server` (also ``pyvcl.create_connection`` /
``pyvcl.create_server``) use one process-wide default app, made on first use by `default_app`:
attached as C VCL would (``$VCL_CONFIG`` and the ``VCL_*`` variables, see `pyvcl.config`),
kernel sockets when no VPP answers.  Caveats:

* An attached app belongs to the process that attached.  A forked child does not inherit the
  default app: its first call attaches anew (or falls back), and sessions the parent opened
  through VPP are unusable in the child.  (Kernel sockets the parent opened are inherited as
  usual, so a pre-fork server that listens before forking works in kernel mode only.)
* The default app is shared by every thread.  pyvcl sessions are thread-safe, but all of them
  go through one app worker: one message queue, events handled by whichever thread waits.
  Threads that each want their own app should call `open_app` themselves.
* The choice is made once: if VPP starts later, the default app stays on kernel sockets until
  `close_default_app` (the next use then tries VPP again).
* The two stacks differ where VPP does: VPP does not connect an app to its own listener (so
  a process cannot talk to itself through one app, the default one included); a cut-through
  connect completes only once the listening app accepts; C VCL's default scope (no
  ``app-scope-local`` in vcl.conf, no ``VCL_APP_SCOPE_LOCAL``) is global only, so no
  cut-through to apps on the same VPP.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .errors import LocalError, VppUnreachable
from .sockets import Address, VclApp, VclSocket

__all__ = [
    "KernelApp",
    "close_default_app",
    "create_connection",
    "create_server",
    "default_app",
    "is_vpp",
    "open_app",
]

log = logging.getLogger(__name__)
_Socket = socket.socket  # (inside KernelApp, "socket" is its method)


class KernelApp:
    """`VclApp`'s surface over the kernel's sockets: what `open_app` returns without VPP.

    ``create_connection`` / ``create_server`` / ``socket`` return ordinary `socket.socket`
    objects (hostnames are resolved as the socket module does).  `close` closes the sockets
    this app made that are still open, as detaching a `VclApp` voids its sessions."""

    is_vpp = False

    def __init__(self, reason: BaseException | None = None) -> None:
        self.reason = reason  # why VPP was not used (the VppUnreachable), if it was tried
        self._sockets: weakref.WeakSet[_Socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False

    def _track(self, s: _Socket) -> _Socket:
        with self._lock:
            if self._closed:
                s.close()
                raise LocalError("this KernelApp is closed", errno.EBADF)
            self._sockets.add(s)
        return s

    def _check_open(self) -> None:
        if self._closed:
            raise LocalError("this KernelApp is closed", errno.EBADF)

    def socket(self, family: int = socket.AF_INET) -> _Socket:
        self._check_open()
        return self._track(socket.socket(family, socket.SOCK_STREAM))

    def create_connection(self, address: Address, timeout: float | None = None) -> _Socket:
        self._check_open()
        return self._track(socket.create_connection((address[0], address[1]), timeout))

    def create_server(self, address: Address, *, backlog: int | None = None) -> _Socket:
        self._check_open()
        host = address[0]
        family = socket.AF_INET6 if isinstance(host, str) and ":" in host else socket.AF_INET
        s = socket.create_server((host, address[1]), family=family, backlog=backlog)
        return self._track(s)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sockets = list(self._sockets)
            self._sockets = weakref.WeakSet()
        for s in sockets:
            s.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> KernelApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pyvcl.KernelApp {'closed' if self._closed else 'open'}>"


AnyApp = VclApp | KernelApp
AnySocket = VclSocket | socket.socket


def is_vpp(app: Any) -> bool:
    """True for an app attached to VPP (a `VclApp`), False for a `KernelApp`."""
    return isinstance(app, VclApp)


def open_app(
    app_socket: str | os.PathLike[str] | None = None,
    *,
    config: Any = None,
    fallback: bool = True,
    on_fallback: Callable[[VppUnreachable], None] | None = None,
    **attach_options: Any,
) -> VclApp | KernelApp:
    """A `VclApp` attached through ``app_socket`` (or ``config``, see `VclApp`); when no VPP
    answers there and ``fallback`` is true, a `KernelApp` instead.

    ``on_fallback(error)`` is called before falling back (the default logs the reason at INFO
    level on the ``pyvcl.fallback`` logger).  With ``fallback=False`` the `VppUnreachable` is
    raised.  ``attach_options`` are `VclApp`'s keyword arguments (``timeout``,
    ``session_timeout``, ``name``, ``scope_local``, ...)."""
    try:
        return VclApp(app_socket, config=config, **attach_options)
    except VppUnreachable as e:
        if not fallback:
            raise
        if on_fallback is not None:
            on_fallback(e)
        else:
            log.info("VPP not reachable (%s); using kernel sockets", e.strerror)
        return KernelApp(reason=e)


# -- the process-wide default app --------------------------------------------------------------

_default_lock = threading.Lock()
_default: tuple[int, VclApp | KernelApp] | None = None  # (pid that made it, app)


def default_app() -> VclApp | KernelApp:
    """The process-wide app behind `create_connection` / `create_server`: attached from the
    environment like C VCL (``$VCL_CONFIG``, ``VCL_*``) on first use, or kernel sockets when
    VPP is not reachable.  Made again in a forked child (module docstring).  Unlike C VCL it
    always asks for the message-queue eventfd, which event loops need."""
    global _default
    with _default_lock:
        current = _default
        if current is not None and current[0] == os.getpid() and not current[1].closed:
            return current[1]
        from .config import load_vcl_config

        # Always with the mq eventfd, whatever vcl.conf says (C VCL's default is the
        # mutex/condvar): pyvcl.selector and pyvcl.aio wait on it, and neither VPP nor any
        # peer can tell the difference.
        app = open_app(config=load_vcl_config(), use_mq_eventfd=True)
        _default = (os.getpid(), app)
        return app


def close_default_app() -> None:
    """Close the default app (detach from VPP); the next use makes a new one."""
    global _default
    with _default_lock:
        current, _default = _default, None
    if current is not None and current[0] == os.getpid():
        current[1].close()


def _after_fork_in_child() -> None:
    # The parent's app is not ours: forget it (without closing: closing could close kernel
    # sockets the child inherited and means to use), and do not inherit a held lock.
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def create_connection(address: Address, timeout: float | None = None) -> VclSocket | socket.socket:
    """Connect through the default app (VPP if reachable, else the kernel); see `default_app`.

    Like `socket.create_connection`, except that ``timeout=None`` means blocking (VPP's
    connect is still bounded by VCL's session-timeout)."""
    return default_app().create_connection(address, timeout)


def create_server(address: Address, *, backlog: int | None = None) -> VclSocket | socket.socket:
    """A listening socket from the default app (VPP if reachable, else the kernel)."""
    return default_app().create_server(address, backlog=backlog)
