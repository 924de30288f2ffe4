"""A drop-in for the parts of the standard `socket` module a TCP program uses.

    from pyvcl import socket
    s = socket.create_connection(("127.0.0.1", 8080))

Sockets are `pyvcl.sockets.VclSocket`s of one process-wide app attached the way C VCL
attaches (``$VCL_CONFIG`` and the ``VCL_*`` variables, see `pyvcl.config`).  When no VPP is
reachable they are the standard library's kernel sockets instead, so the same program runs
with or without VPP (set ``PYVCL_NO_FALLBACK=1`` to make that an error).  The app belongs to
the process that first used it: a forked child gets its own on first use.
"""

from __future__ import annotations

import errno
import os
import socket as _std
import threading
from typing import TYPE_CHECKING, Any

from .errors import VppUnreachable

if TYPE_CHECKING:
    from .sockets import VclApp

AF_INET = _std.AF_INET
AF_INET6 = _std.AF_INET6
SOCK_STREAM = _std.SOCK_STREAM
SHUT_RD, SHUT_WR, SHUT_RDWR = _std.SHUT_RD, _std.SHUT_WR, _std.SHUT_RDWR
SOL_SOCKET, SO_REUSEADDR = _std.SOL_SOCKET, _std.SO_REUSEADDR
IPPROTO_TCP, TCP_NODELAY = _std.IPPROTO_TCP, _std.TCP_NODELAY
error = OSError
timeout = TimeoutError
gaierror = _std.gaierror

_lock = threading.Lock()
_app: VclApp | None = None
_app_pid = 0
_kernel = False


def default_app() -> VclApp | None:
    """The process-wide app, attached on first use; None when falling back to the kernel."""
    global _app, _app_pid, _kernel
    with _lock:
        if _app_pid != os.getpid():
            _app, _kernel = None, False  # a forked child must not use its parent's app
            _app_pid = os.getpid()
        if _app is None and not _kernel:
            from .sockets import VclApp  # the data path, imported on first use

            try:
                _app = VclApp.from_env()
            except VppUnreachable:
                if os.environ.get("PYVCL_NO_FALLBACK"):
                    raise
                _kernel = True
        return _app


def __getattr__(name: str) -> Any:
    if name == "VclApp":  # was imported here eagerly; still reachable as pyvcl.socket.VclApp
        from .sockets import VclApp

        return VclApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def socket(family: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0) -> Any:
    app = default_app()
    if app is None:
        return _std.socket(family, type, proto)
    if type != SOCK_STREAM:
        raise OSError(errno.ESOCKTNOSUPPORT, "pyvcl supports SOCK_STREAM sockets")
    return app.socket(family)


def create_connection(address: tuple[Any, ...], timeout: float | None = None) -> Any:
    app = default_app()
    if app is None:
        return _std.create_connection(address, timeout)
    return app.create_connection(address, timeout)


def create_server(address: tuple[Any, ...], *, backlog: int | None = None, **_: Any) -> Any:
    app = default_app()
    if app is None:
        return _std.create_server(address, backlog=backlog)
    return app.create_server(address, backlog=backlog)
