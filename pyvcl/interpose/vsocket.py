"""`InterposedSocket`: what ``socket.socket`` is while interposition is on.

A subclass of the standard ``socket.socket`` (so isinstance checks, ``makefile``,
``sendfile``, ``create_connection`` and every library built on them keep working) whose
AF_INET/AF_INET6 stream sockets are carried by VPP sessions: every data and state method is
answered by a `pyvcl.vclsocket.VclSocket`, and the C object underneath holds only the
readiness descriptor of a `Carrier` (``fileno()``), never the data.

``socket.socket(...)`` with another family or type, or with the ``fileno`` of a kernel
socket, returns a plain standard-library socket: other kinds of socket cost nothing extra.
``fileno`` of one of our descriptors (``dup``, ``socket.fromfd``) returns another object over
the same session, as a kernel socket's duplicate shares its connection.  The class is also
what ``socket.socket`` names for ``isinstance`` and subclassing: any standard socket is an
instance of it (`_Facade`).

After ``os.fork`` a child cannot use its parent's VPP sessions (they belong to the parent's
app; C VCL needs its VLS layer for that): calls raise EBADF-like `ForkedSession`, ``close``
only closes the child's descriptors, and the parent is unharmed.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import secrets
import socket as _socket_module
import threading
import warnings
from collections.abc import Callable
from typing import Any

from ..errors import LocalError
from ..session.core import State
from ..session.worker import DataPath
from ..vclsocket import VclApp, VclSocket, connect_ex_of, sockaddr_for
from . import sockopts as so
from .carrier import Carrier, by_inode, listening_ports, note_port

std_socket = _socket_module.socket  # the standard class, kept before anything patches it
_c_socket: Any = std_socket.__mro__[1]  # _socket.socket: the C methods, for our descriptor
# Plain ints, not the socket module's enums: a flag test on the hot path must not build
# enum members (that cost more than the rest of a sendall).
AF_INET, AF_INET6 = int(_socket_module.AF_INET), int(_socket_module.AF_INET6)
SOCK_STREAM = int(_socket_module.SOCK_STREAM)
_NONBLOCK = int(getattr(_socket_module, "SOCK_NONBLOCK", 0))
_TYPE_MASK = ~(_NONBLOCK | int(getattr(_socket_module, "SOCK_CLOEXEC", 0)))
_PROTOS = (-1, 0, int(_socket_module.IPPROTO_TCP))
_MSG_PEEK, _MSG_DONTWAIT = int(_socket_module.MSG_PEEK), int(_socket_module.MSG_DONTWAIT)
_MSG_WAITALL = int(_socket_module.MSG_WAITALL)
_MSG_IGNORED = int(getattr(_socket_module, "MSG_NOSIGNAL", 0)) | int(
    getattr(_socket_module, "MSG_MORE", 0)
)
_SEND_UNSUPPORTED = ~_MSG_IGNORED  # send/sendall flags we cannot honour


def _no_backend() -> VclApp | None:
    return None


# Where new sockets go: set by `pyvcl.interpose.enable` (None: kernel sockets), and the app
# that connects to this process's own listeners.
backend: Callable[[], VclApp | None] = _no_backend
loop_backend: Callable[[], VclApp | None] = _no_backend
_EPHEMERAL = (32768, 60999)  # Linux's default ip_local_port_range
_PORT_TRIES = 32  # ephemeral ports tried before a listen gives up with EADDRINUSE
_SCRATCH = 1 << 16  # smallest per-thread receive buffer
_scratch = threading.local()
fork_generation = 0  # bumped in a forked child: carriers of an older generation are the parent's


class ForkedSession(LocalError):
    """A VPP session used in a process forked after it was made."""

    default_errno = errno.EBADF


def socket_over(
    app: VclApp, family: int = AF_INET, cls: type[InterposedSocket] | None = None
) -> InterposedSocket:
    """An interposed socket (of ``cls``, a subclass) carried by ``app`` whatever
    `pyvcl.interpose.enable` chose (for tests and programs that hold several apps: a process
    cannot connect to itself through one app, since VPP does not connect an app to its own
    listener)."""
    vcl = app.socket(family)
    try:
        carrier = Carrier(app, vcl)
    except BaseException:
        vcl.close()
        raise
    return (cls or InterposedSocket)._over(carrier, family)


def take_over(sock: InterposedSocket) -> InterposedSocket:
    """A new object owning ``sock``'s session and descriptor, ``sock`` left detached: what
    ``SSLContext.wrap_socket`` does to the socket it wraps (pyvcl.interpose.tls)."""
    family, kind = sock.family, sock.type
    return InterposedSocket(family, kind, 0, sock.detach())


class _Facade(type):
    """``isinstance(s, socket.socket)`` stays true for every standard socket."""

    def __instancecheck__(cls, obj: object) -> bool:
        if cls is InterposedSocket:
            return isinstance(obj, std_socket)
        return type.__instancecheck__(cls, obj)

    def __subclasscheck__(cls, sub: type) -> bool:
        if cls is InterposedSocket:
            return issubclass(sub, std_socket)
        return type.__subclasscheck__(cls, sub)


def _ephemeral_port() -> int:
    """A port from the kernel's ephemeral range (net.ipv4.ip_local_port_range)."""
    low, high = _EPHEMERAL
    return low + secrets.randbelow(high - low + 1)


