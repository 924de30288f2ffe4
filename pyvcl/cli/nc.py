"""``pyvcl nc``: netcat over VPP's host stack (TCP), kernel sockets when VPP is not there.

    pyvcl nc -l 127.0.0.1 9000 > out          # serve one connection, its bytes to stdout
    pyvcl nc -q 0 127.0.0.1 9000 < file       # send a file, close once it is all sent

stdin goes to the connection and the connection to stdout, binary-safe, one thread each way.
At EOF on stdin the connection is half-closed (shutdown SHUT_WR); the connection ends when
both directions are done: stdin sent and EOF from the peer.  ``-q SECS`` bounds the wait for
the peer's EOF after stdin's (``-q 0`` / ``--close-on-eof``: close right after stdin's EOF;
netcat's ``-N``, half-close at EOF, is what this nc always does).  If the peer closes first,
nc keeps sending stdin until its EOF (the peer may only have half-closed); a send that fails
ends the connection with an error.

Half-close and VPP: through VPP's TCP stack the peer sees the half-close as EOF, as with kernel
sockets.  Between two apps on one VPP (a cut-through session, app-scope-local) VPP v26.06 does
not pass a half-close on: the peer sees EOF only when this side closes.  So on such a session
nc, at EOF on stdin, waits until the peer has read everything sent and then closes (``-v``
says so), and a side whose peer closed stops too: ``nc -l > out`` and ``nc HOST PORT < file``
both exit once the file is across.  A side that sent nothing waits for the peer's EOF instead
(its close would cut the peer off).  (VPP turns a cut-through close with unread incoming bytes
into a reset of the peer: for transfers both ways give each side a ``-q SECS`` long enough for
the other's data; ``-q`` bounds both waits.)

Which stack: ``--app-socket``/``--ns``/``--runtime-dir`` or ``--vcl-config`` name a VPP, which
must be reachable.  Without them pyvcl attaches as C VCL would (``$VCL_CONFIG``, the ``VCL_*``
variables, else /run/vpp) and, if no VPP answers, falls back to kernel sockets with a notice on
stderr (``--no-fallback`` makes that an error).  ``--kernel`` always uses kernel sockets.
``--scope`` picks the session scope: with local scope VPP answers a connect to 127.0.0.0/8
that no local app listens on with NOROUTE instead of trying its TCP stack, so use
``--scope global`` to reach a 127.x address through VPP's TCP stack.

``-l`` serves one connection; ``-k`` keeps listening and serves connections one after another
(stdin is shared: once it reached EOF, later connections get an immediate half-close).
Exit status: 0 when done, 1 on a refused connect, unreachable VPP or a connection error,
2 on a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import queue
import socket
import sys
import threading
import time
from typing import Any

from ..errors import VppUnreachable
from .common import add_attach_options, add_stack_options, stack_choice, start_tracing

# Bytes per read of stdin or of the connection.  Small against the fifos (1 MiB by default):
# a cut-through writer whose chunk does not fit waits for a dequeue notification, and
# 64 KiB chunks keep both sides busy where 1 MiB ones made them take turns (~2x faster).
BUFSIZE = 1 << 16
CLOSE_LINGER_S = 1.0  # at most, for VPP's CLEANUPs of closed sessions before detaching
_STDIN_QUEUE = 16  # chunks read ahead of the connection


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "nc",
        help="netcat over VPP's host stack (TCP)",
        description="Copy stdin to a TCP connection and the connection to stdout, over VPP "
        "(kernel sockets when VPP is not reachable and no VPP was named).",
        epilog="Cut-through sessions (two apps on one VPP) do not pass a half-close on: the "
        "peer sees EOF only at close, so at EOF on stdin nc closes once the peer has read what "
        "was sent.",
    )
    p.add_argument("host", metavar="HOST", help="address to connect to (with -l: to listen on)")
    p.add_argument("port", metavar="PORT", type=_port, help="TCP port (with -l: 0 = any)")
    p.add_argument("-l", "--listen", action="store_true", help="accept one connection")
    p.add_argument(
        "-k", "--keep-open", action="store_true", help="with -l: accept connections one by one"
    )
    p.add_argument(
        "-q",
        dest="quit_after",
        type=float,
        default=None,
        metavar="SECS",
        help="after EOF on stdin, wait at most SECS for the peer's EOF, then close",
    )
    p.add_argument(  # not netcat's -N: that half-closes, which pyvcl nc always does
        "--close-on-eof",
        dest="quit_after",
        action="store_const",
        const=0.0,
        help="close the connection right after EOF on stdin (same as -q 0)",
    )
    p.add_argument(
        "-w", dest="connect_timeout", type=float, default=None, metavar="SECS",
        help="connect timeout (default: VCL's session-timeout or the kernel's)",
    )  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true", help="report progress on stderr")
    add_stack_options(p)
    add_attach_options(p)
    p.set_defaults(run=run, use_mq_eventfd=None)


def _port(text: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


_err_lock = threading.Lock()


def _err(message: str) -> None:
    """One whole line on stderr (both pump threads report)."""
    with _err_lock:
        sys.stderr.write(f"pyvcl nc: {message}\n")
        sys.stderr.flush()


# -- choosing the stack ------------------------------------------------------------------------
def _open(args: argparse.Namespace) -> Any:
    """The app to use: KernelApp, or an app over VPP (falling back only when no VPP was
    named); the rules are `pyvcl.stack.open_stack`'s, shared with ``pyvcl run``."""
    from ..stack import open_stack  # the data path: not for the other subcommands

    def notice(e: VppUnreachable) -> None:
        _err(f"VPP not reachable ({e.strerror}); using kernel sockets")

    return open_stack(stack_choice(args), on_fallback=notice)


