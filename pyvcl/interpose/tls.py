"""TLS (the standard `ssl` module) over sockets whose file descriptor does not carry the data.

Under interposition a VPP-carried socket moves its bytes through Python methods (``recv_into``,
``send``, ...) and its ``fileno()`` only signals readiness.  The standard ``ssl.SSLSocket``
cannot work on it: ``SSLSocket._create`` takes ``sock.fileno()``, detaches the Python object
and lets OpenSSL read and write that descriptor itself.  `CarriedSSLSocket` runs the same
OpenSSL state machine as an ``ssl.SSLObject`` over two ``ssl.MemoryBIO`` buffers and moves the
ciphertext through the carried socket's Python methods, while presenting ``ssl.SSLSocket``'s
API (it *is* an ``ssl.SSLSocket`` subclass, so ``isinstance`` checks in http.client, urllib3
and asyncio — which refuses SSL sockets in its ``sock_*`` calls — see what they expect).

Faithfulness points that programs depend on:

* Ciphertext is pulled from the transport one TLS record at a time (its 5-byte header, then
  its body), as OpenSSL does without read-ahead.  So whatever is left unread stays in the
  transport and keeps its fd readable, plaintext that TLS has decrypted but the program has
  not read shows in ``pending()`` — the contract select loops over a real ``SSLSocket`` rely
  on — and what follows a close_notify is still there for the program after ``unwrap()``.
* Timeouts bound the whole operation (a deadline, waiting on ``fileno()`` for readiness as
  ``_ssl.c`` does); non-blocking sockets raise ``ssl.SSLWantReadError`` /
  ``ssl.SSLWantWriteError``, and a write that raised ``SSLWantWriteError`` returns its full
  length when retried once its ciphertext has gone out, as OpenSSL's ``SSL_write`` does.
* Errors are OpenSSL's own (``SSLError``, ``SSLEOFError``, ``SSLZeroReturnError``,
  ``SSLCertVerificationError``) since the same ``_ssl`` object raises them; the transport's
  errors (``ConnectionResetError``, ``BrokenPipeError``) pass through unchanged (CPython 3.10
  to 3.12.2 report those as ``SSLEOFError`` on a kernel socket, gh-115627, fixed since; the
  carried class behaves as the fixed releases), and its EOF becomes the memory BIO's EOF,
  which OpenSSL reports as ``SSLEOFError`` (suppressed into ``b""`` by
  ``suppress_ragged_eofs`` exactly as in ``SSLSocket.read``).
* SNI and message callbacks receive the `CarriedSSLSocket` as their socket argument, as they
  receive the ``SSLSocket`` normally.

Known difference: ``wrap_socket`` on a real socket detaches the original object; here the
carried object *is* the transport, so the TLS socket keeps using it.  `install` takes an
optional ``take_over`` callable through which the interposition layer can hand over
ownership (and make the caller's object behave as detached).

How it is hooked (`install`): every ``SSLSocket`` is built by ``SSLContext.wrap_socket``
calling ``context.sslsocket_class._create(...)`` (``SSLSocket.__init__`` refuses to run).
Replacing ``SSLContext.wrap_socket`` misses context subclasses that override it, and setting
``SSLContext.sslsocket_class`` is undone by any library or context that sets its own.  So the
hook replaces the ``_create`` classmethod of ``ssl.SSLSocket`` itself: it sees every creation,
whatever context class or ``sslsocket_class`` is in use (as long as that class derives from
``SSLSocket``, which ``wrap_socket``'s contract requires).  For a carried socket it builds a
`CarriedSSLSocket` — or, when the context's ``sslsocket_class`` is a library's own subclass, a
class deriving from both, so the library's overrides still run on top; for any other socket it
calls the original ``_create`` untouched.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import ssl
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from ..interrupts import interruptible

__all__ = ["CarriedSSLSocket", "install", "installed", "uninstall", "wrap"]

# TLS record framing (RFC 8446 §5.1, RFC 5246 §6.2): type(1) version(2) length(2), then body.
_RECORD_HEADER_SIZE = 5
_RECORD_LENGTH_OFFSET = 3
# Largest ciphertext body TLS 1.2 allows (2^14 + 2048); longer ones OpenSSL rejects on the header.
_MAX_RECORD_BODY = (1 << 14) + 2048
# Blocking writes are encrypted in slices of this size so a huge sendall does not hold the
# whole ciphertext in memory at once; it is still one write() returning the full length.
_WRITE_SLICE = 256 * 1024


class CarriedSSLSocket(ssl.SSLSocket):
    """An ``ssl.SSLSocket`` whose TLS runs in memory over a socket-like transport's methods.

    Built by ``SSLContext.wrap_socket`` once `install` is active (or by `wrap`); the transport
    (``self._sock``) must offer the socket methods it is asked for: ``recv_into``, ``send``,
    ``sendall``, ``fileno``, ``gettimeout``/``settimeout``/``setblocking``, ``getpeername``,
    ``close``... and ``connect``/``accept`` when the TLS socket is used for those.  Its own C
    socket part never holds a descriptor: everything goes to the transport.
    """

    _sock: Any
    _sslobj: ssl.SSLObject | None
    _io_refs: int
    _closed: bool
    _context: ssl.SSLContext
    _session: ssl.SSLSession | None
    _connected: bool
    _timeout: float | None
    do_handshake_on_connect: bool
    suppress_ragged_eofs: bool
    _ssl_lock: threading.Lock
    _send_lock: threading.Lock
    _recv_lock: threading.Lock
    _unsent: deque[memoryview]
    _recv_buffer: bytearray
    _recv_view: memoryview
    _header: bytearray
    _record_body_left: int
    _header_have: int
    _owed_write: int
    _incoming: ssl.MemoryBIO
    _outgoing: ssl.MemoryBIO

    @classmethod
    def _create(cls, sock: Any, *args: Any, **kwargs: Any) -> CarriedSSLSocket:
        # SSLContext.wrap_socket's way in (same parameters as SSLSocket._create).
        return _build(cls, sock, *args, **kwargs)

    # -- the transport's identity and options ------------------------------------------------

    def fileno(self) -> int:
        return int(self._sock.fileno())

    @property
    def family(self) -> socket.AddressFamily:
        return cast(socket.AddressFamily, self._sock.family)

    @property
    def type(self) -> socket.SocketKind:
        return cast(socket.SocketKind, self._sock.type)

    @property
    def proto(self) -> int:
        return int(self._sock.proto)

    @property
    def timeout(self) -> float | None:
        return self._timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)
        self._timeout = self._sock.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)
        self._timeout = self._sock.gettimeout()

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self._sock.getsockopt(*args)

    def get_inheritable(self) -> bool:
        return bool(self._sock.get_inheritable())

    def set_inheritable(self, inheritable: bool) -> None:
        self._sock.set_inheritable(inheritable)

    def bind(self, address: Any) -> None:
        self._sock.bind(address)

    def listen(self, *backlog: int) -> None:
        self._sock.listen(*backlog)

    # -- connection set-up -------------------------------------------------------------------

    def connect(self, addr: Any) -> None:
        """Connect the transport to ``addr``, then wrap the connection in TLS."""
        self._connect(addr, connect_ex=False)

    def connect_ex(self, addr: Any) -> int:
        """Like `connect`, returning the transport's error number instead of raising it."""
        return int(self._connect(addr, connect_ex=True) or 0)

    def _connect(self, addr: Any, connect_ex: bool) -> int | None:
        if self.server_side:
            raise ValueError("can't connect in server-side mode")
        if self._connected or self._sslobj is not None:
            raise ValueError("attempt to connect already-connected SSLSocket!")
        self._sslobj = self._new_sslobj()
        try:
            rc: int | None = None
            if connect_ex:
                rc = self._sock.connect_ex(addr)
            else:
                self._sock.connect(addr)
            if not rc:
                self._connected = True
                if self.do_handshake_on_connect:
                    self.do_handshake()
            return rc
        except (OSError, ValueError):
            self._sslobj = None
            raise

    def accept(self) -> tuple[ssl.SSLSocket, Any]:
        """Accept a connection on the transport and wrap it in a server-side TLS socket."""
        conn, addr = self._sock.accept()
        options: dict[str, Any] = {
            "server_side": True,
            "do_handshake_on_connect": self.do_handshake_on_connect,
            "suppress_ragged_eofs": self.suppress_ragged_eofs,
        }
        if installed():
            # Through wrap_socket, so context subclasses and the install hook see it.
            return self.context.wrap_socket(conn, **options), addr
        return _build(type(self), conn, context=self.context, **options), addr

    def _check_connected(self) -> None:
        if not self._connected:
            # Raises ENOTCONN if the transport really is not connected; a non-blocking
            # connect_ex() may have completed since.
            self.getpeername()

    def do_handshake(self, block: bool = False) -> None:
        self._check_connected()
        timeout = self._timeout
        try:
            if timeout == 0.0 and block:
                self.settimeout(None)
            sslobj = cast(ssl.SSLObject, self._sslobj)
            self._run("handshake", sslobj.do_handshake)
        finally:
            if self._timeout != timeout:
                self.settimeout(timeout)

    # -- TLS data ----------------------------------------------------------------------------

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        """Read up to ``len`` bytes (into ``buffer`` if given); ``b""``/0 at EOF."""
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError("Read on closed or unwrapped SSL socket.")
        try:
            if buffer is not None:
                return self._run("read", sslobj.read, len, buffer, must_flush=False)
            return self._run("read", sslobj.read, len, must_flush=False)
        except ssl.SSLError as exc:
            if exc.args[0] == ssl.SSL_ERROR_EOF and self.suppress_ragged_eofs:
                return 0 if buffer is not None else b""
            raise

    def write(self, data: Any) -> int:
        """Write ``data`` to the TLS channel; returns its full length once it is sent."""
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError("Write on closed or unwrapped SSL socket.")
        deadline = self._deadline()
        if self._owed_write:
            # The previous write raised SSLWantWriteError after encrypting its data: as with
            # SSL_write, the retry completes it and reports its length.
            if not self._flush(deadline, "write"):
                raise _want_write()
            owed, self._owed_write = self._owed_write, 0
            return owed
        if type(data) is bytes and len(data) <= _WRITE_SLICE:
            # The common case, without the slicing below.
            self._run("write", sslobj.write, data, deadline=deadline, must_flush=False)
            if not self._flush(deadline, "write"):
                self._owed_write = len(data)
                raise _want_write()
            return len(data)
        with memoryview(data) as view, view.cast("B") as octets:
            total = octets.nbytes
            blocking = self._timeout != 0.0
            step = _WRITE_SLICE if blocking else max(total, 1)
            for start in range(0, max(total, 1), step):
                self._run(
                    "write",
                    sslobj.write,
                    octets[start : start + step],
                    deadline=deadline,
                    must_flush=False,
                )
                if not self._flush(deadline, "write"):
                    self._owed_write = total
                    raise _want_write()
        return total

    def send(self, data: Any, flags: int = 0) -> int:
        if self._sslobj is None:
            return int(self._sock.send(data, flags))
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to send() on {type(self)}")
        return self.write(data)

    def sendall(self, data: Any, flags: int = 0) -> None:
        if self._sslobj is None:
            self._sock.sendall(data, flags)
            return
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to sendall() on {type(self)}")
        if type(data) is bytes and len(data) <= _WRITE_SLICE:
            self.write(data)  # all of it, or an exception
            return
        with memoryview(data) as view, view.cast("B") as octets:
            count, amount = 0, octets.nbytes
            while count < amount:
                count += self.send(octets[count:])

    def sendto(self, data: Any, flags_or_addr: Any, addr: Any = None) -> int:
        if self._sslobj is not None:
            raise ValueError(f"sendto not allowed on instances of {type(self)}")
        if addr is None:
            return int(self._sock.sendto(data, flags_or_addr))
        return int(self._sock.sendto(data, flags_or_addr, addr))

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        if self._sslobj is None:
            return int(self._sock.sendfile(file, offset, count))
        # socket.socket's send()-based path: it calls our send() and waits on our fileno().
        return int(getattr(self, "_sendfile_use_send")(file, offset, count))  # noqa: B009

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if self._sslobj is None:
            return cast(bytes, self._sock.recv(buflen, flags))
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to recv() on {type(self)}")
        return cast(bytes, self.read(buflen))

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        if nbytes is None:
            if buffer is not None:
                with memoryview(buffer) as view:
                    nbytes = view.nbytes
            nbytes = nbytes or 1024
        if self._sslobj is None:
            return int(self._sock.recv_into(buffer, nbytes, flags))
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to recv_into() on {type(self)}")
        return int(self.read(nbytes, buffer))

    def recvfrom(self, buflen: int = 1024, flags: int = 0) -> tuple[bytes, Any]:
        if self._sslobj is not None:
            raise ValueError(f"recvfrom not allowed on instances of {type(self)}")
        return cast(tuple[bytes, Any], self._sock.recvfrom(buflen, flags))

    def recvfrom_into(
        self, buffer: Any, nbytes: int | None = None, flags: int = 0
    ) -> tuple[int, Any]:
        if self._sslobj is not None:
            raise ValueError(f"recvfrom_into not allowed on instances of {type(self)}")
        return cast(tuple[int, Any], self._sock.recvfrom_into(buffer, nbytes or 0, flags))

    # -- ending ------------------------------------------------------------------------------

    def unwrap(self) -> CarriedSSLSocket:
        """Send close_notify, wait for the peer's, and return this socket as plain transport."""
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError("No SSL wrapper around " + str(self))
        self._run("shutdown", sslobj.unwrap)
        self._sslobj = None
        return self

    def shutdown(self, how: int) -> None:
        self._sslobj = None
        self._sock.shutdown(how)

    def detach(self) -> int:
        self._closed = True
        self._sslobj = None
        return int(self._sock.detach())

    def _real_close(self, *args: Any) -> None:
        # Called by socket.close() once no makefile() object refers to us any more.
        self._sslobj = None
        self._sock.close()

    # -- the engine --------------------------------------------------------------------------

    def _new_sslobj(self) -> ssl.SSLObject:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._record_body_left = 0
        self._header_have = 0
        self._owed_write = 0
        sslobj = self._context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=self.server_side,
            server_hostname=self.server_hostname,
            session=self._session,
        )
        inner = getattr(sslobj, "_sslobj", None)
        if inner is not None:
            # SNI and message callbacks are handed the "owner": make that us, not the SSLObject,
            # as SSLSocket makes it itself.
            inner.owner = self
        return sslobj

    def _deadline(self) -> float | None:
        timeout = self._timeout
        return None if not timeout else time.monotonic() + timeout

    def _run(
        self,
        op: str,
        call: Callable[..., Any],
        *args: Any,
        deadline: float | None = None,
        must_flush: bool = True,
    ) -> Any:
        """Run one SSLObject call to completion, moving ciphertext both ways as it asks.

        ``must_flush``: what the call produced has to be sent before it counts as done (a
        handshake's last flight, close_notify); a read only sends what it can without
        blocking, as SSL_read leaves a pending write to the next call."""
        if deadline is None:
            deadline = self._deadline()
        while True:
            with self._ssl_lock:
                try:
                    result = call(*args)
                except ssl.SSLWantReadError as exc:
                    want_read: ssl.SSLWantReadError | None = exc
                except BaseException:
                    # Alerts (e.g. a failed certificate check) still reach the peer.
                    self._take_outgoing()
                    self._flush_quietly()
                    raise
                else:
                    want_read = None
                self._take_outgoing()
            if want_read is None:
                if not self._flush(deadline, op, wait=must_flush) and must_flush:
                    raise _want_write()
                return result
            if not self._flush(deadline, op, wait=must_flush):
                # The peer may be waiting for these bytes before it sends what we want to read.
                raise _want_write()
            with self._recv_lock:
                self._fill(deadline, op, want_read)

    def _take_outgoing(self) -> None:
        if self._outgoing.pending:
            self._unsent.append(memoryview(self._outgoing.read()))

    def _flush(self, deadline: float | None, op: str, wait: bool = True) -> bool:
        """Send queued ciphertext in order; False if a non-blocking transport is full.

        ``wait=False`` (readers): if another thread is already sending, leave the queue to it
        — it sends everything queued and looks again after letting go — rather than wait
        behind a writer whose peer may itself be waiting for this reader."""
        while self._unsent:
            if not self._send_lock.acquire(wait):
                return True
            try:
                if not self._send_queued(deadline, op):
                    return False
            finally:
                self._send_lock.release()
        return True

    def _send_queued(self, deadline: float | None, op: str) -> bool:
        unsent = self._unsent
        while unsent:
            head = unsent[0]
            if self._timeout is None:
                self._sock.sendall(head)
                unsent.popleft()
                continue
            try:
                sent = self._transport(self._sock.send, head, True, deadline, op)
            except BlockingIOError:
                return False
            if sent >= head.nbytes:
                unsent.popleft()
            else:
                unsent[0] = head[sent:]
        return True

    def _flush_quietly(self) -> None:
        # Not waiting behind another thread's send: that thread will send the alert too.
        with contextlib.suppress(OSError):
            self._flush(self._deadline(), "write", wait=False)

    def _fill(self, deadline: float | None, op: str, want_read: ssl.SSLWantReadError) -> None:
        """Move ciphertext from the transport into the incoming BIO up to the end of the
        current record: its header, then its body, never more.  What OpenSSL does not need yet
        stays in the transport, as without read-ahead: the fd stays readable for it, and what
        follows a close_notify (plaintext after unwrap) is left to the program."""
        fed = False
        while True:
            if self._record_body_left:
                want = min(self._record_body_left, len(self._recv_buffer))
            else:
                want = _RECORD_HEADER_SIZE - self._header_have
            view = self._recv_view[:want]
            try:
                received = self._transport(self._sock.recv_into, view, False, deadline, op)
            except BlockingIOError:
                if fed:
                    return
                raise want_read from None
            if not received:
                self._incoming.write_eof()
                return
            # Never more than asked for: at most the rest of this header or of this body.
            if self._record_body_left:
                self._record_body_left -= received
            else:
                have = self._header_have + received
                self._header[self._header_have : have] = view[:received]
                if have == _RECORD_HEADER_SIZE:
                    have = 0
                    length = self._header[_RECORD_LENGTH_OFFSET:_RECORD_HEADER_SIZE]
                    self._record_body_left = int.from_bytes(length, "big")
                self._header_have = have
            self._incoming.write(view[:received])
            if not (self._record_body_left or self._header_have):
                return  # a whole record: let OpenSSL look at it
            # OpenSSL cannot use part of a record: read the rest now rather than in another
            # round trip through it.
            fed = True

    def _transport(
        self,
        call: Callable[[memoryview], int],
        view: memoryview,
        for_write: bool,
        deadline: float | None,
        op: str,
    ) -> int:
        """One transport call under the socket's timeout mode.

        Blocking: call it.  Non-blocking: call it (BlockingIOError goes up).  With a timeout:
        wait for readiness on fileno() until the operation's deadline first, as _ssl.c does,
        so the deadline bounds the whole TLS operation, not each transport call."""
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not _wait_ready(self.fileno(), for_write, remaining):
                raise TimeoutError(f"The {op} operation timed out")
        return call(view)