def _eligible(family: int, type: int, proto: int) -> bool:
    return (
        family in (-1, AF_INET, AF_INET6)
        and (type == -1 or type & _TYPE_MASK == SOCK_STREAM)
        and proto in _PROTOS
    )


class InterposedSocket(std_socket, metaclass=_Facade):
    __slots__ = ("_auto_port", "_carrier", "_fast", "_generation", "_sockopts")

    _carrier: Carrier | None
    # The session's per-call path (`VclSocket.data_path`), tried first by the data methods;
    # taken after a general-path call, dropped when this object lets go of the carrier.
    _fast: DataPath | None
    _generation: int
    _sockopts: dict[tuple[int, int], int]
    _auto_port: bool

    def __new__(
        cls, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None
    ) -> Any:
        if fileno is None:
            app = backend() if _eligible(family, type, proto) else None
            if app is not None:  # (a program's subclass stays its own class)
                obj = socket_over(app, AF_INET if family == -1 else family, cls)
                if type != -1 and type & _NONBLOCK:
                    obj.setblocking(False)
                return obj
        elif by_inode:
            with contextlib.suppress(OSError):
                carrier = by_inode.get(os.fstat(fileno).st_ino)
                if carrier is not None:  # a duplicate of one of ours: same session
                    carrier.refs += 1
                    fam = carrier.vcl.family if family == -1 else family
                    return cls._over(carrier, fam, fileno)
        if cls is InterposedSocket:
            return std_socket(family, type, proto, fileno)
        obj = _c_socket.__new__(cls)
        obj._carrier = None  # a user's subclass in kernel mode: __init__ makes it
        obj._fast = None
        return obj

    @classmethod
    def _over(cls, carrier: Carrier, family: int, fd: int | None = None) -> InterposedSocket:
        obj: InterposedSocket = _c_socket.__new__(cls)
        obj._carrier = carrier
        obj._fast = None
        if fd is None:  # a new carrier belongs to this process
            carrier.generation = fork_generation
        obj._generation = carrier.generation  # (a duplicate made in a child stays the parent's)
        obj._sockopts = {}
        obj._auto_port = False
        std_socket.__init__(obj, family, SOCK_STREAM, 0, carrier.rfd.fd if fd is None else fd)
        return obj

    def __init__(
        self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None
    ) -> None:
        if self._carrier is None:
            std_socket.__init__(self, family, type, proto, fileno)

    def _vcl(self) -> VclSocket:
        c = self._carrier
        assert c is not None
        if self._generation != fork_generation:
            raise ForkedSession(
                "this socket's VPP session belongs to the process that made it (a parent of "
                "this forked process); pyvcl does not share sessions across fork"
            )
        return c.vcls[0]

    # -- descriptor --------------------------------------------------------------------------
    def fileno(self) -> int:
        c = self._carrier
        if c is not None and c.pump is None and self._generation == fork_generation:
            c.watch()
        return int(_c_socket.fileno(self))

    def _real_close(self, _ss: Any = _c_socket) -> None:
        c = self._carrier
        if c is not None and _c_socket.fileno(self) != -1:
            self._carrier = self._fast = None
            try:
                if self._generation == fork_generation:
                    c.release()
                else:
                    c.rfd.close_peer()
            finally:
                _ss.close(self)
            return
        _ss.close(self)

    def detach(self) -> int:
        c = self._carrier
        if c is not None:  # the descriptor keeps the session: socket(fileno=...) finds it
            c.refs -= 1
            self._carrier = self._fast = None
        return int(_c_socket.detach(self))

    def __del__(self) -> None:
        if self._carrier is not None and _c_socket.fileno(self) != -1:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self, stacklevel=2)
            with contextlib.suppress(Exception):
                self._real_close()

    def __repr__(self) -> str:
        c = self._carrier
        if c is None:
            return std_socket.__repr__(self)
        vcl = c.vcls[0]
        state = "closed" if vcl.closed else vcl.session.state.value
        fd = _c_socket.fileno(self)
        return f"<pyvcl InterposedSocket fd={fd} {state} laddr={self.getsockname()}>"

    # -- timeouts -----------------------------------------------------------------------------
    def settimeout(self, value: float | None) -> None:
        if self._carrier is None:
            return std_socket.settimeout(self, value)
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        for v in self._carrier.vcls:
            v.settimeout(value)

    def gettimeout(self) -> float | None:
        if self._carrier is None:
            return std_socket.gettimeout(self)
        return self._carrier.vcls[0].gettimeout()

    def setblocking(self, flag: bool) -> None:
        if self._carrier is None:
            return std_socket.setblocking(self, flag)
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        if self._carrier is None:
            return std_socket.getblocking(self)
        return self._carrier.vcls[0].gettimeout() != 0.0

    @property
    def timeout(self) -> float | None:
        return self.gettimeout()

    # -- addresses and setup ------------------------------------------------------------------
    def _resolve(self, address: Any, *, passive: bool = False) -> tuple[str, int]:
        if not isinstance(address, tuple) or len(address) < 2:
            raise TypeError(f"{self.family.name} address must be a tuple, not {address!r}")
        host, port = address[0], address[1]
        if not isinstance(port, int):
            raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
        if not 0 <= port <= 0xFFFF:
            raise OverflowError("port must be 0-65535.")
        if host in ("", None) and passive:
            return ("::" if self.family == AF_INET6 else "0.0.0.0"), port
        try:
            return str(ipaddress.ip_address(host)), port
        except ValueError:
            pass
        infos = _socket_module.getaddrinfo(host, port, self.family, SOCK_STREAM)
        return str(infos[0][4][0]), port

    def bind(self, address: Any) -> None:
        if self._carrier is None:
            return std_socket.bind(self, address)
        host, port = self._resolve(address, passive=True)
        self._auto_port = port == 0
        if self._auto_port:
            # VPP gives a listener on port 0 no port, but programs read the port right after
            # bind (socketserver does): pick one as the kernel would, from its ephemeral range.
            port = _ephemeral_port()
        self._vcl().bind((host, port))

    def listen(self, backlog: int | None = None) -> None:
        if self._carrier is None:
            return std_socket.listen(self, *(() if backlog is None else (backlog,)))
        c, vcl = self._carrier, self._vcl()
        for _ in range(_PORT_TRIES):
            try:
                vcl.listen(backlog)
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or not self._auto_port:
                    raise
                vcl = self._fresh_vcl(c, vcl, (vcl.getsockname()[0], _ephemeral_port()))
        host, port = vcl.getsockname()[:2]
        note_port(port)
        if (
            self.family == AF_INET6
            and ipaddress.ip_address(host).is_unspecified
            and so.IPV6_V6ONLY is not None
            and not self._sockopts.get(so.IPV6_V6ONLY, 0)
            and len(c.vcls) == 1
        ):
            # A kernel socket bound to :: hears IPv4 too (net.ipv6.bindv6only=0); VPP's
            # lookup tables are per family, so listen on 0.0.0.0 at the same port as well.
            v4 = c.app.socket(AF_INET)
            try:
                v4.settimeout(vcl.gettimeout())
                v4.bind(("0.0.0.0", port))
                v4.listen(backlog)
            except BaseException:
                v4.close()
                raise
            c.add(v4)
        c.sync()

    @staticmethod
    def _fresh_vcl(c: Carrier, old: VclSocket, address: tuple[str, int]) -> VclSocket:
        """Replace a listener whose port was taken by one bound to ``address``."""
        new = c.app.socket(old.family)
        new.settimeout(old.gettimeout())
        new.bind(address)
        old.close()
        c.vcls[0] = new
        return new

    def accept(self) -> tuple[std_socket, Any]:
        if self._carrier is None:
            return std_socket.accept(self)
        c, vcl = self._carrier, self._vcl()
        try:
            if len(c.vcls) == 1:
                new, addr = vcl.accept()
            else:
                new, addr = self._accept_either(c)
        except BlockingIOError:
            c.sync()
            raise
        if c.pump is not None:
            c.sync()
        try:
            carrier = Carrier(c.app, new)
        except BaseException:
            new.close()
            raise
        sock = InterposedSocket._over(carrier, self.family)
        if _socket_module.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        return sock, sockaddr_for(addr, self.family)

    def _accept_either(self, c: Carrier) -> tuple[VclSocket, Any]:
        """Accept from whichever half of a dual-stack listener has a connection."""
        timeout = c.vcls[0].gettimeout()
        w = c.app.worker
        while True:
            for v in c.vcls:
                if v.session.accepted:
                    saved = v.gettimeout()
                    v.settimeout(0)
                    try:
                        return v.accept()
                    except BlockingIOError:
                        pass
                    finally:
                        v.settimeout(saved)
            if timeout == 0:
                for v in c.vcls:
                    v.readiness(True, False)
                w.pump()
                if not any(v.session.accepted for v in c.vcls):
                    raise BlockingIOError(errno.EAGAIN, "no connection to accept")
                continue

            def ready() -> bool:
                return any(v.session.accepted or v.session.state != State.LISTENING for v in c.vcls)

            if not w.wait_until(ready, timeout):
                raise TimeoutError("accept timed out")
            if not any(v.session.accepted for v in c.vcls):
                return c.vcls[0].accept()  # the listener ended: let it raise

    def connect(self, address: Any) -> None:
        if self._carrier is None:
            return std_socket.connect(self, address)
        c = self._carrier
        target = self._resolve(address)
        vcl = self._vcl()
        if target[1] in listening_ports and vcl.session.state == State.CREATED:
            vcl = self._to_loop_app(c, vcl)
        try:
            vcl.connect(target)
        finally:
            if c.pump is not None:
                c.sync()

    @staticmethod
    def _to_loop_app(c: Carrier, vcl: VclSocket) -> VclSocket:
        """This process listens on the port being connected to, maybe through this very
        app, which VPP would not connect to itself: connect from the process's second app."""
        app = loop_backend()
        if app is None or app is c.app:
            return vcl
        new = app.socket(vcl.family)
        new.settimeout(vcl.gettimeout())
        c.move_to(app, new)
        return new

    def connect_ex(self, address: Any) -> int:
        if self._carrier is None:
            return std_socket.connect_ex(self, address)
        return connect_ex_of(self.connect, address)

    def getsockname(self) -> Any:
        if self._carrier is None:
            return std_socket.getsockname(self)
        return sockaddr_for(self._vcl().getsockname(), self.family)

    def getpeername(self) -> Any:
        if self._carrier is None:
            return std_socket.getpeername(self)
        return sockaddr_for(self._vcl().getpeername(), self.family)

    def shutdown(self, how: int) -> None:
        if self._carrier is None:
            return std_socket.shutdown(self, how)
        try:
            self._vcl().shutdown(how)
        finally:
            self._carrier.sync()

    # -- data ---------------------------------------------------------------------------------
    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        fast = self._fast
        if fast is not None and not flags and bufsize > 0 and self._generation == fork_generation:
            data = fast.recv(bufsize)
            if data is not None:
                c = self._carrier
                if c is not None and c.pump is not None and c.rfd.readable and len(data) < bufsize:
                    c.sync(write=False)  # (probably) drained: the descriptor must say so
                return data
        c = self._carrier
        if c is None:
            return std_socket.recv(self, bufsize, flags)
        if flags:
            return self._recv_flags(bufsize, flags)
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        # Read into this thread's scratch buffer and copy out what came: event loops ask for
        # 256 KiB at a time, and a fresh zeroed buffer that size per call cost more than the
        # rest of the call.
        scratch = getattr(_scratch, "buf", None)
        if scratch is None or len(scratch) < bufsize:
            scratch = _scratch.buf = memoryview(bytearray(max(bufsize, _SCRATCH)))
        vcl = self._vcl()
        try:
            n = vcl.recv_into(scratch[:bufsize])
        except BlockingIOError:
            c.sync(write=False)
            raise
        self._fast = vcl.data_path
        if c.pump is not None and c.rfd.readable and n < bufsize:
            c.sync(write=False)  # (probably) drained: the descriptor must stop saying readable
        return bytes(scratch[:n])

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        fast = self._fast
        if fast is not None and not (nbytes or flags) and self._generation == fork_generation:
            n = fast.recv_into(buffer)
            if n > 0:
                c = self._carrier
                if c is not None and c.pump is not None and c.rfd.readable:
                    size = len(buffer) if type(buffer) is bytearray else memoryview(buffer).nbytes
                    if n < size:
                        c.sync(write=False)
                return n
        c = self._carrier
        if c is None:
            return std_socket.recv_into(self, buffer, nbytes, flags)
        if flags:
            view = memoryview(buffer).cast("B")
            data = self._recv_flags(nbytes or len(view), flags)
            view[: len(data)] = data
            return len(data)
        vcl = self._vcl()
        try:
            n = vcl.recv_into(buffer, nbytes)
        except BlockingIOError:
            c.sync(write=False)
            raise
        self._fast = vcl.data_path
        if c.pump is not None and c.rfd.readable and n < (nbytes or memoryview(buffer).nbytes):
            c.sync(write=False)
        return n

    def _recv_flags(self, bufsize: int, flags: int) -> bytes:
        """recv with MSG_PEEK, MSG_DONTWAIT or MSG_WAITALL (others: EOPNOTSUPP)."""
        unknown = flags & ~(_MSG_PEEK | _MSG_DONTWAIT | _MSG_WAITALL | _MSG_IGNORED)
        if unknown:
            raise OSError(errno.EOPNOTSUPP, f"recv flags {unknown:#x} are not supported")
        vcl = self._vcl()
        saved = vcl.gettimeout()
        if flags & _MSG_DONTWAIT:
            vcl.settimeout(0)
        try:
            if flags & _MSG_PEEK:
                return self._peek(vcl, bufsize)
            if flags & _MSG_WAITALL:
                parts, got = [], 0
                while got < bufsize:
                    part = self.recv(bufsize - got)
                    if not part:
                        break
                    parts.append(part)
                    got += len(part)
                return b"".join(parts)
            return self.recv(bufsize)
        finally:
            vcl.settimeout(saved)

    def _peek(self, vcl: VclSocket, bufsize: int) -> bytes:
        w, s = vcl.worker, vcl.session
        timeout = vcl.gettimeout()
        if timeout != 0 and not w.wait_until(lambda: vcl.readiness(True, False)[0], timeout):
            raise TimeoutError("timed out")
        with w.lock:
            if s.state in (State.READY, State.PEER_CLOSED) and not s.released:
                rx, _ = w.fifos(s)
                n = min(bufsize, rx.max_dequeue())
                if n:
                    return rx.peek(n)
                if s.state == State.PEER_CLOSED:
                    return b""
        if timeout == 0 and s.state in (State.READY, State.PEER_CLOSED):
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return vcl.recv(0) if s.state in (State.READY, State.PEER_CLOSED) else vcl.recv(1)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        if self._carrier is None:
            return std_socket.recvfrom(self, bufsize, flags)
        return self.recv(bufsize, flags), None

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        if self._carrier is None:
            return std_socket.recvfrom_into(self, buffer, nbytes, flags)
        return self.recv_into(buffer, nbytes, flags), None

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0) -> Any:
        if self._carrier is None:
            return std_socket.recvmsg(self, bufsize, ancbufsize, flags)
        return self.recv(bufsize, flags), [], 0, None

    def recvmsg_into(self, buffers: Any, ancbufsize: int = 0, flags: int = 0) -> Any:
        if self._carrier is None:
            return std_socket.recvmsg_into(self, buffers, ancbufsize, flags)
        views = [memoryview(b).cast("B") for b in buffers]
        data = self.recv(sum(len(v) for v in views), flags)
        at = 0
        for v in views:
            part = data[at : at + len(v)]
            v[: len(part)] = part
            at += len(part)
        return len(data), [], 0, None

    def send(self, data: Any, flags: int = 0) -> int:
        fast = self._fast
        if fast is not None and not flags and self._generation == fork_generation:
            n = fast.send(data)
            if n > 0:
                c = self._carrier
                if c is not None and c.pump is not None and n < memoryview(data).nbytes:
                    c.sync(read=False)  # the tx fifo filled: the descriptor must say so
                return n
        c = self._carrier
        if c is None:
            return std_socket.send(self, data, flags)
        vcl = self._vcl()
        if flags & _SEND_UNSUPPORTED:
            return self._send_flags(vcl, data, flags)
        try:
            n = vcl.send(data)
        except BlockingIOError:
            c.sync(read=False)
            raise
        self._fast = vcl.data_path
        if c.pump is not None and n < memoryview(data).nbytes:
            c.sync(read=False)  # the tx fifo filled: the descriptor must stop saying writable
        return n

    def _send_flags(self, vcl: VclSocket, data: Any, flags: int) -> int:
        if flags & ~(_MSG_IGNORED | _MSG_DONTWAIT):
            raise OSError(errno.EOPNOTSUPP, f"send flags {flags:#x} are not supported")
        saved = vcl.gettimeout()
        vcl.settimeout(0)
        try:
            return self.send(data)
        finally:
            vcl.settimeout(saved)

    def sendall(self, data: Any, flags: int = 0) -> None:
        fast = self._fast
        if fast is not None and not flags and self._generation == fork_generation:
            kind = type(data)
            if kind is bytes or kind is bytearray:
                n = fast.send(data)
                if n == len(data):
                    return  # the usual case: it all fitted at once
                if n > 0:
                    data = memoryview(data)[n:]  # the rest as the general path sends it
        if self._carrier is None:
            return std_socket.sendall(self, data, flags)
        if flags & _SEND_UNSUPPORTED:
            raise OSError(errno.EOPNOTSUPP, f"sendall flags {flags:#x} are not supported")
        vcl = self._vcl()
        vcl.sendall(data)
        self._fast = vcl.data_path

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        if self._carrier is None:
            return std_socket.sendto(self, data, flags_or_address, address)
        raise OSError(errno.EISCONN, "Transport endpoint is already connected")

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:
        if self._carrier is None:
            return std_socket.sendmsg(self, buffers, ancdata, flags, address)
        if ancdata:
            raise OSError(errno.EOPNOTSUPP, "pyvcl sockets carry no ancillary data")
        return self.send(b"".join(bytes(b) for b in buffers), flags)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        if self._carrier is None:
            return std_socket.sendfile(self, file, offset, count)
        send_by_send: Any = std_socket._sendfile_use_send  # type: ignore[attr-defined]
        return int(send_by_send(self, file, offset, count))  # the fd carries no data

    # -- options --------------------------------------------------------------------------------
    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        if self._carrier is None:
            args = (value,) if optlen is None else (value, optlen)
            return std_socket.setsockopt(self, level, optname, *args)
        key = (level, optname)
        if key not in so.OPTIONS:
            raise so.no_such_option()
        self._sockopts[key] = so.to_int(key, value, optlen)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        if self._carrier is None:
            args = () if buflen is None else (buflen,)
            return std_socket.getsockopt(self, level, optname, *args)
        key = (level, optname)
        vcl = self._vcl()
        if key == so.SO_ERROR:
            value = vcl.getsockopt(level, optname)
            if self._carrier.pump is not None:
                self._carrier.sync()
        elif key in (so.SO_TYPE, so.SO_ACCEPTCONN):
            value = vcl.getsockopt(level, optname)
        elif key == so.SO_DOMAIN:
            value = int(self.family)
        elif key == so.SO_PROTOCOL:
            value = _socket_module.IPPROTO_TCP
        elif key in so.BUFFER_SIZES and key not in self._sockopts:
            value = self._fifo_size(vcl, so.BUFFER_SIZES[key])
        elif key in so.OPTIONS:
            value = self._sockopts.get(key, so.OPTIONS[key][1])
        else:
            raise so.no_such_option()
        return so.as_requested(key, value, buflen)

    @staticmethod
    def _fifo_size(vcl: VclSocket, which: int) -> int:
        s = vcl.session
        if s.fifos is None or s.released:
            return 0
        with vcl.worker.lock:
            return vcl.worker.fifos(s)[which].size