def _resolve(host: str, port: int, kernel: bool) -> tuple[str, int]:
    """A literal address for pyvcl (which does not resolve names); the kernel resolves its own."""
    if kernel or host in ("", "localhost"):
        return host, port
    try:
        ipaddress.ip_address(host)
    except ValueError:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return str(infos[0][4][0]), port
    return host, port


# -- moving bytes ------------------------------------------------------------------------------
class _Stdin:
    """stdin read ahead by one thread into a bounded queue, so that it survives connections
    (``-k``) and the sender can stop waiting for it.  b"" marks EOF (and stays)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.q: queue.Queue[bytes | BaseException] = queue.Queue(_STDIN_QUEUE)
        self.eof = False
        self._thread = threading.Thread(target=self._read, name="nc-stdin", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, BUFSIZE)
            except OSError as e:
                self.q.put(e)
                return
            self.q.put(chunk)
            if not chunk:
                return

    def get(self, timeout: float | None = None) -> bytes | BaseException | None:
        """The next chunk, b"" at EOF, the read error, or None after ``timeout`` seconds."""
        if self.eof:
            return b""
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            return None
        if not isinstance(item, bytes) or not item:
            self.eof = True
        return item


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


class _Connection:
    """One connection's two pumps: socket -> stdout in a thread, stdin -> socket here."""

    def __init__(self, sock: Any, stdin: _Stdin, out_fd: int, verbose: bool) -> None:
        self.sock = sock
        self.stdin = stdin
        self.out_fd = out_fd
        self.verbose = verbose
        self.error: BaseException | None = None
        self.received = self.sent = 0
        self.recv_done = threading.Event()
        self.started = self.recv_secs = self.send_secs = 0.0
        self._closing = False
        # Kernel sockets and VPP's TCP stack pass a half-close on; cut-through sessions do not.
        self.half_close: bool = getattr(sock, "can_half_close", True)

    def _recv_loop(self) -> None:
        buf = bytearray(BUFSIZE)
        view = memoryview(buf)
        try:
            while True:
                n = self.sock.recv_into(buf)
                if not n:
                    if self.verbose:
                        _err(f"EOF from the peer after {self.received} bytes")
                    break
                self.received += n
                try:
                    _write_all(self.out_fd, view[:n])
                except BrokenPipeError:
                    break  # nobody reads our output: stop reading the connection
        except OSError as e:
            if not self._closing:
                self.error = self.error or e
        finally:
            self.recv_secs = time.monotonic() - self.started
            self.recv_done.set()

    def _send_loop(self) -> bool:
        """stdin -> socket until stdin's EOF (True) or an error (False, `error` set)."""
        try:
            while True:
                chunk = self.stdin.get(timeout=0.2)
                if chunk is None:  # stdin is quiet: give up on a connection that broke
                    if self.recv_done.is_set() and self.error is not None:
                        return False
                    if self.recv_done.is_set() and not self.half_close:
                        # Without half-close the peer's EOF is its close: nothing more from
                        # stdin could reach it.
                        if self.verbose:
                            _err("the peer closed (no half-close on this session): done")
                        return False
                    continue
                if isinstance(chunk, BaseException):
                    self.error = self.error or chunk
                    return False
                if not chunk:
                    return True
                try:
                    self.sock.sendall(chunk)
                except OSError as e:  # data from stdin that the peer will not get: an error
                    self.error = self.error or e
                    return False
                self.sent += len(chunk)
        finally:
            self.send_secs = time.monotonic() - self.started

    def run(self, quit_after: float | None) -> None:
        """Pump both ways until both are done; ``quit_after`` bounds the wait for the peer's
        EOF once stdin's was sent (None or negative: no bound).  On an error, close at once."""
        self.started = time.monotonic()
        receiver = threading.Thread(target=self._recv_loop, name="nc-recv", daemon=True)
        receiver.start()
        try:
            if self._send_loop():
                bounded = quit_after is not None and quit_after >= 0
                if self.half_close:
                    if self.verbose:
                        _err(f"EOF on stdin after {self.sent} bytes: shutting down the write side")
                    with contextlib.suppress(OSError):
                        self.sock.shutdown(socket.SHUT_WR)
                    self.recv_done.wait(quit_after if bounded else None)
                else:
                    self._end_without_half_close(quit_after if bounded else None)
        finally:
            self._closing = True
            if not self.recv_done.is_set():
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            receiver.join(5)
        if self.verbose:
            _err(f"closed: sent {_rate(self.sent, self.send_secs)}, "
                 f"received {_rate(self.received, self.recv_secs)}")  # fmt: skip

    def _end_without_half_close(self, quit_after: float | None) -> None:
        """stdin is done on a session that cannot half-close (cut-through): the peer learns
        of our EOF only from our close.  Once the peer has read all we sent, close; unless we
        sent nothing, in which case the peer is the sender and our close would cut it off, so
        wait for its EOF.  ``-q SECS`` still bounds the wait for the peer's EOF."""
        if self.sent == 0 and quit_after is None:
            if self.verbose:
                _err("EOF on stdin, nothing sent, no half-close on this session: waiting for "
                     "the peer's EOF")  # fmt: skip
            self.recv_done.wait()
            return
        if self.verbose:
            _err(f"EOF on stdin after {self.sent} bytes; no half-close on this session: "
                 "closing once the peer has read them")  # fmt: skip
        drained = self.sock.wait_sent(quit_after)
        if self.verbose and not drained:
            _err("the peer did not read everything sent before the connection ended")
        if quit_after:
            self.recv_done.wait(quit_after)


