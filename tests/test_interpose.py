"""pyvcl.interpose: standard-library sockets carried by VPP sessions, with real descriptors."""

from __future__ import annotations

import asyncio
import errno
import os
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pyvcl.interpose as interpose
from pyvcl.interpose import readiness, selecting, sockopts
from pyvcl.interpose.readiness import ReadinessFd
from pyvcl.interpose.vsocket import ForkedSession, InterposedSocket, socket_over, std_socket
from pyvcl.testing.hoststack import cut_through
from pyvcl.vclsocket import VclApp

from .subproc import run_bounded

# -- without VPP ----------------------------------------------------------------------------


def _polled(fd: int) -> tuple[bool, bool]:
    """(readable, writable) of ``fd`` as select, poll and epoll each see it (they agree)."""
    r, w, _ = select.select([fd], [fd], [], 0)
    by_select = (bool(r), bool(w))
    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLOUT)
    ev = dict(p.poll(0)).get(fd, 0)
    by_poll = (bool(ev & select.POLLIN), bool(ev & select.POLLOUT))
    with select.epoll() as ep:
        ep.register(fd, select.EPOLLIN | select.EPOLLOUT)
        ev = dict(ep.poll(0)).get(fd, 0)
    by_epoll = (bool(ev & select.EPOLLIN), bool(ev & select.EPOLLOUT))
    assert by_select == by_poll == by_epoll
    return by_select


@pytest.mark.parametrize("readable", [False, True])
@pytest.mark.parametrize("writable", [False, True])
def test_readiness_fd_says_what_it_is_told(readable: bool, writable: bool) -> None:
    rfd = ReadinessFd()
    try:
        for state in [(readable, writable), (not readable, writable), (readable, not writable)]:
            rfd.set(*state)
            rfd.set(*state)  # idempotent
            assert _polled(rfd.fd) == state
            assert (rfd.readable, rfd.writable) == state
    finally:
        rfd.close_peer()
        os.close(rfd.fd)


def test_readiness_fd_virtual_mode_keeps_the_state_in_user_space() -> None:
    rfd = ReadinessFd(readable=True, writable=True)
    wakes: list[int] = []
    try:
        rfd.enter_virtual(lambda: wakes.append(1))
        rfd.enter_virtual(None)  # a second registration: counted, the first waker stays
        assert _polled(rfd.fd) == (False, True)  # never readable; writable left alone ...
        rfd.watch_write(+1)
        assert _polled(rfd.fd) == (False, False)  # ... until someone watches for it
        assert (rfd.readable, rfd.writable) == (True, True)  # what was asked stays
        assert rfd in readiness.virtually_readable
        rfd.set(False, False)
        assert rfd not in readiness.virtually_readable and not wakes
        rfd.set(True, False)  # newly ready: the waker is told, once per change to ready
        rfd.set(True, False)
        assert rfd in readiness.virtually_readable and len(wakes) == 1
        rfd.set(True, True)
        assert len(wakes) == 2
        rfd.set(False, True)
        assert _polled(rfd.fd) == (False, False)  # no system call changed the kernel side
        rfd.leave_virtual()
        assert _polled(rfd.fd) == (False, False)  # still one registration
        rfd.leave_virtual()
        assert _polled(rfd.fd) == (False, True)  # the last one gives the kernel the state
        assert rfd not in readiness.virtually_readable
        rfd.set(True, True)  # kernel mode again: no waker
        assert _polled(rfd.fd) == (True, True) and len(wakes) == 2
        # VPP's death: the kernel side too, whoever sleeps on it wakes
        rfd.set(False, False)
        rfd.enter_virtual(None)
        rfd.force(True, True)
        assert _polled(rfd.fd) == (True, True) and rfd in readiness.virtually_readable
        rfd.close_peer()  # closed: out of the set, for selectors that still hold it
        assert rfd not in readiness.virtually_readable and not rfd.virtual
    finally:
        readiness.virtually_readable.discard(rfd)
        rfd.close_peer()
        os.close(rfd.fd)


@pytest.fixture
def interposed_kernel() -> Iterator[None]:
    """Interposition on, with no VPP behind it: every socket is a kernel one."""

    class NoVpp:
        backend = None  # not a VclApp: kernel sockets

    interpose.enable(NoVpp())
    try:
        yield
    finally:
        interpose.disable()