def _want_write() -> ssl.SSLWantWriteError:
    return ssl.SSLWantWriteError(ssl.SSL_ERROR_WANT_WRITE, "The operation did not complete (write)")


@interruptible
def _wait_ready(fd: int, for_write: bool, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLOUT if for_write else select.POLLIN)
    # poll() takes milliseconds; round up so a short timeout still waits.
    return bool(poller.poll(max(1, int(timeout * 1000 + 0.999))))


def _build(
    cls: type[CarriedSSLSocket],
    sock: Any,
    # SSLSocket._create's parameters, in its order: callers may pass them positionally.
    server_side: bool = False,
    do_handshake_on_connect: bool = True,
    suppress_ragged_eofs: bool = True,
    server_hostname: str | bytes | None = None,
    context: ssl.SSLContext | None = None,
    session: ssl.SSLSession | None = None,
) -> CarriedSSLSocket:
    """What SSLSocket._create does, over the transport's methods instead of its descriptor."""
    if context is None:
        raise ValueError("a context is required")
    if sock.type != socket.SOCK_STREAM:
        raise NotImplementedError("only stream sockets are supported")
    if server_side:
        if server_hostname:
            raise ValueError("server_hostname can only be specified in client mode")
        if session is not None:
            raise ValueError("session can only be specified in client mode")
    if context.check_hostname and not server_hostname:
        raise ValueError("check_hostname requires server_hostname")
    # The C socket part keeps no descriptor (SSLSocket.__init__ refuses to run; socket's own
    # __init__ would want one): every socket call is answered by the transport.
    self = cls.__new__(cls)
    # socket.socket's own fields, which its __init__ (not run: it wants a descriptor) sets.
    self._io_refs = 0
    self._closed = False
    self._sock = sock
    self._timeout = sock.gettimeout()
    self._context = context
    self._session = session
    self._sslobj = None
    self.server_side = server_side
    self.server_hostname = context._encode_hostname(server_hostname)  # type: ignore[attr-defined]
    # _ssl_lock guards the SSLObject and the order in which its output is queued; sending
    # and receiving each have their own, never held while the other side blocks, so one
    # thread may read while another writes, as with SSLSocket.
    self._ssl_lock = threading.Lock()
    self._send_lock = threading.Lock()
    self._recv_lock = threading.Lock()
    self._unsent = deque()
    self._recv_buffer = bytearray(_MAX_RECORD_BODY + _RECORD_HEADER_SIZE)
    self._recv_view = memoryview(self._recv_buffer)
    self._header = bytearray(_RECORD_HEADER_SIZE)
    self._record_body_left = 0
    self._header_have = 0
    self._owed_write = 0
    self.do_handshake_on_connect = do_handshake_on_connect
    self.suppress_ragged_eofs = suppress_ragged_eofs
    self._connected = _is_connected(sock)
    if self._connected:
        try:
            self._sslobj = self._new_sslobj()
            if do_handshake_on_connect:
                if self._timeout == 0.0:
                    raise ValueError(
                        "do_handshake_on_connect should not be specified for non-blocking sockets"
                    )
                self.do_handshake()
        except (OSError, ValueError):
            self.close()
            raise
    return self