def _is_kernel(app: Any) -> bool:
    from ..fallback import is_vpp  # (open_app's app may be on either: ask it)

    return not is_vpp(app)


def _rate(n: int, secs: float) -> str:
    return f"{n} bytes in {secs:.2f} s ({n / max(secs, 1e-9) / 1e6:.1f} MB/s)"


def run(args: argparse.Namespace) -> int:
    if args.keep_open and not args.listen:
        _err("-k needs -l")
        return 2
    if args.vcl_config and (args.app_socket or args.namespace_id or args.runtime_dir):
        _err("--vcl-config names the VPP: no --app-socket, --ns or --runtime-dir with it")
        return 2
    start_tracing(args)
    try:
        app = _open(args)
    except VppUnreachable as e:
        _err(f"VPP not reachable: {e.strerror}")
        return 1
    if args.verbose:
        _err("using " + ("kernel sockets" if _is_kernel(app) else "VPP's host stack"))
    try:
        return _serve(args, app) if args.listen else _connect(args, app)
    except KeyboardInterrupt:
        return 130
    finally:
        # Wait a little for VPP's CLEANUPs: a debugging tool's trace should show its
        # sessions' end, not a detach racing them.
        app.close(linger=CLOSE_LINGER_S)


def _report(e: BaseException, what: str) -> int:
    if isinstance(e, ConnectionRefusedError):
        _err(f"{what}: connection refused")
    elif isinstance(e, TimeoutError):
        _err(f"{what}: timed out")
    elif isinstance(e, OSError) and e.strerror:
        _err(f"{what}: {e.strerror}")
    else:
        _err(f"{what}: {e}")
    return 1


def _connect(args: argparse.Namespace, app: Any) -> int:
    what = f"connect to {args.host}:{args.port}"
    try:
        address = _resolve(args.host, args.port, _is_kernel(app))
        sock = app.create_connection(address, timeout=args.connect_timeout)
        sock.settimeout(None)
    except (OSError, ValueError) as e:
        return _report(e, what)
    if args.verbose:
        _err(f"connected to {args.host}:{args.port}")
    conn = _Connection(sock, _Stdin(sys.stdin.fileno()), sys.stdout.fileno(), args.verbose)
    conn.run(args.quit_after)
    return _report(conn.error, "connection") if conn.error else 0


def _serve(args: argparse.Namespace, app: Any) -> int:
    what = f"listen on {args.host}:{args.port}"
    try:
        address = _resolve(args.host, args.port, _is_kernel(app))
        server = app.create_server(address)
    except (OSError, ValueError) as e:
        return _report(e, what)
    status = 0
    stdin: _Stdin | None = None
    try:
        host, port = server.getsockname()[:2]
        if args.verbose:
            _err(f"listening on {host}:{port}")
        while True:
            try:
                sock, peer = server.accept()
            except OSError as e:
                return _report(e, "accept")
            sock.settimeout(None)
            if args.verbose:
                _err(f"connection from {peer[0]}:{peer[1]}")
            if stdin is None:
                stdin = _Stdin(sys.stdin.fileno())
            conn = _Connection(sock, stdin, sys.stdout.fileno(), args.verbose)
            conn.run(args.quit_after)
            if conn.error:
                status = _report(conn.error, "connection")
            if not args.keep_open:
                return status
    finally:
        server.close()