def test_without_vpp_sockets_are_the_standard_ones(interposed_kernel: None) -> None:
    assert interpose.enabled()
    s = socket.socket()
    assert type(s) is std_socket and isinstance(s, socket.socket)
    a, b = socket.socketpair()
    with s, a, b:
        a.sendall(b"ping")
        assert b.recv(4) == b"ping"
        assert isinstance(a, socket.socket) and issubclass(std_socket, socket.socket)

    class Mine(socket.socket):  # a program's own subclass still works over the kernel
        pass

    srv = socket.create_server(("127.0.0.1", 0))
    with srv, Mine(socket.AF_INET, socket.SOCK_STREAM) as m:
        m.connect(srv.getsockname())
        conn, _ = srv.accept()
        with conn:
            m.sendall(b"hello")
            assert conn.recv(5) == b"hello"
    interpose.disable()
    assert socket.socket is std_socket and not interpose.enabled()


def test_sockopt_values_round_trip() -> None:
    linger = (socket.SOL_SOCKET, socket.SO_LINGER)
    assert sockopts.to_int(linger, sockopts._LINGER.pack(1, 5), None) == 1
    assert sockopts.as_requested(linger, 1, 8) == sockopts._LINGER.pack(1, 0)
    assert sockopts.to_int((socket.IPPROTO_TCP, socket.TCP_NODELAY), 1, None) == 1
    with pytest.raises(OSError):
        sockopts.to_int(linger, b"x", None)


# -- with VPP -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apps(vpp: Any) -> Iterator[tuple[VclApp, VclApp]]:
    side = cut_through(vpp).server
    srv = VclApp(side.socket, name="ip-srv", **side.pyvcl_opts)
    cli = VclApp(side.socket, name="ip-cli", **side.pyvcl_opts)
    yield srv, cli
    cli.close()
    srv.close()


@pytest.fixture
def pair(apps: tuple[VclApp, VclApp]) -> Iterator[tuple[Any, Any, Any]]:
    srv_app, cli_app = apps
    lst = socket_over(srv_app)
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    cli = _connect_to(lst, cli_app)
    lst.settimeout(10)
    conn, _ = lst.accept()
    conn.settimeout(10)
    assert _wait(cli, selectors.EVENT_WRITE) == selectors.EVENT_WRITE
    cli.settimeout(10)
    yield lst, cli, conn
    for s in (cli, conn, lst):
        s.close()


def _connect_to(lst: Any, cli_app: VclApp, family: int = socket.AF_INET) -> Any:
    """A client socket connecting to ``lst`` without blocking: a cut-through connect ends
    only once the listener's app accepts, which this very thread does next."""
    cli = socket_over(cli_app, family)
    cli.setblocking(False)
    port = lst.getsockname()[1]
    with pytest.raises(BlockingIOError):
        cli.connect(("127.0.0.1", port))
    return cli


def _wait(fd_owner: Any, events: int, timeout: float = 5.0) -> int:
    with selectors.DefaultSelector() as sel:
        sel.register(fd_owner, events)
        ready = sel.select(timeout)
    return ready[0][1] if ready else 0


@pytest.mark.vpp
def test_sockets_are_standard_sockets_with_their_own_descriptor(pair: Any) -> None:
    lst, cli, _conn = pair
    fds = {s.fileno() for s in pair}
    assert len(fds) == 3 and min(fds) >= 0
    for s in pair:
        assert isinstance(s, std_socket) and isinstance(s, InterposedSocket)
        assert s.family == socket.AF_INET and s.type == socket.SOCK_STREAM
    assert cli.getpeername() == lst.getsockname()
    assert lst.getsockname()[1] != 0  # a port was picked at bind, as the kernel does


@pytest.mark.vpp
def test_readiness_follows_the_session(pair: Any) -> None:
    _lst, cli, conn = pair
    assert _polled(conn.fileno()) == (False, True)  # connected, nothing to read
    cli.sendall(b"hello")
    assert _wait(conn, selectors.EVENT_READ) == selectors.EVENT_READ
    assert conn.recv(100) == b"hello"
    assert _polled(conn.fileno()) == (False, True)  # drained: not readable any more
    # Fill the client's tx fifo: it stops being writable, and is again once the peer reads.
    cli.setblocking(False)
    sent = 0
    with pytest.raises(BlockingIOError):
        while True:
            sent += cli.send(b"x" * 65536)
    assert _polled(cli.fileno())[1] is False
    got = 0
    while got < sent:
        got += len(conn.recv(1 << 20))
    assert _wait(cli, selectors.EVENT_WRITE) == selectors.EVENT_WRITE
    cli.close()
    assert _wait(conn, selectors.EVENT_READ) == selectors.EVENT_READ
    assert conn.recv(10) == b""  # EOF is readable, as on a kernel socket


