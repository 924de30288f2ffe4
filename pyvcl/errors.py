"""pyvcl's exceptions: one root, `VclError`, which is an `OSError` with a fitting errno.

The split follows h11's: `LocalError` means the caller misused pyvcl (fix your code);
`RemoteError` means VPP, the app socket or shared memory written by another process said
something impossible (fix or restart VPP).  Both carry an errno a socket user expects, so
``except OSError`` keeps working for code written against kernel sockets.
"""

from __future__ import annotations

import errno as _errno


class VclError(OSError):
    """Root of every pyvcl error.  ``errno`` and ``strerror`` are set like a socket error's."""

    default_errno = _errno.EIO

    def __init__(self, message: str, errno: int | None = None) -> None:
        code = self.default_errno if errno is None else errno
        super().__init__(code, message)

    def __str__(self) -> str:
        return f"{self.strerror} [{_errno.errorcode.get(self.errno or 0, self.errno)}]"


class LocalError(VclError):
    """The caller asked for something pyvcl cannot do in this state (a usage error)."""

    default_errno = _errno.EINVAL


class RemoteError(VclError):
    """VPP or a peer's shared memory broke the protocol: a bad message, offset or size."""

    default_errno = _errno.EPROTO


class SharedMemoryError(RemoteError):
    """An offset, length or index read from a shared segment points outside what is mapped,
    or violates a layout invariant (alignment, chain order).  Never raised for data we wrote."""

    default_errno = _errno.EFAULT


class AppSocketError(RemoteError):
    """The app socket misbehaved: truncated/oversized message, missing fds, unexpected type."""


class VppUnreachable(VclError):
    """No VPP answers at the app socket path (absent, refused, or not a VPP socket)."""

    default_errno = _errno.ECONNREFUSED


class VppDisconnected(VclError):
    """VPP closed the app socket (it stopped or detached us); every handle is now void."""

    default_errno = _errno.ECONNRESET


class WouldBlock(VclError, BlockingIOError):
    """A non-blocking operation found no room or no data (queue full, fifo empty)."""

    default_errno = _errno.EAGAIN


class Timeout(VclError, TimeoutError):
    """A blocking operation did not complete within its timeout."""

    default_errno = _errno.ETIMEDOUT


class SessionLayerError(VclError):
    """VPP answered a request with a non-zero ``session_error_t``.

    ``code`` is the raw (negative) value, ``name`` its C enumerator name.
    """

    def __init__(self, message: str, code: int, name: str, errno: int) -> None:
        super().__init__(f"{message}: {name} ({code})", errno)
        self.code = code
        self.name = name
