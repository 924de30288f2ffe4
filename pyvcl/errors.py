"""pyvcl's exceptions: one root, `VclError`, which is an `OSError` with a fitting errno.

The split follows h11's: `LocalError` means the caller misused pyvcl (fix your code);
`RemoteError` means VPP, the app socket or shared memory written by another process said
something impossible (fix or restart VPP).  Both carry an errno a socket user expects, so
``except OSError`` keeps working for code written against kernel sockets.

This is the bottom layer: it imports nothing of pyvcl when imported, so every layer, the wire
declarations included, raises these exceptions (tests/test_layers.py).
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


class PeerStalled(RemoteError):
    """A process sharing the memory made no progress for longer than a live one ever does: it
    has held a shared mutex, or left a message queue full, past the stall limit
    (`ProcessSharedMutex.hold_limit`, `pyvcl.mq.queue.MessageQueue.stall_limit`).  The peer
    (usually VPP) is frozen or dead, or the shared words were corrupted."""

    default_errno = _errno.ETIMEDOUT


class AppSocketError(RemoteError):
    """The app socket misbehaved: truncated/oversized message, missing fds, unexpected type."""


class RecordingError(VclError):
    """A recording (an app-socket trace or a shared-memory snapshot) is malformed: its JSON
    structure, or a number, offset or length in it, is not what the format allows.  Nothing
    live is involved.  ``path`` is the file, when known; it leads the message."""

    default_errno = _errno.EBADMSG

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(f"{path}: {message}" if path is not None else message)
        self.reason = message
        self.path = path

    def at(self, path: object) -> RecordingError:
        """This error, naming ``path`` (itself if it already names a file)."""
        return self if self.path is not None else RecordingError(self.reason, path)


class VppUnreachable(VclError):
    """No VPP answers at the app socket path (absent, refused, or not a VPP socket)."""

    default_errno = _errno.ECONNREFUSED


class VppDisconnected(VclError, ConnectionResetError):
    """VPP closed the app socket (it stopped or detached us); every handle is now void.
    To a socket user that is a dead peer: a ConnectionResetError (ECONNRESET)."""

    default_errno = _errno.ECONNRESET


class WouldBlock(VclError, BlockingIOError):
    """A non-blocking operation found no room or no data (queue full, fifo empty)."""

    default_errno = _errno.EAGAIN


class Timeout(VclError, TimeoutError):
    """A blocking operation did not complete within its timeout."""

    default_errno = _errno.ETIMEDOUT


class ConnectionRefused(VclError, ConnectionRefusedError):
    """The peer (or VPP on its behalf) refused the connection."""

    default_errno = _errno.ECONNREFUSED


class ConnectionReset(VclError, ConnectionResetError):
    """The peer reset the connection (VPP sent RESET), or the session vanished."""

    default_errno = _errno.ECONNRESET


class BrokenPipe(VclError, BrokenPipeError):
    """Writing after shutdown(SHUT_WR), close, or after the peer closed the connection."""

    default_errno = _errno.EPIPE


class NotConnected(LocalError):
    """The operation needs a connected session."""

    default_errno = _errno.ENOTCONN


class SessionLayerError(VclError):
    """VPP answered a request with a non-zero ``session_error_t``.

    ``code`` is the raw (negative) value, ``name`` its C enumerator name.
    """

    def __init__(self, message: str, code: int, name: str, errno: int) -> None:
        super().__init__(f"{message}: {name} ({code})", errno)
        self.code = code
        self.name = name


class SessionRefused(SessionLayerError, ConnectionRefusedError):
    """A session_error_t that means "refused" (REFUSED, NOLISTEN, FILTERED, LOCAL_CONNECT)."""


def session_error(message: str, retval: int) -> SessionLayerError:
    """The exception for a non-zero ``session_error_t`` ``retval`` VPP answered with."""
    # At call time: session_error_t is declared in wire, which sits above this module (the one
    # upward import, listed in tests/test_layers.py).
    from .wire.enums import SessionError

    try:
        name = SessionError(retval).name
    except ValueError:
        name = "UNKNOWN_CODE"
    return SessionLayerError(
        message, retval, f"SESSION_E_{name}", SESSION_ERRNO.get(name, _errno.EIO)
    )


# session_error_t name -> the errno a socket user would see for it.
SESSION_ERRNO = {
    "UNKNOWN": _errno.EIO,
    "REFUSED": _errno.ECONNREFUSED,
    "TIMEDOUT": _errno.ETIMEDOUT,
    "ALLOC": _errno.ENOBUFS,
    "OWNER": _errno.EPERM,
    "NOROUTE": _errno.EHOSTUNREACH,
    "NOINTF": _errno.EADDRNOTAVAIL,
    "NOIP": _errno.EADDRNOTAVAIL,
    "NOPORT": _errno.EADDRNOTAVAIL,
    "NOSUPPORT": _errno.EOPNOTSUPP,
    "NOLISTEN": _errno.ECONNREFUSED,
    "NOSESSION": _errno.ENOTCONN,
    "NOAPP": _errno.ENOENT,
    "APP_ATTACHED": _errno.EISCONN,
    "PORTINUSE": _errno.EADDRINUSE,
    "IPINUSE": _errno.EADDRINUSE,
    "ALREADY_LISTENING": _errno.EADDRINUSE,
    "ADDR_NOT_IN_USE": _errno.EADDRNOTAVAIL,
    "INVALID": _errno.EINVAL,
    "INVALID_RMT_IP": _errno.EINVAL,
    "INVALID_APPWRK": _errno.EINVAL,
    "INVALID_NS": _errno.EINVAL,
    "SEG_NO_SPACE": _errno.ENOBUFS,
    "SEG_NO_SPACE2": _errno.ENOBUFS,
    "SEG_CREATE": _errno.ENOMEM,
    "FILTERED": _errno.ECONNREFUSED,
    "SCOPE": _errno.EACCES,
    "BAPI_NO_FD": _errno.EIO,
    "BAPI_SEND_FD": _errno.EIO,
    "BAPI_NO_REG": _errno.EIO,
    "MQ_MSG_ALLOC": _errno.ENOBUFS,
    "TLS_HANDSHAKE": _errno.ECONNABORTED,
    "EVENTFD_ALLOC": _errno.EMFILE,
    "NOEXTCFG": _errno.EINVAL,
    "NOCRYPTOENG": _errno.EOPNOTSUPP,
    "NOCRYPTOCKP": _errno.ENOENT,
    "LOCAL_CONNECT": _errno.ECONNREFUSED,
    "WRONG_NS_SECRET": _errno.EACCES,
    "SYSCALL": _errno.EIO,
    "TRANSPORT_NO_REG": _errno.EPROTONOSUPPORT,
    "MAX_STREAMS_HIT": _errno.EAGAIN,
}
