"""VclSelector against a real VPP: echo, mixing kernel and VPP sockets, timeouts, VPP dying."""

from __future__ import annotations

import contextlib
import hashlib
import os
import selectors
import signal
import socket
import threading
import time
from typing import Any

import pytest

from pyvcl.errors import LocalError
from pyvcl.selector import VclSelector
from pyvcl.testing.conformance import VclStack, pair
from pyvcl.testing.plugin import vcl_stack_fixture
from pyvcl.vclsocket import VclApp, VclSocket

R, W = selectors.EVENT_READ, selectors.EVENT_WRITE


stack = vcl_stack_fixture(26000, 27000)


def _echo_server(srv: VclSocket, stop: threading.Event, errors: list[BaseException]) -> None:
    """A single-threaded selector echo server: accepts, echoes every byte back."""
    try:
        srv.setblocking(False)
        with VclSelector() as sel:
            sel.register(srv, R, "listener")
            pending: dict[VclSocket, bytearray] = {}
            while not stop.is_set():
                for key, ev in sel.select(0.5):
                    if key.data == "listener":
                        conn, _ = srv.accept()
                        conn.setblocking(False)
                        pending[conn] = bytearray()
                        sel.register(conn, R, "conn")
                        continue
                    conn = key.fileobj
                    buf = pending[conn]
                    if ev & R:
                        try:
                            data = conn.recv(1 << 18)
                        except BlockingIOError:
                            data = None
                        if data == b"":
                            sel.unregister(conn)
                            conn.close()
                            del pending[conn]
                            continue
                        if data:
                            buf += data
                    if ev & W or buf:
                        try:
                            n = conn.send(buf) if buf else 0
                        except BlockingIOError:
                            n = 0
                        del buf[:n]
                    sel.modify(conn, R | W if buf else R, "conn")
            for conn in pending:
                conn.close()
    except BaseException as e:
        errors.append(e)


def test_selector_echo_1mib_both_ways(stack: VclStack) -> None:
    srv, addr = stack.server()
    stop, errors = threading.Event(), []  # type: ignore[var-annotated]
    t = threading.Thread(target=_echo_server, args=(srv, stop, errors), daemon=True)
    t.start()
    payload = os.urandom(1 << 20)
    c = stack.client_socket()
    c.setblocking(False)
    c.connect_ex(addr)
    got = bytearray()
    sent = 0
    with VclSelector() as sel:
        sel.register(c, R | W)
        deadline = time.monotonic() + 60
        while len(got) < len(payload):
            assert time.monotonic() < deadline, f"stuck: sent {sent}, got {len(got)}"
            for _, ev in sel.select(5):
                if ev & W and sent < len(payload):
                    with contextlib.suppress(BlockingIOError):
                        sent += c.send(payload[sent : sent + (1 << 18)])
                    if sent == len(payload):
                        sel.modify(c, R)
                if ev & R:
                    with contextlib.suppress(BlockingIOError):
                        got += c.recv(1 << 20)
    c.close()
    stop.set()
    t.join(10)
    srv.close()
    assert not errors, errors
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


def _nonblocking_client(stack: VclStack) -> tuple[VclSocket, VclSocket, VclSocket]:
    """(listener, non-blocking client, accepted): a connection whose client end never blocks."""
    srv, addr = stack.server()
    c = stack.client_socket()
    c.setblocking(False)
    c.connect_ex(addr)
    srv.settimeout(10)
    conn, _ = srv.accept()
    return srv, c, conn


def test_selector_mixes_kernel_and_vcl_sockets(stack: VclStack) -> None:
    srv, c, conn = _nonblocking_client(stack)
    a, b = socket.socketpair()
    with VclSelector() as sel:
        sel.register(a, R, "kernel")
        sel.register(c, R, "vcl")
        assert sel.get_key(a).data == "kernel" and sel.get_key(c).data == "vcl"
        assert set(sel.get_map()) == {a, c}
        assert sel.select(0.1) == []
        b.send(b"k")
        assert [k.data for k, _ in sel.select(5)] == ["kernel"]
        a.recv(10)
        conn.sendall(b"v")
        assert [k.data for k, _ in sel.select(5)] == ["vcl"]
        b.send(b"k")
        ready: set[str] = set()
        deadline = time.monotonic() + 5
        while ready != {"kernel", "vcl"} and time.monotonic() < deadline:
            ready |= {k.data for k, _ in sel.select(1)}
        assert ready == {"kernel", "vcl"}  # both at once, level-triggered
        sel.unregister(c)
        assert [k.data for k, _ in sel.select(0)] == ["kernel"]
    for s in (a, b, conn, c, srv):
        s.close()


