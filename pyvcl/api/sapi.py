"""The app socket ("sapi"): a unix SEQPACKET connection to VPP's session layer.

Framing (protocol.md 2.1): every message either way is exactly one 209-byte
``app_sapi_msg_t``; replies may carry fds in one SCM_RIGHTS control message.  VPP detaches the
socket's worker on any message of another size, so `SapiSocket.send` only ever writes whole
frames.  One connection per app worker: closing it deletes the worker.

Received fds are owned by whoever gets them from `recv`; on any error inside `recv` they are
closed here, so a malformed reply never leaks descriptors.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import os
import select
import socket
from dataclasses import dataclass, field
from typing import Any

from ..errors import AppSocketError, Timeout, VppDisconnected, VppUnreachable
from ..interrupts import interruptible
from ..wire.enums import SapiMsgType
from ..wire.sapi import SAPI_MSG_SIZE, SAPI_PAYLOAD_OFFSET, SAPI_PAYLOAD_SIZE

# VCL's receive buffer has room for 32 fds (vcl_sapi.c); VPP never sends more in one reply.
MAX_FDS_PER_MSG = 32
DEFAULT_TIMEOUT = 10.0
# poll(2) bits that mean the peer is gone: hang-up, its half of the shutdown, or an error.
_CLOSED_MASK = select.POLLHUP | select.POLLRDHUP | select.POLLERR
ABSTRACT_PREFIX = "abstract:"


@dataclass
class SapiMessage:
    """One received frame: its type, the 208-byte payload and the fds that came with it."""

    type: int
    payload: bytes
    fds: list[int] = field(default_factory=list)

    @property
    def type_name(self) -> str:
        try:
            return SapiMsgType(self.type).name
        except ValueError:
            return f"UNKNOWN_{self.type}"

    def close_fds(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


def encode_frame(msg_type: int, payload: bytes = b"") -> bytes:
    """A whole 209-byte frame: the type byte and the payload, zero padded."""
    if len(payload) > SAPI_PAYLOAD_SIZE:
        raise ValueError(f"sapi payload of {len(payload)} bytes exceeds {SAPI_PAYLOAD_SIZE}")
    frame = bytes((msg_type,)) + payload
    return frame + bytes(SAPI_MSG_SIZE - len(frame))


def socket_address(path: str | os.PathLike[str]) -> str:
    """The address to connect to: a filesystem path, or "abstract:NAME" for the abstract
    namespace (VPP's ``app ns add ... sock-name abstract:NAME``)."""
    text = os.fspath(path)
    if text.startswith(ABSTRACT_PREFIX):
        return "\0" + text[len(ABSTRACT_PREFIX) :]
    return text


class SapiSocket:
    """A connected app socket.  Blocking; every receive is bounded by ``timeout`` seconds."""

    def __init__(self, sock: socket.socket, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = sock
        self.path = path
        self.timeout = timeout

    @classmethod
    def connect(cls, path: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT) -> SapiSocket:
        text = os.fspath(path)
        address = socket_address(text)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except FileNotFoundError:
            sock.close()
            raise VppUnreachable(
                f"no VPP app socket at {text} (is VPP running with the session layer enabled,"
                " and is this the app namespace socket you meant?)",
                errno.ENOENT,
            ) from None
        except ConnectionRefusedError:
            sock.close()
            raise VppUnreachable(f"nothing accepts connections at {text}") from None
        except PermissionError:
            sock.close()
            raise VppUnreachable(
                f"permission denied on {text}: VPP decides who may attach by this socket's"
                " file permissions",
                errno.EACCES,
            ) from None
        except TimeoutError:
            sock.close()
            raise VppUnreachable(f"connecting to {text} timed out", errno.ETIMEDOUT) from None
        except OSError as e:
            sock.close()
            if e.errno in (errno.EPROTOTYPE, errno.ENOTSOCK, errno.ECONNREFUSED):
                raise VppUnreachable(
                    f"{text} is not a VPP app socket ({e.strerror})", e.errno
                ) from None
            raise VppUnreachable(f"cannot connect to {text}: {e.strerror}", e.errno) from None
        return cls(sock, text, timeout)

    # -- io -----------------------------------------------------------------------------------
    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg_type: int, payload: bytes = b"") -> None:
        self.send_raw(encode_frame(msg_type, payload))

    def send_raw(self, data: bytes) -> None:
        """Send one SEQPACKET message as is (a frame, or the cert/key blob that follows one)."""
        try:
            sent = self.sock.send(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise VppDisconnected(f"VPP closed the app socket {self.path}") from e
        except TimeoutError as e:
            raise Timeout(f"sending on the app socket {self.path} timed out") from e
        if sent != len(data):  # SEQPACKET sends whole messages; anything else is a kernel bug
            raise AppSocketError(f"short send on the app socket: {sent} of {len(data)} bytes")

    def send_pair(self, first: bytes, second: bytes) -> None:
        """Send two messages in one ``sendmmsg`` call, so the second is queued before VPP can
        read the first: VPP waits only ~5 us for a cert/key blob after its header
        (``sapi_socket_receive_wait``).  Falls back to two sends without ``sendmmsg``."""
        sent = _sendmmsg(self.sock.fileno(), (first, second))
        if sent is None:
            self.send_raw(first)
            self.send_raw(second)
            return
        if sent < 0:
            err = -sent
            if err in (errno.EPIPE, errno.ECONNRESET):
                raise VppDisconnected(f"VPP closed the app socket {self.path}")
            raise AppSocketError(f"sendmmsg on the app socket failed: {os.strerror(err)}", err)
        if sent != 2:
            # The first went alone; the blob still must follow it (best effort, at once).
            self.send_raw(second)

    def recv(self, timeout: float | None = None) -> SapiMessage:
        """Receive one frame with its fds.  Raises `VppDisconnected` on EOF, `Timeout` when
        nothing arrives in time, `AppSocketError` on a frame of the wrong size or a control
        message that was cut (fds lost)."""
        wait = self.timeout if timeout is None else timeout
        self.sock.settimeout(wait)
        fd_bytes = socket.CMSG_SPACE(MAX_FDS_PER_MSG * array.array("i").itemsize)
        # Ctrl-C waits here, not in recvmsg: a frame taken with its fds must not be dropped
        # between the call and its result (pyvcl.interrupts).
        _wait_readable(self.sock.fileno(), wait)
        try:
            # One byte more than a frame so an oversized message shows as MSG_TRUNC-or-longer.
            data, ancdata, flags, _ = self.sock.recvmsg(SAPI_MSG_SIZE + 1, fd_bytes)
        except TimeoutError:
            raise Timeout(
                f"VPP did not answer on {self.path} within {self.sock.gettimeout()} s"
            ) from None
        except ConnectionResetError as e:
            raise VppDisconnected(f"VPP reset the app socket {self.path}") from e
        fds = _fds_from(ancdata)
        msg = SapiMessage(data[0] if data else 0, data[SAPI_PAYLOAD_OFFSET:], fds)
        if not data:
            msg.close_fds()
            raise VppDisconnected(f"VPP closed the app socket {self.path}")
        if flags & socket.MSG_CTRUNC:
            msg.close_fds()
            raise AppSocketError("VPP sent more fds than fit one message; fds were lost")
        if len(data) != SAPI_MSG_SIZE or flags & socket.MSG_TRUNC:
            msg.close_fds()
            raise AppSocketError(
                f"app socket message of {len(data)}{'+' if flags & socket.MSG_TRUNC else ''}"
                f" bytes; every message must be {SAPI_MSG_SIZE} (is {self.path} a VPP?)"
            )
        return msg

    def recv_expect(self, msg_type: int, timeout: float | None = None) -> SapiMessage:
        """Receive one frame and require its type."""
        msg = self.recv(timeout)
        if msg.type != msg_type:
            msg.close_fds()
            raise AppSocketError(
                f"expected {SapiMsgType(msg_type).name} on the app socket, got {msg.type_name}"
            )
        return msg

    def poll_closed(self, timeout: float = 0.0) -> bool:
        """True if VPP has closed its end (hang-up or error pending), without consuming a
        frame; waits up to ``timeout`` seconds for it (default: not at all).  Asks poll(2)
        rather than peeking: a peek on this socket waits up to its timeout when another
        thread took the pending frame first (a socket with a timeout polls before every
        receive, MSG_DONTWAIT or not), and a timed-out peek must not read as "closed".  A
        unix SEQPACKET socket reports POLLHUP once its peer is closed (unix_release_sock
        shuts both directions), pending frames or not."""
        fd = self.sock.fileno()
        if fd < 0:
            return True  # closed on our side: nothing more will come from VPP either
        poller = select.poll()
        poller.register(fd, _CLOSED_MASK)
        try:
            ready = poller.poll(max(0, round(timeout * 1000)))
        except InterruptedError:
            return False
        return any(mask & _CLOSED_MASK for _, mask in ready)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SapiSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def _libc_sendmmsg() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sendmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SENDMMSG = _libc_sendmmsg()


def _sendmmsg(fd: int, messages: tuple[bytes, ...]) -> int | None:
    """Messages sent by one sendmmsg(2), -errno on failure, None without sendmmsg."""
    if _SENDMMSG is None:
        return None
    bufs = [ctypes.create_string_buffer(m, len(m)) for m in messages]
    iovs = [
        _Iovec(ctypes.cast(b, ctypes.c_void_p), len(m)) for b, m in zip(bufs, messages, strict=True)
    ]
    vec = (_Mmsghdr * len(messages))()
    for i, iov in enumerate(iovs):
        vec[i].msg_hdr.msg_iov = ctypes.pointer(iov)
        vec[i].msg_hdr.msg_iovlen = 1
    n = int(_SENDMMSG(fd, vec, len(messages), socket.MSG_NOSIGNAL))
    return -ctypes.get_errno() if n < 0 else n


def _fds_from(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            usable = len(data) - len(data) % arr.itemsize
            arr.frombytes(data[:usable])
            fds.extend(arr)
    return fds


@interruptible
def _wait_readable(fd: int, timeout: float | None) -> None:
    """Wait until ``fd`` has something to read (or hung up), up to ``timeout`` seconds; the
    recvmsg that follows reports a timeout itself."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999)))
