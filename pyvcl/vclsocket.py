"""Socket-like TCP over VPP: `VclApp` (an attached app) and `VclSocket` (one session).

    with pyvcl.VclApp(app_socket="/run/vpp/app_ns_sockets/default") as app:
        with app.create_connection(("127.0.0.1", 8080)) as s:
            s.sendall(b"hello")
            print(s.recv(100))

`VclSocket` behaves like a `socket.socket` of type SOCK_STREAM: ``settimeout``,
``setblocking``, ``send``/``sendall``/``recv``/``recv_into``, ``shutdown``, ``close``,
``getsockname``/``getpeername``, ``accept`` on a listening one; errors are the OSError
subclasses a socket user expects (ConnectionRefusedError, ConnectionResetError,
BrokenPipeError, TimeoutError, BlockingIOError).  Non-blocking (``setblocking(False)``) it
acts as a kernel socket does: ``connect`` raises EINPROGRESS and the result is read with
``getsockopt(SOL_SOCKET, SO_ERROR)`` once the socket is writable, recv/send/accept raise
EAGAIN.  It has no kernel fd (``fileno()`` is -1): wait for readiness with
`pyvcl.selector.VclSelector` or use `pyvcl.aio` (docs/async.md).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from .api.messages import AttachOptions
from .app import App
from .errors import LocalError, NotConnected, Timeout, VclError, WouldBlock
from .session.core import Session, State
from .session.idle import IdleDrain
from .session.worker import DataPath, SessionWorker, listen_connect_error
from .wire.enums import TransportProto

_DEFAULT_SESSION_TIMEOUT = 600.0  # VCL's session-timeout: bound on blocking connect/listen
Address = tuple[Any, ...]


def parse_address(address: Address) -> tuple[str, int, int]:
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


BUSY_POLL_ENV = "PYVCL_BUSY_POLL"
_MAX_BUSY_POLL_US = 10_000_000  # 10 s: more is a mistake (a blocked call would burn a core)


def busy_poll_usec(usec: float | str | None) -> float:
    """The busy-poll time in microseconds: ``usec``, or ``$PYVCL_BUSY_POLL`` when None
    (unset: 0, off).  Raises ValueError for anything but a number in [0, 10 s]."""
    what = "busy_poll"
    if usec is None:
        usec = os.environ.get(BUSY_POLL_ENV, "").strip() or 0
        what = BUSY_POLL_ENV
    try:
        value = float(usec)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of microseconds, not {usec!r}") from None
    if not 0 <= value <= _MAX_BUSY_POLL_US:  # (also refuses nan)
        raise ValueError(f"{what} must be between 0 and {_MAX_BUSY_POLL_US} µs, not {usec!r}")
    return value


def sockaddr_for(addr: Address, family: int) -> Address:
    """An address as a socket of ``family`` reports it: (host, port), or (host, port,
    flowinfo, scope) on AF_INET6, where an IPv4 one is shown v4-mapped (and VPP's
    IPv4-shaped zero address as "::")."""
    if family == socket.AF_INET6 and len(addr) == 2:
        host = addr[0]
        if ":" not in host:
            host = "::" if host == "0.0.0.0" else f"::ffff:{host}"
        return (host, addr[1], 0, 0)
    return addr


def connect_ex_of(connect: Callable[[Any], None], address: Any) -> int:
    """``connect_ex`` from a ``connect``: 0, or the errno it raised (EINPROGRESS included);
    name-resolution errors and errors without an errno are raised, as the socket module does."""
    try:
        connect(address)
    except socket.gaierror:
        raise
    except OSError as e:
        if e.errno is None:
            raise
        return int(e.errno)
    return 0


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
        busy_poll: float | None = None,
        **option_values: Any,
    ) -> None:
        spin = busy_poll_usec(busy_poll)  # (a bad value fails before attaching)
        if config is not None:
            app_socket = app_socket or config.app_socket_path()
            options = options or config.attach_options()
            if session_timeout is None:
                session_timeout = getattr(config, "session_timeout", None)
        self.app = App.attach(app_socket, options, timeout=timeout, **option_values)
        self.worker = SessionWorker(self.app)
        self.worker.busy_poll = spin / 1e6
        self.session_timeout = session_timeout or _DEFAULT_SESSION_TIMEOUT
        # Consumes VPP's messages while none of our threads waits: a full queue makes VPP
        # refuse our connects (pyvcl.session.idle).
        self.idle_drain = IdleDrain(self.worker)

    @property
    def busy_poll(self) -> float:
        """Microseconds a blocking recv/send/accept spins on the fifo and the app mq before it
        sleeps (0: off).  Set with ``VclApp(busy_poll=...)`` or ``$PYVCL_BUSY_POLL``."""
        return self.worker.busy_poll * 1e6

    @busy_poll.setter
    def busy_poll(self, usec: float) -> None:
        self.worker.busy_poll = busy_poll_usec(usec) / 1e6

    @classmethod
    def from_env(cls, **kw: Any) -> VclApp:
        """Attach as C VCL would: ``$VCL_CONFIG`` (vcl.conf) and the VCL_* variables."""
        from .config import load_vcl_config

        cfg = load_vcl_config()
        return cls(config=cfg, **kw)

    def socket(self, family: int = socket.AF_INET) -> VclSocket:
        return VclSocket(self, family)

    def create_connection(self, address: Address, timeout: float | None = None) -> VclSocket:
        s = VclSocket(self, parse_address(address)[2])
        s.settimeout(timeout)
        try:
            s.connect(address)
        except BaseException:
            s.close()
            raise
        return s

    def create_server(self, address: Address, *, backlog: int | None = None) -> VclSocket:
        s = VclSocket(self, parse_address(address)[2])
        try:
            s.bind(address)
            s.listen(backlog)
        except BaseException:
            s.close()
            raise
        return s

    def close(self, linger: float = 0.0) -> None:
        """Detach.  Threads still blocked in this app's sockets get an error (EBADF).

        With ``linger`` (seconds), first wait that long at most for VPP's CLEANUP of the
        sessions already closed, so that VPP has let go of them before the app leaves (and a
        trace shows their end, as `pyvcl nc`'s does).  C VCL does not wait, and VPP cleans up
        after a detach anyway: the default is not to."""
        if self.app.closed:
            return
        if linger > 0:
            self._await_cleanups(linger)
        self.idle_drain.stop()
        self.worker.shutdown_worker(LocalError("the VclApp was closed", errno.EBADF))
        self.app.detach()

    def _await_cleanups(self, timeout: float) -> None:
        worker = self.worker
        sessions = worker.layer.sessions
        with contextlib.suppress(VclError):  # VPP gone or the worker failed: nothing to await
            if worker.check_vpp():
                worker.wait_until(lambda: not any(s.app_closed for s in sessions.values()), timeout)

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
    _fast: DataPath | None = None  # (a default, for instances made with __new__)

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
        self._connect_pending = False  # a non-blocking connect whose outcome was not reported
        self._fast = None  # set once connected (`_data_path`)

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

    @property
    def session(self) -> Session:
        """The session-layer state of this socket (read it; the worker changes it)."""
        return self._s

    @property
    def worker(self) -> SessionWorker:
        """The app worker that carries this socket's session."""
        return self._worker

    @property
    def app(self) -> VclApp:
        """The app this socket belongs to."""
        return self._app

    def readiness(self, read: bool = True, write: bool = True) -> tuple[bool, bool]:
        """(readable, writable) as poll(2) would say of a kernel TCP socket, re-arming VPP's
        wake-ups for what is not ready (`SessionWorker.readiness`).  A closed socket, or one
        whose app is closed or whose VPP died, is ready both ways: the call raises."""
        if self._closed or self._app.closed:
            return read, write
        return self._worker.readiness(self._s, read, write)

    # -- connection setup ------------------------------------------------------------------
    def _wait_timeout(self) -> float:
        return self._app.session_timeout if self._timeout is None else self._timeout

    def connect(self, address: Address) -> None:
        self._check_open()
        ip, port, family = parse_address(address)
        if family != self.family:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        s, w = self._s, self._worker
        if s.state != State.CREATED:
            self._connect_again()
            return
        w.request(w.layer.connect(s, ip, port))
        if self._timeout == 0:
            self._connect_pending = True
            raise BlockingIOError(errno.EINPROGRESS, "Operation now in progress")
        self._wait_connected(f"connect to {ip}:{port}")

    def _wait_connected(self, what: str) -> None:
        try:
            self._worker.wait_state(self._s, {State.READY, State.PEER_CLOSED, State.RESET},
                                    self._wait_timeout(), what)  # fmt: skip
        except Timeout:
            self.close()
            raise
        except VclError:
            self._reset_failed()
            raise

    def _connect_again(self) -> None:
        """connect() on a socket that connected or tried to, as Linux answers it: EALREADY
        while a non-blocking connect is in progress (a blocking one waits for it), success
        once for the connect that completed, then EISCONN; a failed connect raises its error
        (ECONNABORTED if SO_ERROR took it) and leaves the socket unconnected."""
        s = self._s
        if s.state == State.CONNECTING:
            self._worker.pump()
        if s.state == State.CONNECTING:
            if self._timeout == 0:
                raise OSError(errno.EALREADY, "Operation already in progress")
            self._connect_pending = False
            self._wait_connected(f"connect to {s.peer}")
            return
        if s.state == State.FAILED:
            err = self._take_error()
            self._reset_failed()
            if err is not None:
                raise err
            raise ConnectionAbortedError(errno.ECONNABORTED, "Software caused connection abort")
        if self._connect_pending and not s.is_listener:
            self._connect_pending = False
            return
        raise OSError(errno.EISCONN, "Transport endpoint is already connected")

    def _take_error(self) -> VclError | None:
        """The pending error of a failed non-blocking connect, reported once (SO_ERROR)."""
        s = self._s
        if s.state != State.FAILED or not self._connect_pending:
            return None
        self._connect_pending = False
        return listen_connect_error(f"connect to {s.peer}", s.error, connect=True)

    def _reset_failed(self) -> None:
        """After a failed connect the socket is unconnected again: a fresh session."""
        if self._s.state != State.FAILED or self._app.closed:
            return
        w = self._worker
        w.close(self._s)
        with w.lock:
            self._s = w.layer.new_session(TransportProto.TCP)
        self._connect_pending = False
        self._fast = None

    def connect_ex(self, address: Address) -> int:
        """connect(), returning 0 or the errno instead of raising (EINPROGRESS included)."""
        return connect_ex_of(self.connect, address)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int:
        """SO_ERROR (the errno of a failed non-blocking connect, then 0), SO_TYPE,
        SO_ACCEPTCONN; other options: ENOPROTOOPT."""
        if buflen is not None:
            raise OSError(errno.EOPNOTSUPP, "pyvcl getsockopt returns integers only")
        if level == socket.SOL_SOCKET and optname == socket.SO_ERROR:
            if self._closed or self._app.closed:
                return 0
            if self._s.state == State.CONNECTING:
                with contextlib.suppress(VclError):
                    self._worker.pump()
            err = self._take_error()
            return 0 if err is None or err.errno is None else int(err.errno)
        if level == socket.SOL_SOCKET and optname == socket.SO_TYPE:
            return socket.SOCK_STREAM
        if level == socket.SOL_SOCKET and optname == socket.SO_ACCEPTCONN:
            return int(self._s.is_listener and self._s.state == State.LISTENING)
        raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def bind(self, address: Address) -> None:
        self._check_open()
        ip, port, family = parse_address(address)
        if family != self.family:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        if self._s.state != State.CREATED or self._bound is not None:
            raise OSError(errno.EINVAL, "Invalid argument: already bound")
        self._bound = (ip, port)

    def listen(self, backlog: int | None = None) -> None:
        """Start listening (VPP has no backlog: pending sessions queue in our app).  Again on
        a listener does nothing, as the kernel's only changes the backlog (asyncio's
        ``start_server(sock=...)`` listens on the socket it is given)."""
        self._check_open()
        if self._s.is_listener and self._s.state == State.LISTENING:
            return
        if self._s.state != State.CREATED:
            raise OSError(
                errno.EINVAL, f"Invalid argument: cannot listen when {self._s.state.value}"
            )
        if self._bound is None:
            self._bound = ("0.0.0.0" if self.family == socket.AF_INET else "::", 0)
        s, w = self._s, self._worker
        w.request(w.layer.listen(s, *self._bound))
        w.wait_state(s, {State.LISTENING}, self._app.session_timeout, f"listen on {self._bound}")

    def accept(self) -> tuple[VclSocket, Address]:
        self._check_open()
        s, w = self._s, self._worker
        if not s.is_listener or s.state != State.LISTENING:
            if w.dead is not None:
                raise w.dead  # VPP went away (the listener's state says so only vaguely)
            raise OSError(errno.EINVAL, "Invalid argument: not listening")
        if self._timeout == 0 and not s.accepted:
            w.pump()  # nobody else may be polling: look at what VPP queued
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
        sock._connect_pending = False
        sock._fast = None
        return sock, sock._sockaddr(new.peer or ("0.0.0.0", 0))

    # -- data -------------------------------------------------------------------------------
    # Each data method first tries the session's `DataPath` (the common case, a few hundred
    # ns: a write that fits, a read that finds data); anything else -- and the first call,
    # which sets the path up once the session is connected -- takes the general path below.
    def _data_path(self) -> None:
        if self._fast is None and not self._closed and not self._app.closed:
            self._fast = self._worker.data_path(self._s)

    @property
    def data_path(self) -> DataPath | None:
        """The session's `DataPath` once a data call found it connected (None before): for
        an adapter that calls it first itself (`pyvcl.interpose`).  It answers -1 / None
        for anything but the common case, including after this socket is closed."""
        return self._fast

    def send(self, data: Any, flags: int = 0) -> int:
        fast = self._fast
        if fast is not None and not flags and not self._closed:
            n = fast.send(data)
            if n > 0:
                return n
        self._check_open()
        if flags:
            raise ValueError("send flags are not supported")
        self._check_connecting()
        n = self._worker.send(self._s, data, self._timeout)
        self._data_path()
        return n

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all of ``data``.  As for a kernel socket (Python >= 3.5), the timeout bounds
        the whole call, not each partial send."""
        kind = type(data)
        if kind is bytes or kind is bytearray:
            view = data  # len() is the byte count; a view is made only if it does not fit
        else:
            view = data if kind is memoryview else memoryview(data)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
        n = len(view)
        fast = self._fast
        if fast is not None and n and not flags and not self._closed:
            total = fast.send(view)
            if total == n:
                return  # the usual case: it all fitted at once
            total = max(total, 0)
            view = memoryview(view)
        else:
            view = memoryview(view)
            total = self.send(view, flags) if n else 0
            if total >= n:
                return
        timeout = self._timeout
        deadline = None if not timeout else time.monotonic() + timeout
        while total < n:
            if deadline is None:
                left = timeout
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(f"sendall timed out after {total} of {n} bytes")
            self._check_open()
            if flags:
                raise ValueError("send flags are not supported")
            self._check_connecting()
            total += self._worker.send(self._s, view[total:], left)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        fast = self._fast
        if fast is not None and bufsize and not flags and not self._closed:
            data = fast.recv(bufsize)
            if data is not None:
                return data
        buf = bytearray(bufsize)
        n = self.recv_into(buf, bufsize, flags)
        del buf[n:]
        return bytes(buf)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        fast = self._fast
        if fast is not None and not nbytes and not flags and not self._closed:
            n = fast.recv_into(buffer)
            if n > 0:
                return n
        self._check_open()
        if flags:
            raise ValueError("recv flags are not supported")
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        self._check_connecting()
        if self._timeout != 0:
            n = self._worker.recv_into(self._s, view, self._timeout)
        else:
            try:
                n = self._worker.recv_into(self._s, view, 0)
            except WouldBlock:
                # Nothing in the fifo: the peer's close or a reset may be queued, unhandled.
                self._worker.pump()
                n = self._worker.recv_into(self._s, view, 0)
        if n:
            self._data_path()
        return n

    def _check_connecting(self) -> None:
        """recv/send on a socket whose connect is in progress wait for it (EAGAIN when
        non-blocking); after a failed one they raise its error, as Linux does."""
        s = self._s
        if s.state == State.CONNECTING:
            if self._timeout == 0:
                self._worker.pump()
                if s.state == State.CONNECTING:
                    raise BlockingIOError(errno.EAGAIN, "connect in progress")
            else:
                self._wait_connected(f"connect to {s.peer}")
        if s.state == State.FAILED:
            err = self._take_error()
            if err is not None:
                raise err
            raise NotConnected("socket is not connected")

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

    @property
    def can_half_close(self) -> bool:
        """Whether ``shutdown(SHUT_WR)`` reaches the peer as EOF.  False for a cut-through
        session (two apps on one VPP): VPP v26.06 passes no half-close there, so the peer
        sees EOF only when this side closes (`wait_sent` first, to lose nothing)."""
        return not self._s.cut_through

    def wait_sent(self, timeout: float | None = None) -> bool:
        """Wait until the peer has read all that was sent (True), or until ``timeout`` or
        the connection's end (False).  For closing a cut-through session without cutting off
        data still in flight."""
        self._check_open()
        return self._worker.wait_sent(self._s, timeout)

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
        return sockaddr_for(addr, self.family)

    def __enter__(self) -> VclSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        st = "closed" if self._closed else self._s.state.value
        return f"<pyvcl.VclSocket {st} laddr={self.getsockname()}>"