@pytest.mark.vpp
def test_listener_is_readable_for_each_connection(apps: tuple[VclApp, VclApp]) -> None:
    srv_app, cli_app = apps
    with socket_over(srv_app) as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        lst.setblocking(False)
        with pytest.raises(BlockingIOError):
            lst.accept()
        for _ in range(3):  # every accept must be signalled anew (once it was not)
            with socket_over(cli_app) as c:
                c.setblocking(False)
                with pytest.raises(BlockingIOError):
                    c.connect(lst.getsockname())
                assert _wait(lst, selectors.EVENT_READ) == selectors.EVENT_READ
                conn, _ = lst.accept()
                assert _wait(c, selectors.EVENT_WRITE) == selectors.EVENT_WRITE
                assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                conn.close()
            assert _polled(lst.fileno())[0] is False


@pytest.mark.vpp
def test_duplicates_share_the_session(pair: Any) -> None:
    _, cli, conn = pair
    dup = conn.dup()
    # What socket.fromfd does under enable(): socket.socket(..., fileno=dup(fd)).
    other = InterposedSocket(socket.AF_INET, socket.SOCK_STREAM, 0, os.dup(conn.fileno()))
    assert isinstance(dup, InterposedSocket) and isinstance(other, InterposedSocket)
    conn.close()  # the session lives on in the duplicates
    cli.sendall(b"abc")
    dup.settimeout(5)
    assert dup.recv(3) == b"abc"
    dup.close()
    other.sendall(b"xyz")
    assert cli.recv(3) == b"xyz"
    other.close()
    assert cli.recv(10) == b""  # the last one closed the session


@pytest.mark.vpp
def test_options_are_accepted_and_read_back(pair: Any) -> None:
    _, cli, _ = pair
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    assert cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) > 0  # the tx fifo's size
    assert len(cli.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)) == 8
    with pytest.raises(OSError) as e:
        cli.setsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 1)
    assert e.value.errno == errno.ENOPROTOOPT


@pytest.mark.vpp
def test_makefile_and_sendfile(pair: Any, tmp_path: Any) -> None:
    _, cli, conn = pair
    data = os.urandom(300_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(conn.makefile("rb").read(len(data))))
    reader.start()
    with open(path, "rb") as f:
        assert cli.sendfile(f) == len(data)
    reader.join(10)
    assert out == [data]
    with cli.makefile("w", encoding="ascii") as w:
        w.write("line one\nline two\n")
    assert conn.makefile("r", encoding="ascii").readline() == "line one\n"


@pytest.mark.vpp
def test_peek_and_waitall(pair: Any) -> None:
    _, cli, conn = pair
    cli.sendall(b"0123456789")
    assert conn.recv(4, socket.MSG_PEEK) == b"0123"
    assert conn.recv(10, socket.MSG_WAITALL) == b"0123456789"
    with pytest.raises(BlockingIOError):
        conn.recv(1, socket.MSG_DONTWAIT)


@pytest.mark.vpp
def test_asyncio_default_loop_over_interposed_sockets(apps: tuple[VclApp, VclApp]) -> None:
    srv_app, cli_app = apps
    payload = os.urandom(2 << 20)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    async def main() -> bytes:
        lst = socket_over(srv_app)
        lst.bind(("127.0.0.1", 0))
        server = await asyncio.start_server(handle, sock=lst)
        c = socket_over(cli_app)
        c.setblocking(False)
        await asyncio.get_running_loop().sock_connect(c, lst.getsockname())
        r, w = await asyncio.open_connection(sock=c)
        w.write(payload)
        await w.drain()
        got = await r.readexactly(len(payload))
        w.write_eof() if w.can_write_eof() else None
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        return got

    assert asyncio.run(asyncio.wait_for(main(), 30)) == payload


