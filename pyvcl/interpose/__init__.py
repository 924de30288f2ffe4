"""Interposition: the standard `socket` module's TCP sockets over VPP, for unmodified programs.

`enable(app)` makes ``socket.socket(AF_INET/AF_INET6, SOCK_STREAM)`` (and everything built on
it: ``create_connection``, ``create_server``, socketserver, http, asyncio's own event loop)
return sockets carried by VPP sessions of ``app`` (an `pyvcl.fallback.OpportunisticApp`),
each with a real file descriptor whose readiness follows the session.  Other kinds of socket
stay kernel sockets.  `pyvcl run` (pyvcl.cli.run) enables it before running a program.
"""

from __future__ import annotations

from typing import Any

__all__ = ["disable", "enable", "enabled"]

_enabled: Any = None


def enable(app: Any) -> None:
    """Route new AF_INET/AF_INET6 stream sockets of this process through ``app``."""
    raise NotImplementedError("interposition core: in progress (issue 9)")


def disable() -> None:
    """Undo `enable`: new sockets are kernel sockets again (existing ones keep working)."""
    global _enabled
    _enabled = None


def enabled() -> bool:
    return _enabled is not None
