"""Interposition: the standard `socket` module's TCP sockets over VPP, for unmodified programs.

`enable(app)` makes ``socket.socket(AF_INET/AF_INET6, SOCK_STREAM)`` (and everything built on
it: ``create_connection``, ``create_server``, socketserver, http, asyncio's own event loop)
return sockets carried by VPP sessions of ``app`` (a `pyvcl.fallback.OpportunisticApp`),
each with a real file descriptor whose readiness follows the session
(`pyvcl.interpose.vsocket.InterposedSocket`).  Other kinds of socket stay kernel sockets, and
so do new sockets while ``app`` has no VPP.  `pyvcl run` (pyvcl.cli.run) enables it before
running a program; docs/run.md says what is replaced and how.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, ClassVar

# The sockets themselves (.vsocket) import the data path: only `enable` loads them, so that a
# program that merely asks `enabled()` (or falls back) imports nothing more.

__all__ = ["disable", "enable", "enabled", "is_interposed"]


def _loaded() -> Any:
    """The sockets module if `enable` loaded it, else None."""
    return sys.modules.get(__name__ + ".vsocket")


class _State:
    app: Any = None  # the OpportunisticApp new sockets go through
    reopen: Callable[[], Any] | None = None  # how a forked child gets an app of its own
    loop_app: Any = None  # the second app, for connections to this process's own listeners
    forsaken: ClassVar[list[Any]] = []  # a forked child's copies of its parent's apps: never closed
    lock = threading.Lock()


def _backend() -> Any:
    app = _State.app
    if app is None:
        reopen = _State.reopen
        if reopen is None:
            return None
        with _State.lock:
            if _State.app is None:
                _State.app = reopen()
            app = _State.app
    from ..vclsocket import VclApp

    b = app.backend  # VPP's death noticed first; VppUnreachable without fallback
    return b if isinstance(b, VclApp) else None


def _loop_backend() -> Any:
    """The process's second app, attached on first use the way the first was (`reopen`):
    VPP does not connect an app to its own listener, so a process that connects to itself
    does it from this one."""
    if _State.reopen is None:
        return None
    with _State.lock:
        if _State.loop_app is None:
            _State.loop_app = _State.reopen()
        app = _State.loop_app
    from ..vclsocket import VclApp

    b = app.backend
    return b if isinstance(b, VclApp) else None


def _after_fork_in_child() -> None:
    """The parent's app is the parent's (closing it here would detach the parent): forget it,
    and attach anew on the child's first socket."""
    vsocket = _loaded()
    if vsocket is not None:
        vsocket.fork_generation += 1
    for app in (_State.app, _State.loop_app):
        if app is not None:
            _State.forsaken.append(app)
    _State.app = _State.loop_app = None
    _State.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def enable(app: Any, reopen: Callable[[], Any] | None = None) -> None:
    """Route new AF_INET/AF_INET6 stream sockets of this process through ``app`` (an
    `OpportunisticApp`: VPP while it is attached, kernel sockets or `VppUnreachable` while
    not).  ``reopen`` makes the app of a forked child (without it, a child uses the kernel)."""
    from . import loops, selecting, vsocket

    _State.app, _State.reopen = app, reopen
    vsocket.backend = _backend
    vsocket.loop_backend = _loop_backend
    from . import tls

    tls.install(is_interposed, take_over=vsocket.take_over)
    if os.environ.get("PYVCL_INLINE", "1") != "0":
        selecting.install()
    loops.install()
    socket.socket = vsocket.InterposedSocket  # type: ignore[misc]


def disable() -> None:
    """Undo `enable`: new sockets are kernel sockets again (existing ones keep working)."""
    vsocket = _loaded()
    if vsocket is not None:
        from . import selecting

        selecting.uninstall()
        from . import loops, tls

        loops.uninstall()

        tls.uninstall()
        socket.socket = vsocket.std_socket  # type: ignore[misc]
        vsocket.backend = vsocket.loop_backend = vsocket._no_backend
    if _State.loop_app is not None:
        _State.loop_app.close()
    _State.app = _State.reopen = _State.loop_app = None


def held_apps() -> list[Any]:
    """The apps this process's interposed sockets go through (its own: not the copies a
    forked child keeps of its parent's), for leaving them at exit (`pyvcl.interpose.leave`)."""
    return [app for app in (_State.app, _State.loop_app) if app is not None]


def enabled() -> bool:
    vsocket = _loaded()
    return vsocket is not None and socket.socket is vsocket.InterposedSocket


def is_interposed(sock: object) -> bool:
    """Whether ``sock`` is carried by a VPP session (its descriptor signals, carries nothing)."""
    vsocket = _loaded()
    return (
        vsocket is not None
        and isinstance(sock, vsocket.InterposedSocket)
        and sock._carrier is not None
    )