@pytest.mark.vpp
def test_ipv6_listener_on_any_hears_ipv4_too(apps: tuple[VclApp, VclApp]) -> None:
    srv_app, cli_app = apps
    with socket_over(srv_app, socket.AF_INET6) as lst:
        lst.bind(("::", 0))
        lst.listen()
        with _connect_to(lst, cli_app) as c:
            lst.settimeout(10)
            conn, addr = lst.accept()
            assert _wait(c, selectors.EVENT_WRITE) == selectors.EVENT_WRITE
            c.settimeout(10)
            with conn:
                # IPv6-shaped, as a kernel's dual-stack listener reports an IPv4 peer (VPP
                # names no peer address for cut-through sessions: zeros, so "::").
                assert len(addr) == 4 and addr[0] in ("::", "::ffff:127.0.0.1")
                c.sendall(b"v4")
                conn.settimeout(5)
                assert conn.recv(2) == b"v4"


def _in_forked_child(check: Callable[[], int]) -> int:
    """Run ``check`` in a forked child; its result (a byte), once the child exited cleanly."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = check()
        finally:
            os.write(w, bytes([code]))
            os._exit(0)
    os.close(w)
    try:
        _, status = os.waitpid(pid, 0)
        assert status == 0
        return os.read(r, 1)[0]
    finally:
        os.close(r)


@pytest.mark.vpp
def test_forked_child_gets_a_clear_error_and_the_parent_goes_on(pair: Any) -> None:
    _, cli, conn = pair

    def child() -> int:  # what using the parent's session does, then close it
        code = 1
        try:
            conn.recv(1)
        except ForkedSession as e:
            code = 0 if e.errno == 9 else 2
        except BaseException:
            code = 3
        # A duplicate made in the child is still the parent's session.
        dup = InterposedSocket(socket.AF_INET, socket.SOCK_STREAM, 0, os.dup(conn.fileno()))
        try:
            dup.recv(1)
            code = code or 4
        except ForkedSession:
            pass
        except BaseException:
            code = code or 5
        dup.close()
        conn.close()
        return code

    assert _in_forked_child(child) == 0
    cli.sendall(b"still here")
    assert conn.recv(10) == b"still here"


@pytest.mark.vpp
def test_the_data_path_a_socket_keeps_ends_with_fork_and_close(pair: Any) -> None:
    """The data methods call the session's per-call path first, kept on the socket once a
    call found the session connected: it must not outlive the process that made it or the
    socket object's close (a duplicate still holding the session)."""
    _, cli, conn = pair
    cli.sendall(b"a")
    assert conn.recv(1) == b"a"  # both now hold their data path
    conn.sendall(b"b")
    assert cli.recv_into(bytearray(1)) == 1

    def child() -> int:
        code = 0
        calls: list[Callable[[], object]] = [
            lambda: cli.sendall(b"from the child"),
            lambda: cli.send(b"from the child"),
            lambda: conn.recv(1),
            lambda: conn.recv_into(bytearray(1)),
        ]
        for i, call in enumerate(calls):
            try:
                call()
                code = code or 10 + i
            except ForkedSession:
                pass
            except BaseException:
                code = code or 20 + i
        return code

    assert _in_forked_child(child) == 0
    cli.sendall(b"parent")  # (nothing of the child's went into the shared fifo)
    assert conn.recv(100) == b"parent"
    cli.sendall(b"zz")
    dup = conn.dup()
    conn.close()
    for call in (lambda: conn.recv(1), lambda: conn.recv_into(bytearray(1))):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EBADF
    with pytest.raises(OSError):
        conn.sendall(b"x")
    dup.settimeout(5)
    assert dup.recv(2) == b"zz"
    dup.close()


def test_interposition_leaves_other_kinds_of_socket_alone() -> None:
    """Under enable, a unix socketpair, UDP and a kernel listener's accepted sockets are the
    standard ones (checked in a child process: enable patches the socket module)."""
    code = """
import socket
import pyvcl.interpose as ip
class NoVpp:
    backend = None
ip.enable(NoVpp())
a, b = socket.socketpair()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print(type(a).__name__, type(u).__name__, isinstance(a, socket.socket))
"""
    out = run_bounded(code, timeout=30)
    assert out.strip().endswith("socket socket True"), out


@pytest.mark.vpp
def test_a_programs_subclass_stays_its_class_over_vpp(apps: tuple[VclApp, VclApp]) -> None:
    """``class Mine(socket.socket)`` under interposition: instances are Mine, their own
    ``__init__`` and methods run, and the data goes through VPP."""
    srv_app, _ = apps

    class Mine(InterposedSocket):  # what `class Mine(socket.socket)` is under enable()
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.mine = True

        def hello(self) -> str:
            return "mine"

    class OneApp:
        backend = srv_app

    interpose.enable(OneApp())
    try:
        s = Mine(socket.AF_INET, socket.SOCK_STREAM)
    finally:
        interpose.disable()
    with s:
        assert type(s) is Mine and s.mine and s.hello() == "mine"
        assert s._carrier is not None  # carried by VPP, not a kernel socket
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert s.getsockname()[1] != 0


