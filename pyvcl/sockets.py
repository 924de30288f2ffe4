"""Socket-like TCP over VPP: `VclApp` (an attached app) and `VclSocket` (one session).

    with pyvcl.VclApp(app_socket="/run/vpp/app_ns_sockets/default") as app:
        with app.create_connection(("127.0.0.1", 8080)) as s:
            s.sendall(b"hello")
            print(s.recv(100))

`VclSocket` behaves like a blocking `socket.socket` of type SOCK_STREAM: ``settimeout``,
``setblocking``, ``send``/``sendall``/``recv``/``recv_into``, ``shutdown``, ``close``,
``getsockname``/``getpeername``, ``accept`` on a listening one; errors are the OSError
subclasses a socket user expects (ConnectionRefusedError, ConnectionResetError,
BrokenPipeError, TimeoutError, BlockingIOError).  It has no kernel fd: ``fileno()`` is -1.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Any

from .api.messages import AttachOptions
from .app import App
from .errors import LocalError, NotConnected, Timeout
from .session.core import Session, State
from .session.worker import SessionWorker
from .wire.enums import TransportProto

_DEFAULT_SESSION_TIMEOUT = 600.0  # VCL's session-timeout: bound on blocking connect/listen
Address = tuple[Any, ...]


def _parse_address(address: Address) -> tuple[str, int, int]:
    """(ip, port, family) from a ("host", port) tuple; host must be a literal address."""
    if not isinstance(address, tuple) or len(address) < 2:
        raise TypeError(f"address must be a (host, port) tuple, not {address!r}")
    host, port = address[0], address[1]
    if host in ("", None):
        host = "0.0.0.0"
    elif host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise socket.gaierror(
            socket.EAI_NONAME, f"pyvcl needs a literal IP address, not {host!r}"
        ) from None
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise OverflowError(f"port must be 0-65535, not {port!r}")
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    return str(ip), port, family


class VclApp:
    """An app attached to VPP, able to open TCP sessions.  A context manager."""

    def __init__(
        self,
        app_socket: str | os.PathLike[str] | None = None,
        options: AttachOptions | None = None,
        *,
        config: Any = None,
        timeout: float = 10.0,
        session_timeout: float | None = None,
        **option_values: Any,
    ) -> None:
        if config is not None:
            app_socket = app_socket or config.app_socket_path()
            options = options or config.attach_options()
            if session_timeout is None:
                session_timeout = getattr(config, "session_timeout", None)
        self.app = App.attach(app_socket, options, timeout=timeout, **option_values)
        self.worker = SessionWorker(self.app)
        self.session_timeout = session_timeout or _DEFAULT_SESSION_TIMEOUT

    @classmethod
    def from_env(cls, **kw: Any) -> VclApp:
        """Attach as C VCL would: ``$VCL_CONFIG`` (vcl.conf) and the VCL_* variables."""
        from .config import load_vcl_config

        cfg = load_vcl_config()
        return cls(config=cfg, **kw)

    def socket(self, family: int = socket.AF_INET) -> VclSocket:
        return VclSocket(self, family)

    def create_connection(self, address: Address, timeout: float | None = None) -> VclSocket:
        s = VclSocket(self, _parse_address(address)[2])
        s.settimeout(timeout)
        try:
            s.connect(address)
        except BaseException:
            s.close()
            raise
        return s

    def create_server(self, address: Address, *, backlog: int | None = None) -> VclSocket:
        s = VclSocket(self, _parse_address(address)[2])
        try:
            s.bind(address)
            s.listen(backlog)
        except BaseException:
            s.close()
            raise
        return s

    def close(self) -> None:
        """Detach.  Threads still blocked in this app's sockets get an error (EBADF)."""
        if self.app.closed:
            return
        self.worker.shutdown_worker(LocalError("the VclApp was closed", errno.EBADF))
        self.app.detach()

    @property
    def closed(self) -> bool:
        return self.app.closed

    def __enter__(self) -> VclApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VclSocket:
    """One TCP session (or listener) of a `VclApp`."""

    type = socket.SOCK_STREAM
    proto = 0

    def __init__(self, app: VclApp, family: int = socket.AF_INET) -> None:
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError("pyvcl sockets are AF_INET or AF_INET6")
        self.family = family
        self._app = app
        self._worker = app.worker
        with self._worker.lock:
            self._s: Session = self._worker.layer.new_session(TransportProto.TCP)
        self._timeout: float | None = socket.getdefaulttimeout()
        self._bound: tuple[str, int] | None = None
        self._closed = False

    # -- options ----------------------------------------------------------------------------
    def settimeout(self, timeout: float | None) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError("Timeout value out of range")
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def fileno(self) -> int:
        return -1  # no kernel descriptor: readiness comes from VPP's message queue

    # -- connection setup ------------------------------------------------------------------
    def _wait_timeout(self) -> float:
        return self._app.session_timeout if self._timeout is None else self._timeout

    def connect(self, address: Address) -> None:
        self._check_open()
        ip, port, family = _parse_address(address)
        if family != self.family:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        s, w = self._s, self._worker
        if s.state != State.CREATED:
            raise OSError(errno.EISCONN, "Transport endpoint is already connected")
        w.request(w.layer.connect(s, ip, port))
        if self._timeout == 0:
            raise BlockingIOError(errno.EINPROGRESS, "Operation now in progress")
        try:
            w.wait_state(s, {State.READY, State.PEER_CLOSED, State.RESET}, self._wait_timeout(),
                         f"connect to {ip}:{port}")  # fmt: skip
        except Timeout:
            self.close()
            raise

    def bind(self, address: Address) -> None:
        self._check_open()
        ip, port, family = _parse_address(address)
        if family != self.family:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        if self._s.state != State.CREATED or self._bound is not None:
            raise OSError(errno.EINVAL, "Invalid argument: already bound")
        self._bound = (ip, port)

    def listen(self, backlog: int | None = None) -> None:
        """Start listening (VPP has no backlog: pending sessions queue in our app)."""
        self._check_open()
        if self._bound is None:
            self._bound = ("0.0.0.0" if self.family == socket.AF_INET else "::", 0)
        s, w = self._s, self._worker
        w.request(w.layer.listen(s, *self._bound))
        w.wait_state(s, {State.LISTENING}, self._app.session_timeout, f"listen on {self._bound}")

    def accept(self) -> tuple[VclSocket, Address]:
        self._check_open()
        s, w = self._s, self._worker
        if not s.is_listener or s.state != State.LISTENING:
            raise OSError(errno.EINVAL, "Invalid argument: not listening")
        if not w.wait_until(lambda: bool(s.accepted) or s.state != State.LISTENING,
                            self._timeout):  # fmt: skip
            if self._timeout == 0:
                raise BlockingIOError(errno.EAGAIN, "no connection to accept")
            raise TimeoutError("accept timed out")
        with w.lock:
            new, actions = w.layer.accept(s)
            if new is None:
                raise OSError(errno.EINVAL, "listener closed")
            w.execute(actions)
        sock = VclSocket.__new__(VclSocket)
        sock.family, sock._app, sock._worker, sock._s = self.family, self._app, w, new
        sock._timeout, sock._bound, sock._closed = socket.getdefaulttimeout(), None, False
        return sock, sock._sockaddr(new.peer or ("0.0.0.0", 0))

    # -- data -------------------------------------------------------------------------------
    def send(self, data: Any, flags: int = 0) -> int:
        self._check_open()
        if flags:
            raise ValueError("send flags are not supported")
        return self._worker.send(self._s, data, self._timeout)

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        total = 0
        while total < len(view):
            total += self.send(view[total:], flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        buf = bytearray(bufsize)
        n = self.recv_into(buf, bufsize, flags)
        del buf[n:]
        return bytes(buf)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._check_open()
        if flags:
            raise ValueError("recv flags are not supported")
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        return self._worker.recv_into(self._s, view, self._timeout)

    # -- closing ----------------------------------------------------------------------------
    def shutdown(self, how: int) -> None:
        self._check_open()
        s, w = self._s, self._worker
        if s.state not in (State.READY, State.PEER_CLOSED, State.RESET):
            raise NotConnected("shutdown on a socket that is not connected")
        if how in (socket.SHUT_RD, socket.SHUT_RDWR):
            s.shut_rd = True
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            w.request(w.layer.shutdown(s))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._app.closed:
            self._worker.close(self._s)

    @property
    def closed(self) -> bool:
        return self._closed

    def detach(self) -> int:
        raise OSError(errno.EOPNOTSUPP, "pyvcl sockets have no fd to detach")

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if self._app.closed:
            raise LocalError("the VclApp of this socket is closed", errno.EBADF)

    # -- addresses --------------------------------------------------------------------------
    def getsockname(self) -> Address:
        if self._s.local is not None:
            return self._sockaddr(self._s.local)
        if self._bound is not None:
            return self._sockaddr(self._bound)
        return self._sockaddr(("0.0.0.0" if self.family == socket.AF_INET else "::", 0))

    def getpeername(self) -> Address:
        if self._s.peer is None or self._s.state not in (State.READY, State.PEER_CLOSED):
            raise NotConnected("socket is not connected")
        return self._sockaddr(self._s.peer)

    def _sockaddr(self, addr: tuple[str, int]) -> Address:
        """As the socket module returns them: (host, port) or (host, port, flowinfo, scope)."""
        if self.family == socket.AF_INET6:
            host = addr[0]
            if ":" not in host:  # VPP left an IPv4-shaped zero address on a v6 session
                host = "::" if host == "0.0.0.0" else f"::ffff:{host}"
            return (host, addr[1], 0, 0)
        return addr

    def __enter__(self) -> VclSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        st = "closed" if self._closed else self._s.state.value
        return f"<pyvcl.VclSocket {st} laddr={self.getsockname()}>"
