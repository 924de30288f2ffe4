"""The socket checks: what a socket user relies on, each a function of a `Stack`."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..streams import CheckedThread, recv_all, recv_exactly
from .stacks import Stack, pair


def check_echo(stack: Stack) -> None:
    with pair(stack) as (_, cli, conn):
        cli.sendall(b"ping")
        assert recv_exactly(conn, 4) == b"ping"
        conn.sendall(b"pong!")
        assert recv_exactly(cli, 5) == b"pong!"


def check_bulk_both_ways(stack: Stack) -> None:
    size = 8 << 20
    up, down = os.urandom(size), os.urandom(size // 2)
    with pair(stack) as (_, cli, conn):
        got: dict[str, bytes] = {}
        t = threading.Thread(target=lambda: got.setdefault("up", recv_exactly(conn, size)))
        t.start()
        cli.sendall(up)
        t.join(60)
        t2 = threading.Thread(target=lambda: conn.sendall(down))
        t2.start()
        got["down"] = recv_exactly(cli, len(down))
        t2.join(60)
    assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
    assert got["down"] == down


def check_eof_after_peer_close(stack: Stack) -> None:
    with pair(stack) as (_, cli, conn):
        cli.sendall(b"last words")
        cli.close()
        assert recv_all(conn) == b"last words"
        assert conn.recv(10) == b""  # EOF stays EOF


def check_connect_refused(stack: Stack) -> None:
    try:
        s = stack.connect(stack.unused_address(), timeout=10)
    except ConnectionRefusedError as e:
        assert e.errno == errno.ECONNREFUSED
    else:
        s.close()
        raise AssertionError("connect to an unused address succeeded")


def check_recv_timeout(stack: Stack) -> None:
    with pair(stack) as (_, cli, _conn):
        cli.settimeout(0.2)
        assert cli.gettimeout() == 0.2
        t0 = time.monotonic()
        try:
            cli.recv(10)
        except TimeoutError:
            pass
        else:
            raise AssertionError("recv without data did not time out")
        assert 0.15 < time.monotonic() - t0 < 5


def check_sendall_timeout_bounds_the_whole_call(stack: Stack) -> None:
    """Python >= 3.5: a sendall's timeout is its total duration, however often a slow reader
    lets a partial send through."""
    stop = threading.Event()

    def trickle(conn: Any) -> None:
        # Reads a little every 50 ms: progress, but slow.  Gives up after 6 s, so a sendall
        # whose timeout restarts with each send still ends (late) and the check fails fast.
        conn.settimeout(0.05)
        end = time.monotonic() + 6
        while not stop.is_set() and time.monotonic() < end:
            with contextlib.suppress(TimeoutError, BlockingIOError, OSError):
                conn.recv(16 << 10)
            time.sleep(0.05)

    with pair(stack) as (_, cli, conn):
        t = threading.Thread(target=trickle, args=(conn,), daemon=True)
        t.start()
        cli.settimeout(1.0)
        t0 = time.monotonic()
        try:
            cli.sendall(bytes(256 << 20))  # far more than any buffer and the trickle can take
        except TimeoutError:
            pass
        else:
            raise AssertionError("sendall to a slow reader did not time out")
        finally:
            stop.set()
            t.join(5)
        assert time.monotonic() - t0 < 5, "sendall's timeout was restarted by each send"


def check_nonblocking_recv(stack: Stack) -> None:
    with pair(stack) as (_, cli, conn):
        cli.setblocking(False)
        assert not cli.getblocking()
        try:
            cli.recv(10)
        except BlockingIOError as e:
            assert e.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
        else:
            raise AssertionError("non-blocking recv without data returned")
        conn.sendall(b"x")
        deadline = time.monotonic() + 5
        while True:
            try:
                assert cli.recv(10) == b"x"
                break
            except BlockingIOError:
                assert time.monotonic() < deadline
                time.sleep(0.005)


def check_send_after_shutdown_is_broken_pipe(stack: Stack) -> None:
    with pair(stack) as (_, cli, _conn):
        cli.shutdown(socket.SHUT_WR)
        try:
            cli.send(b"x")
        except BrokenPipeError as e:
            assert e.errno == errno.EPIPE
        else:
            raise AssertionError("send after shutdown(SHUT_WR) succeeded")


def check_addresses(stack: Stack) -> None:
    with pair(stack) as (srv, cli, conn):
        host, port = srv.getsockname()[:2]
        assert isinstance(host, str) and isinstance(port, int) and port > 0
        assert cli.getpeername()[1] == port
        assert isinstance(conn.getsockname()[1], int)


def check_accept_timeout(stack: Stack) -> None:
    srv, _ = stack.server()
    try:
        srv.settimeout(0.2)
        try:
            srv.accept()
        except TimeoutError:
            pass
        else:
            raise AssertionError("accept without a client did not time out")
    finally:
        srv.close()


def check_sequential_connections(stack: Stack) -> None:
    srv, addr = stack.server()
    n = 50

    def serve() -> None:
        for _ in range(n):
            conn, _ = srv.accept()
            with conn:
                conn.sendall(recv_exactly(conn, 8))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        for i in range(n):
            with stack.connect(addr, timeout=10) as c:
                c.sendall(i.to_bytes(8, "little"))
                assert recv_exactly(c, 8) == i.to_bytes(8, "little")
        t.join(30)
    finally:
        srv.close()


def check_concurrent_connections(stack: Stack) -> None:
    srv, addr = stack.server()
    n = 20
    conns = []
    try:
        clients = []
        for _ in range(n):
            t = threading.Thread(target=lambda: conns.append(srv.accept()[0]), daemon=True)
            t.start()
            clients.append(stack.connect(addr, timeout=10))
            t.join(10)
        assert len(conns) == n
        for i, c in enumerate(clients):
            c.sendall(bytes([i]) * 100)
        received = sorted(recv_exactly(s, 100)[0] for s in conns)
        assert received == list(range(n))
        for c in clients:
            c.close()
    finally:
        for s in conns:
            s.close()
        srv.close()


def check_use_after_close(stack: Stack) -> None:
    with pair(stack) as (_, cli, _conn):
        cli.close()
        cli.close()  # idempotent
        try:
            cli.send(b"x")
        except OSError as e:
            assert e.errno == errno.EBADF
        else:
            raise AssertionError("send on a closed socket succeeded")


SOCKET_CHECKS: list[Callable[[Stack], None]] = [
    check_echo,
    check_bulk_both_ways,
    check_eof_after_peer_close,
    check_connect_refused,
    check_recv_timeout,
    check_sendall_timeout_bounds_the_whole_call,
    check_nonblocking_recv,
    check_send_after_shutdown_is_broken_pipe,
    check_addresses,
    check_accept_timeout,
    check_sequential_connections,
    check_concurrent_connections,
    check_use_after_close,
]


def check_send_after_peer_close_is_broken_pipe(stack: Stack) -> None:
    """Writing into a connection the peer closed fails (the first writes may still be
    buffered, as with kernel TCP): BrokenPipeError, as a socket user expects."""
    with pair(stack) as (_, cli, conn):
        conn.close()
        assert cli.recv(10) == b""  # the peer's close is seen first
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                cli.send(b"x" * 1024)
                time.sleep(0.01)
        except BrokenPipeError as e:
            assert e.errno == errno.EPIPE
        else:
            raise AssertionError("writes into a closed connection kept succeeding")


SOCKET_CHECKS.append(check_send_after_peer_close_is_broken_pipe)


def check_listen_again(stack: Stack) -> None:
    """listen() on a listener changes nothing but the backlog (asyncio's
    ``start_server(sock=...)`` calls it on the socket it is given); on a connected socket
    it is EINVAL."""
    with pair(stack) as (srv, cli, _conn):
        srv.listen(5)
        # (accepting in a thread: a cut-through connect completes only once accepted)
        accepting = CheckedThread(srv.accept, name="accept after the second listen()")
        with stack.connect(srv.getsockname(), timeout=10) as again:
            accepted, _ = accepting.result()
            with accepted:
                again.sendall(b"still listening")
                assert recv_exactly(accepted, 15) == b"still listening"
        try:
            cli.listen()
        except OSError as e:
            assert e.errno == errno.EINVAL, e
        else:
            raise AssertionError("listen() on a connected socket succeeded")


SOCKET_CHECKS.append(check_listen_again)


# -- non-blocking sockets and selectors ---------------------------------------------------------
def check_nonblocking_connect(stack: Stack) -> None:
    """connect on a non-blocking socket: EINPROGRESS (or done at once), writable when
    connected, SO_ERROR 0; connecting again then says EISCONN (Linux: success once first)."""
    srv, addr = stack.server()
    c = stack.client_socket()
    sel = stack.selector()
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.setdefault("conn", srv.accept()[0]), daemon=True)
    try:
        c.setblocking(False)
        err = c.connect_ex(addr)
        assert err in (0, errno.EINPROGRESS), errno.errorcode.get(err, err)
        t.start()  # (cut-through: VPP reports the connect once the server accepted)
        sel.register(c, selectors.EVENT_WRITE)
        assert sel.select(10) == [(sel.get_key(c), selectors.EVENT_WRITE)]
        so_error = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        assert so_error == 0, errno.errorcode.get(so_error, so_error)
        assert c.connect_ex(addr) in (0, errno.EISCONN)
        assert c.connect_ex(addr) == errno.EISCONN
        t.join(10)
        c.sendall(b"nb")
        assert recv_exactly(out["conn"], 2) == b"nb"
    finally:
        if t.is_alive():
            t.join(10)
        sel.close()
        for s in (out.get("conn"), c, srv):
            if s is not None:
                s.close()


def check_nonblocking_connect_refused(stack: Stack) -> None:
    """A refused non-blocking connect: writable, SO_ERROR ECONNREFUSED (then 0)."""
    c = stack.client_socket()
    sel = stack.selector()
    try:
        c.setblocking(False)
        err = c.connect_ex(stack.unused_address())
        if err == errno.EINPROGRESS:
            sel.register(c, selectors.EVENT_WRITE)
            assert sel.select(10), "a refused connect must make the socket writable"
            sel.unregister(c)
            err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        assert err == errno.ECONNREFUSED, errno.errorcode.get(err, err)
        assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    finally:
        sel.close()
        c.close()


def check_selector_readiness(stack: Stack) -> None:
    """Level-triggered readiness: a timeout with nothing ready, readable when data comes,
    not writable with a full send buffer, writable again once the peer reads."""
    with pair(stack) as (_, cli, conn):
        cli.setblocking(False)
        sel = stack.selector()
        try:
            sel.register(cli, selectors.EVENT_READ)
            t0 = time.monotonic()
            assert sel.select(0.2) == []
            assert 0.15 < time.monotonic() - t0 < 5
            conn.sendall(b"x" * 100)
            assert [ev for _, ev in sel.select(10)] == [selectors.EVENT_READ]
            assert [ev for _, ev in sel.select(0)] == [selectors.EVENT_READ]  # level
            got = b""
            while len(got) < 100:
                sel.select(10)
                got += cli.recv(1000)
            assert got == b"x" * 100
            sel.modify(cli, selectors.EVENT_WRITE)
            assert [ev for _, ev in sel.select(10)] == [selectors.EVENT_WRITE]
            sent = 0
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # fill every buffer on the way
                try:
                    sent += cli.send(b"y" * 65536)
                except BlockingIOError:
                    # Full once no room shows up for a while: VPP's TCP (v26.02 more than
                    # v26.06) frees the last bits of a filling send buffer every ~100 ms.
                    if not sel.select(0.5):
                        break
            assert sel.select(0.2) == [], "writable with full buffers"
            drained: dict[str, int] = {}
            t = threading.Thread(
                target=lambda: drained.setdefault("n", len(recv_exactly(conn, sent)))
            )
            t.start()
            assert [ev for _, ev in sel.select(10)] == [selectors.EVENT_WRITE]
            t.join(30)
            assert drained["n"] == sent
        finally:
            sel.close()


SOCKET_CHECKS += [
    check_nonblocking_connect,
    check_nonblocking_connect_refused,
    check_selector_readiness,
]
