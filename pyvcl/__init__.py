"""pyvcl: a pure-Python client for VPP's host stack (a from-scratch VCL).

pyvcl attaches to VPP over the session layer's app socket, maps the shared-memory segments VPP
hands it, and reads and writes VPP's message queues and fifos directly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AppSocketError,
    LocalError,
    RemoteError,
    SessionLayerError,
    SharedMemoryError,
    Timeout,
    VclError,
    VppDisconnected,
    VppUnreachable,
    WouldBlock,
)

if TYPE_CHECKING:
    from .fallback import KernelApp, create_connection, create_server, is_vpp, open_app
    from .vclsocket import VclApp, VclSocket

__version__ = "0.1.0"

__all__ = [
    "AppSocketError",
    "KernelApp",
    "LocalError",
    "RemoteError",
    "SessionLayerError",
    "SharedMemoryError",
    "Timeout",
    "VclApp",
    "VclError",
    "VclSocket",
    "VppDisconnected",
    "VppUnreachable",
    "WouldBlock",
    "__version__",
    "create_connection",
    "create_server",
    "is_vpp",
    "open_app",
]

# Imported on first use: they pull in the whole data path (app, fifos, queues), the errors do not.
_LAZY = {
    "KernelApp": "fallback",
    "create_connection": "fallback",
    "create_server": "fallback",
    "is_vpp": "fallback",
    "open_app": "fallback",
    "VclApp": "vclsocket",
    "VclSocket": "vclsocket",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