# -- virtual readiness in the pumping selectors ---------------------------------------------


@pytest.mark.vpp
@pytest.mark.parametrize("kind", ["EpollSelector", "PollSelector"])
def test_pumping_selector_reads_readiness_from_user_space(pair: Any, kind: str) -> None:
    _lst, cli, conn = pair
    with getattr(selecting, kind)() as sel:
        sel.register(conn, selectors.EVENT_READ, "conn")
        sel.register(cli, selectors.EVENT_READ | selectors.EVENT_WRITE, "cli")
        # virtual: the kernel side never polls readable, and not writable where the
        # selector asks the kernel for writability (write interest)
        assert _polled(conn.fileno()) == (False, True)
        assert _polled(cli.fileno()) == (False, False)
        assert {k.data: ev for k, ev in sel.select(5)} == {"cli": selectors.EVENT_WRITE}
        cli.sendall(b"hello")
        conn.sendall(b"back")
        # Re-read both sessions as the pump does after their events (waiting for the events
        # themselves is the pump's business, tested elsewhere).
        for s in (cli, conn):
            s._carrier.sync()
        ready = sel.select(0)  # level-triggered: still reported, one entry per key
        assert sorted((k.data, ev) for k, ev in ready) == [
            ("cli", selectors.EVENT_READ | selectors.EVENT_WRITE),
            ("conn", selectors.EVENT_READ),
        ]
        assert _polled(conn.fileno()) == (False, True)  # (no system call flipped it)
        assert conn.recv(100) == b"hello" and cli.recv(100) == b"back"
        assert {k.data: ev for k, ev in sel.select(0)} == {"cli": selectors.EVENT_WRITE}
        sel.modify(cli, selectors.EVENT_READ, "cli")
        assert sel.select(0) == []
        sel.unregister(conn)  # back to the kernel, with the state it has
        assert _polled(conn.fileno()) == (False, True)
        cli.sendall(b"more")
        assert _wait(conn, selectors.EVENT_READ) == selectors.EVENT_READ
        assert _polled(conn.fileno()) == (True, True)
        assert conn.recv(100) == b"more"
    assert _polled(cli.fileno()) == (False, True)  # closing the selector restored it


@pytest.mark.vpp
def test_pumping_selector_wakes_when_another_thread_makes_a_socket_ready(pair: Any) -> None:
    """No lost wake-up: a selector sleeping with a long timeout while another thread (the
    pump, or one polling in a blocked socket call) makes a virtual-mode socket ready."""
    _lst, _cli, conn = pair
    c = conn._carrier
    with selecting.EpollSelector() as sel:
        sel.register(conn, selectors.EVENT_READ)
        assert sel.select(0.05) == []  # (takes any signal left by earlier events)
        got: list[Any] = []

        def sleep() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # (a selector may wake up with nothing)
                ready = sel.select(30)
                if ready:
                    got.append(ready)
                    return

        sleeper = threading.Thread(target=sleep, daemon=True)
        sleeper.start()
        for _ in range(500):  # until it sleeps in epoll
            if c.pump.inline:
                break
            threading.Event().wait(0.01)
        assert c.pump.inline
        with c.app.worker.lock:  # what a pump's sync does, without an event to wake it
            c.rfd.set(True, True)
        sleeper.join(5)
        assert not sleeper.is_alive(), "the selector slept through a socket becoming ready"
        assert [(k.fileobj, ev) for k, ev in got[0]] == [(conn, selectors.EVENT_READ)]
        with c.app.worker.lock:
            c.sync_locked()  # (back to what the session says)


@pytest.mark.vpp
def test_pumping_selector_forgets_a_closed_socket(apps: tuple[VclApp, VclApp]) -> None:
    srv_app, _ = apps
    s = socket_over(srv_app)
    with selecting.EpollSelector() as sel:
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
        rfd = s._carrier.rfd
        assert rfd.virtual == 1
        s.close()  # closed while registered, as a program may do
        assert rfd not in readiness.virtually_readable
        assert sel.select(0) == []  # not reported as a ghost (epoll dropped it too)
