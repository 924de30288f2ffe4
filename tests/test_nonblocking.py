"""Non-blocking VclSockets against a real VPP: connect/accept/recv/send without waiting."""

from __future__ import annotations

import errno
import selectors
import socket
import time

import pytest

from pyvcl.selector import VclSelector
from pyvcl.testing.conformance import VclStack
from pyvcl.testing.plugin import vcl_stack_fixture
from pyvcl.vclsocket import VclSocket

stack = vcl_stack_fixture(24000, 25000)


def _wait(sel: VclSelector, sock: VclSocket, events: int, timeout: float = 10) -> int:
    sel.register(sock, events)
    try:
        ready = sel.select(timeout)
    finally:
        sel.unregister(sock)
    assert ready, f"{sock!r} not ready for {events} within {timeout} s"
    return ready[0][1]


def _nb_pair(stack: VclStack) -> tuple[VclSocket, VclSocket, VclSocket]:
    """listener, client, accepted -- set up without one blocking call after listen."""
    srv, addr = stack.server()
    srv.setblocking(False)
    c = stack.client_socket()
    c.setblocking(False)
    with pytest.raises(BlockingIOError) as ei:
        c.connect(addr)
    assert ei.value.errno == errno.EINPROGRESS
    assert c.connect_ex(addr) in (errno.EALREADY, 0)
    if stack.topology.name == "ct":
        # A cut-through connect completes only when the server accepts, so it is still in
        # progress here (through VPP's TCP stack it may have completed by now, on a worker).
        with pytest.raises(BlockingIOError):
            c.send(b"too early")  # connect in progress: EAGAIN, as Linux says
    srv_sel, cli_sel = VclSelector(), VclSelector()
    try:
        assert _wait(srv_sel, srv, selectors.EVENT_READ) == selectors.EVENT_READ
        conn, _ = srv.accept()
        conn.setblocking(False)
        assert _wait(cli_sel, c, selectors.EVENT_WRITE) == selectors.EVENT_WRITE
    finally:
        srv_sel.close()
        cli_sel.close()
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    return srv, c, conn


def test_nonblocking_connect_accept_and_data(stack: VclStack) -> None:
    srv, c, conn = _nb_pair(stack)
    try:
        assert c.connect_ex(c.getpeername()) in (0, errno.EISCONN)  # success is said once
        with pytest.raises(OSError) as ei:
            c.connect(c.getpeername())
        assert ei.value.errno == errno.EISCONN
        for s in (c, conn):
            with pytest.raises(BlockingIOError) as bi:
                s.recv(10)
            assert bi.value.errno == errno.EAGAIN
        with pytest.raises(BlockingIOError) as bi:
            srv.accept()
        assert bi.value.errno == errno.EAGAIN
        assert c.send(b"hello") == 5
        sel = VclSelector()
        assert _wait(sel, conn, selectors.EVENT_READ) == selectors.EVENT_READ
        assert conn.recv(100) == b"hello"
        sel.close()
    finally:
        for s in (conn, c, srv):
            s.close()


def test_nonblocking_send_fills_then_drains(stack: VclStack) -> None:
    srv, c, conn = _nb_pair(stack)
    cli_sel, srv_sel = VclSelector(), VclSelector()
    try:
        sent = 0
        chunk = b"z" * 65536
        while True:
            try:
                sent += c.send(chunk)
            except BlockingIOError as e:
                assert e.errno == errno.EAGAIN
                if _wait_or_none(cli_sel, c, 0.1) is None:
                    break
        got = 0
        deadline = time.monotonic() + 30
        while got < sent:
            assert time.monotonic() < deadline
            try:
                got += len(conn.recv(1 << 20))
            except BlockingIOError:
                _wait(srv_sel, conn, selectors.EVENT_READ)
        assert got == sent
        assert _wait(cli_sel, c, selectors.EVENT_WRITE) == selectors.EVENT_WRITE
    finally:
        cli_sel.close()
        srv_sel.close()
        for s in (conn, c, srv):
            s.close()


def _wait_or_none(sel: VclSelector, sock: VclSocket, timeout: float) -> int | None:
    sel.register(sock, selectors.EVENT_WRITE)
    try:
        ready = sel.select(timeout)
    finally:
        sel.unregister(sock)
    return ready[0][1] if ready else None


def test_nonblocking_recv_sees_peer_close(stack: VclStack) -> None:
    """No selector: recv itself must notice the peer's close (it pumps the events)."""
    srv, c, conn = _nb_pair(stack)
    try:
        conn.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                assert c.recv(10) == b""
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "EOF never seen"
                time.sleep(0.005)
    finally:
        c.close()
        srv.close()


def test_nonblocking_connect_refused(stack: VclStack) -> None:
    c = stack.client_socket()
    c.setblocking(False)
    addr = stack.unused_address()
    assert c.connect_ex(addr) == errno.EINPROGRESS
    sel = VclSelector()
    assert _wait(sel, c, selectors.EVENT_WRITE | selectors.EVENT_READ)
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    # As Linux: the next connect reports the abort, and the socket is unconnected again.
    assert c.connect_ex(addr) == errno.ECONNABORTED
    with pytest.raises(OSError) as ei:
        c.recv(1)
    assert ei.value.errno == errno.ENOTCONN
    assert c.connect_ex(addr) == errno.EINPROGRESS  # a new attempt, refused again
    assert _wait(sel, c, selectors.EVENT_WRITE)
    with pytest.raises(ConnectionRefusedError):
        c.connect(addr)  # connect also reports the pending error
    sel.close()
    c.close()


def test_blocking_connect_refused_leaves_socket_reusable(stack: VclStack) -> None:
    srv, addr = stack.server()
    c = stack.client_socket()
    c.settimeout(10)
    with pytest.raises(ConnectionRefusedError):
        c.connect(stack.unused_address())
    srv.setblocking(False)
    c.setblocking(False)
    assert c.connect_ex(addr) == errno.EINPROGRESS
    sel = VclSelector()
    _wait(sel, srv, selectors.EVENT_READ)
    conn, _ = srv.accept()
    _wait(sel, c, selectors.EVENT_WRITE)
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    for s in (sel, conn, c, srv):
        s.close()


def test_worker_recv_on_failed_session_raises(stack: VclStack) -> None:
    """The worker itself (not just VclSocket) refuses to read a session whose connect failed,
    instead of spinning: FAILED counts as not connected."""
    from pyvcl.errors import NotConnected

    c = stack.client_socket()
    c.settimeout(10)
    with pytest.raises(ConnectionRefusedError):
        c.connect(stack.unused_address())
    t0 = time.monotonic()
    with pytest.raises(NotConnected):
        c._worker.recv_into(c._s, bytearray(1), 5.0)
    assert time.monotonic() - t0 < 1.0
    c.close()
