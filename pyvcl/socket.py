"""A drop-in for the parts of the standard `socket` module a TCP program uses.

    from pyvcl import socket
    s = socket.create_connection(("127.0.0.1", 8080))

Sockets are `pyvcl.vclsocket.VclSocket`s of the process-wide app (`pyvcl.fallback.default_app`)
attached the way C VCL attaches (``$VCL_CONFIG`` and the ``VCL_*`` variables, see
`pyvcl.config`).  When no VPP is reachable they are the standard library's kernel sockets
instead, so the same program runs with or without VPP (set ``PYVCL_NO_FALLBACK=1`` to make
that an error), and new sockets go through VPP again once it is back (docs/restarts.md).
The app belongs to the process that first used it: a forked child gets its own on first use.
"""

from __future__ import annotations

import errno
import os
import socket as _std
from typing import Any

from .errors import VppUnreachable

AF_INET = _std.AF_INET
AF_INET6 = _std.AF_INET6
SOCK_STREAM = _std.SOCK_STREAM
SHUT_RD, SHUT_WR, SHUT_RDWR = _std.SHUT_RD, _std.SHUT_WR, _std.SHUT_RDWR
SOL_SOCKET, SO_REUSEADDR = _std.SOL_SOCKET, _std.SO_REUSEADDR
IPPROTO_TCP, TCP_NODELAY = _std.IPPROTO_TCP, _std.TCP_NODELAY
error = OSError
timeout = TimeoutError
gaierror = _std.gaierror


def default_app() -> Any:
    """The process-wide app (`pyvcl.fallback.default_app`): attached as C VCL would on first
    use, kernel sockets while no VPP is reachable, following VPP across restarts
    (docs/restarts.md).  With ``PYVCL_NO_FALLBACK=1`` an unreachable VPP raises instead."""
    from .fallback import default_app as process_app  # the data path, imported on first use

    app = process_app()
    if os.environ.get("PYVCL_NO_FALLBACK") and not app.is_vpp:
        reason = app.reason
        raise reason if reason is not None else VppUnreachable("VPP is not reachable")
    return app


def __getattr__(name: str) -> Any:
    if name == "VclApp":  # was imported here eagerly; still reachable as pyvcl.socket.VclApp
        from .vclsocket import VclApp

        return VclApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def socket(family: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0) -> Any:
    app = default_app()
    if type != SOCK_STREAM:
        if not app.is_vpp:
            return _std.socket(family, type, proto)
        raise OSError(errno.ESOCKTNOSUPPORT, "pyvcl supports SOCK_STREAM sockets")
    return app.socket(family)


def create_connection(address: tuple[Any, ...], timeout: float | None = None) -> Any:
    return default_app().create_connection(address, timeout)


def create_server(address: tuple[Any, ...], *, backlog: int | None = None, **_: Any) -> Any:
    return default_app().create_server(address, backlog=backlog)