def _is_connected(sock: Any) -> bool:
    try:
        sock.getpeername()
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise
        return False
    return True


def wrap(context: ssl.SSLContext, sock: Any, **options: Any) -> CarriedSSLSocket:
    """``context.wrap_socket(sock, **options)`` for a carried ``sock``, whether or not
    `install` is active."""
    return _build(_class_for(type(context).sslsocket_class), sock, context=context, **options)


# -- the hook --------------------------------------------------------------------------------

_original_create: Any = None
_is_carried: Callable[[object], bool] | None = None
_take_over: Callable[[Any], Any] | None = None
_combined: weakref.WeakKeyDictionary[type, type[CarriedSSLSocket]] = weakref.WeakKeyDictionary()


def _class_for(requested: type | None) -> type[CarriedSSLSocket]:
    """The class to build for a context whose sslsocket_class is ``requested``: ours, or one
    deriving from the library's class first so its overrides run on top of ours."""
    if requested is None or requested is ssl.SSLSocket:
        return CarriedSSLSocket
    if issubclass(requested, CarriedSSLSocket):
        return requested
    combined = _combined.get(requested)
    if combined is None:
        combined = cast(
            type[CarriedSSLSocket],
            type(f"Carried{requested.__name__}", (requested, CarriedSSLSocket), {}),
        )
        _combined[requested] = combined
    return combined


