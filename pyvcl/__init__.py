"""pyvcl: a pure-Python client for VPP's host stack (a from-scratch VCL).

pyvcl attaches to VPP over the session layer's app socket, maps the shared-memory segments VPP
hands it, and reads and writes VPP's message queues and fifos directly.
"""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = [
    "AppSocketError",
    "LocalError",
    "RemoteError",
    "SessionLayerError",
    "SharedMemoryError",
    "Timeout",
    "VclError",
    "VppDisconnected",
    "VppUnreachable",
    "WouldBlock",
    "__version__",
]