def test_select_timeout_is_honoured_without_spinning(stack: VclStack) -> None:
    srv, c, conn = _nonblocking_client(stack)
    with VclSelector() as sel:
        sel.register(c, R)
        cpu0, t0 = time.process_time(), time.monotonic()
        assert sel.select(1.0) == []
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        assert 0.95 < wall < 3
        assert cpu < 0.3, f"select used {cpu:.2f} s of CPU in {wall:.2f} s: spinning"
        t0 = time.monotonic()
        assert sel.select(0) == [] and time.monotonic() - t0 < 0.5
        # A wake-up from VPP after a while, then the data is reported.
        threading.Timer(0.3, lambda: conn.sendall(b"late")).start()
        t0 = time.monotonic()
        ready = sel.select(10)
        assert ready and 0.25 < time.monotonic() - t0 < 5
        assert c.recv(10) == b"late"
    for s in (conn, c, srv):
        s.close()


def test_selector_and_blocking_thread_share_an_app(stack: VclStack) -> None:
    """A thread blocked in recv on one session while a selector waits on another session
    of the same app: both get their wake-ups (one of them is the mq's poller)."""
    with pair(stack) as (_, c1, conn1), pair(stack) as (_, c2, conn2):
        _share(c1, conn1, c2, conn2)


def _share(c1: VclSocket, conn1: VclSocket, c2: VclSocket, conn2: VclSocket) -> None:
    got: dict[str, bytes] = {}
    c1.settimeout(10)
    t = threading.Thread(target=lambda: got.setdefault("blocking", c1.recv(10)))
    t.start()
    c2.setblocking(False)
    with VclSelector() as sel:
        sel.register(c2, R)
        time.sleep(0.1)
        conn1.sendall(b"one")
        t.join(10)
        assert got.get("blocking") == b"one"
        threading.Timer(0.2, lambda: conn2.sendall(b"two")).start()
        assert sel.select(10)
        assert c2.recv(10) == b"two"


def test_one_app_per_selector(stack: VclStack) -> None:
    a = stack.client_app.socket()
    b = stack.server_app.socket()
    with VclSelector() as sel:
        sel.register(a, R)
        with pytest.raises(ValueError, match="one VclApp"):
            sel.register(b, R)
        sel.unregister(a)
        sel.register(b, R)  # free again
    a.close()
    b.close()


def test_condvar_app_is_refused_clearly(vpp: Any) -> None:
    with VclApp(vpp.app_socket(), name="condvar", use_mq_eventfd=False) as app:
        s = app.socket()
        with VclSelector() as sel, pytest.raises(LocalError, match="use_mq_eventfd"):
            sel.register(s, R)
        s.close()


def test_vpp_killed_while_selecting(vpp_factory: Any) -> None:
    inst = vpp_factory()
    opts = {"scope_local": True, "scope_global": False}
    with (
        VclApp(inst.app_socket(), name="k-srv", **opts) as a,
        VclApp(inst.app_socket(), name="k-cli", **opts) as b,
    ):
        srv = a.create_server(("127.0.0.1", 18900))
        srv.settimeout(10)
        c = b.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", 18900))
        conn, _ = srv.accept()
        with VclSelector() as sel:
            sel.register(c, R)
            assert sel.select(0.05) == []
            killer = threading.Timer(0.3, lambda: os.kill(inst.pid, signal.SIGKILL))
            killer.start()
            t0 = time.monotonic()
            ready = sel.select(30)
            assert ready and time.monotonic() - t0 < 5, "VPP's death must end the select"
            with pytest.raises(OSError):
                c.recv(10)
            assert sel.select(0)  # level-triggered: still reported, no hang
            killer.join()
        for s in (c, conn, srv):
            s.close()