def _dispatching_create(cls: type, sock: Any, *args: Any, **kwargs: Any) -> Any:
    predicate = _is_carried
    if predicate is not None and (isinstance(sock, CarriedSSLSocket) or predicate(sock)):
        if _take_over is not None:
            sock = _take_over(sock)
        return _build(_class_for(cls), sock, *args, **kwargs)
    return _original_create.__get__(None, cls)(sock, *args, **kwargs)


def install(
    is_carried: Callable[[object], bool], take_over: Callable[[Any], Any] | None = None
) -> None:
    """Make ``SSLContext.wrap_socket`` (any context, any ``sslsocket_class`` deriving from
    ``ssl.SSLSocket``) return a `CarriedSSLSocket` for sockets where ``is_carried(sock)`` is
    true; other sockets get the standard class exactly as before.  ``take_over(sock)``, if
    given, returns the object the TLS socket will own (default: ``sock`` itself).  Calling it
    again replaces the predicate; `uninstall` restores the standard behaviour."""
    global _original_create, _is_carried, _take_over
    if _original_create is None:
        _original_create = ssl.SSLSocket.__dict__["_create"]
        # Replaced on the class itself: see the module docstring for why not wrap_socket or
        # sslsocket_class.
        ssl.SSLSocket._create = classmethod(_dispatching_create)  # type: ignore[attr-defined]
    _is_carried = is_carried
    _take_over = take_over


def uninstall() -> None:
    """Undo `install` (TLS sockets already built keep working)."""
    global _original_create, _is_carried, _take_over
    if _original_create is not None:
        ssl.SSLSocket._create = _original_create  # type: ignore[attr-defined]
    _original_create = None
    _is_carried = None
    _take_over = None


def installed() -> bool:
    return _original_create is not None
