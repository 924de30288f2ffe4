"""Opportunistic use (pyvcl.fallback): VPP when it answers, kernel sockets when it does not."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pyvcl
from pyvcl import fallback
from pyvcl.fallback import KernelApp, OpportunisticApp, is_vpp, open_app
from pyvcl.vclsocket import VclApp


def echo_through(app: Any, host: str = "127.0.0.1", port: int = 0, client: Any = None) -> None:
    """A listener of ``app`` and a client of ``client`` (default ``app``): the client's bytes
    come back.  (VPP does not connect an app to its own listener: give VPP two apps.)"""
    client = client or app
    srv = app.create_server((host, port))
    addr = (host, srv.getsockname()[1] if port == 0 else port)
    done: dict[str, Any] = {}

    def serve() -> None:
        try:
            conn, _ = srv.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
        except BaseException as e:  # reported by the main thread
            done["error"] = e

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        payload = os.urandom(300_000)
        with client.create_connection(addr, timeout=10) as c:
            c.settimeout(10)
            c.sendall(payload)
            got = bytearray()
            while len(got) < len(payload):
                chunk = c.recv(65536)
                assert chunk, f"EOF after {len(got)} bytes"
                got += chunk
        assert got == payload
        t.join(10)
        assert "error" not in done, done.get("error")
    finally:
        srv.close()


# -- without VPP ---------------------------------------------------------------------------------
def test_open_app_without_vpp_is_kernel(tmp_path: Path) -> None:
    seen: list[BaseException] = []
    with open_app(tmp_path / "no-vpp", on_fallback=seen.append) as app:
        assert isinstance(app, OpportunisticApp) and isinstance(app.backend, KernelApp)
        assert not is_vpp(app) and app.is_vpp is False
        assert isinstance(app.reason, pyvcl.VppUnreachable) and seen == [app.reason]
        echo_through(app)
        s = app.socket()
        assert isinstance(s, socket.socket) and s.type == socket.SOCK_STREAM
    assert app.closed and s.fileno() == -1  # closing the app closed its sockets


def test_open_app_without_fallback_raises(tmp_path: Path) -> None:
    with pytest.raises(pyvcl.VppUnreachable, match="no VPP app socket"):
        open_app(tmp_path / "no-vpp", fallback=False)


def test_open_app_does_not_hide_other_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown attach option"):
        open_app(tmp_path / "no-vpp", no_such_option=1)


def test_kernel_app_after_close() -> None:
    app = KernelApp()
    app.close()
    app.close()  # idempotent
    with pytest.raises(OSError) as e:
        app.create_server(("127.0.0.1", 0))
    assert e.value.errno == 9


def test_kernel_app_refused_like_vcl() -> None:
    with KernelApp() as app:
        srv = app.create_server(("127.0.0.1", 0))
        port = srv.getsockname()[1]
        srv.close()
        with pytest.raises(ConnectionRefusedError):
            app.create_connection(("127.0.0.1", port), timeout=5)


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_kernel_app_ipv6() -> None:
    with KernelApp() as app:
        try:
            echo_through(app, "::1")
        except OSError as e:  # loopback without ::1 (containers)
            pytest.skip(f"no IPv6 loopback: {e}")


@pytest.fixture
def no_vpp_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("VCL_CONFIG", "")
    monkeypatch.setenv("VCL_VPP_SAPI_SOCKET", str(tmp_path / "no-vpp"))
    fallback.close_default_app()
    yield
    fallback.close_default_app()


def test_module_level_functions_without_vpp(no_vpp_env: None) -> None:
    srv = pyvcl.create_server(("127.0.0.1", 0))
    app = fallback.default_app()
    assert isinstance(app.backend, KernelApp) and isinstance(srv, socket.socket)
    assert fallback.default_app() is app  # made once per process
    port = srv.getsockname()[1]
    t = threading.Thread(target=lambda: srv.accept()[0].sendall(b"hi"), daemon=True)
    t.start()
    with pyvcl.create_connection(("127.0.0.1", port), timeout=5) as c:
        assert c.recv(10) == b"hi"
    t.join(5)
    srv.close()
    fallback.close_default_app()
    assert app.closed and fallback.default_app() is not app


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_default_app_is_made_again_after_fork(no_vpp_env: None) -> None:
    parent_app = fallback.default_app()
    pid = os.fork()
    if pid == 0:  # the child: a new default app, the parent's left alone
        code = 1
        try:
            child_app = fallback.default_app()
            code = 0 if child_app is not parent_app and not parent_app.closed else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert fallback.default_app() is parent_app and not parent_app.closed


# -- with VPP ------------------------------------------------------------------------------------
def test_open_app_with_vpp_is_vcl(vpp: Any) -> None:
    def never(e: BaseException) -> None:
        raise AssertionError(f"fell back: {e}")

    with open_app(vpp.app_socket(), on_fallback=never, name="fallback-srv") as app:
        assert isinstance(app, OpportunisticApp) and isinstance(app.backend, VclApp)
        assert is_vpp(app)
        sock = app.create_server(("127.0.0.1", 24801))
        assert isinstance(sock, pyvcl.VclSocket)
        sock.close()
        with open_app(vpp.app_socket(), fallback=False, name="fallback-cli") as client:
            echo_through(app, "127.0.0.1", 24802, client=client)


def test_module_level_functions_with_vpp(vpp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VCL_CONFIG", "")
    monkeypatch.setenv("VCL_VPP_SAPI_SOCKET", str(vpp.app_socket()))
    monkeypatch.setenv("VCL_APP_SCOPE_LOCAL", "")  # as for C VCL: default scope is global only
    fallback.close_default_app()
    try:
        with VclApp(vpp.app_socket(), name="fallback-peer") as peer:
            srv = peer.create_server(("127.0.0.1", 24803))
            t = threading.Thread(target=lambda: srv.accept()[0].sendall(b"via vpp"), daemon=True)
            t.start()
            with pyvcl.create_connection(("127.0.0.1", 24803), timeout=5) as c:
                assert isinstance(c, pyvcl.VclSocket) and is_vpp(fallback.default_app())
                c.settimeout(5)
                assert c.recv(10) == b"via vpp"
            t.join(5)
            srv.close()
            # A cut-through connect completes when the listening app accepts (as in C VCL).
            listener = pyvcl.create_server(("127.0.0.1", 24804))
            assert isinstance(listener, pyvcl.VclSocket)
            listener.settimeout(10)
            got: list[bytes] = []

            def accept_one() -> None:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(5)
                    got.append(conn.recv(10))

            t = threading.Thread(target=accept_one, daemon=True)
            t.start()
            with peer.create_connection(("127.0.0.1", 24804), timeout=5) as c2:
                c2.sendall(b"back")
                t.join(10)
            assert got == [b"back"]
            listener.close()
    finally:
        fallback.close_default_app()


async def _aio_echo_roundtrip(port: int) -> tuple[object, bytes]:
    """Serve one echo with pyvcl.aio's opportunistic calls (app=None); what served and got."""
    from pyvcl import aio

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    server = await aio.start_server(None, echo, "127.0.0.1", port)
    try:
        reader, writer = await aio.open_connection(None, "127.0.0.1", port)
        writer.write(b"hello")
        await writer.drain()
        got = await reader.readexactly(5)
        writer.close()
        return server, got
    finally:
        server.close()
        await server.wait_closed()


def test_aio_without_vpp_is_asyncio_on_kernel_sockets(no_vpp_env: None) -> None:
    port = socket.create_server(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    server, got = asyncio.run(asyncio.wait_for(_aio_echo_roundtrip(free), 20))
    from pyvcl.aio import OpportunisticServer

    # A server that follows VPP, listening on kernel sockets for now.
    assert got == b"hello" and isinstance(server, OpportunisticServer)
    assert isinstance(server._old[-1], asyncio.Server) and not server.is_vpp


def test_default_selector_takes_kernel_sockets(no_vpp_env: None) -> None:
    import selectors

    from pyvcl.selector import DefaultSelector

    a, b = socket.socketpair()
    with a, b, DefaultSelector() as sel:
        sel.register(a, selectors.EVENT_READ, "a")
        assert sel.select(0) == []
        b.send(b"x")
        assert [k.data for k, _ in sel.select(5)] == ["a"]


def test_aio_with_vpp_uses_the_process_wide_app(vpp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyvcl import aio

    monkeypatch.setenv("VCL_CONFIG", "")
    monkeypatch.setenv("VCL_VPP_SAPI_SOCKET", str(vpp.app_socket()))
    monkeypatch.setenv("VCL_APP_SCOPE_LOCAL", "")
    fallback.close_default_app()

    async def run(peer: VclApp) -> bytes:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(7))
            await writer.drain()
            writer.close()

        server = await aio.start_server(peer, echo, "127.0.0.1", 24805)
        try:
            reader, writer = await aio.open_connection(None, "127.0.0.1", 24805)
            assert isinstance(writer.transport, aio.VclTransport)
            writer.write(b"via vpp")
            await writer.drain()
            got = await reader.readexactly(7)
            writer.close()
            return got
        finally:
            server.close()
            await server.wait_closed()

    try:
        with VclApp(vpp.app_socket(), name="aio-peer") as peer:
            assert asyncio.run(asyncio.wait_for(run(peer), 30)) == b"via vpp"
            assert is_vpp(fallback.default_app())
    finally:
        fallback.close_default_app()


def test_a_machine_whose_vpp_layouts_are_unknown_falls_back_before_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VPP on aarch64 has 128-byte cache lines and a 48-byte mutex in every mq header: with
    x86-64 layouts every later field would be misread.  Attach refuses (ENOSYS) before it
    touches the socket, and opportunistic use falls back to kernel sockets, saying why."""
    import errno

    from pyvcl.app import App
    from pyvcl.errors import VppUnreachable
    from pyvcl.wire import abi

    abi.check_live_layouts("x86_64")
    monkeypatch.setattr(abi, "MACHINE", "aarch64")
    missing = tmp_path / "no-such-socket"  # ENOENT, were the socket tried first
    with pytest.raises(VppUnreachable) as raised:
        App.attach(missing, name="t")
    assert raised.value.errno == errno.ENOSYS and "aarch64" in raised.value.strerror
    reasons: list[VppUnreachable] = []
    with open_app(missing, on_fallback=reasons.append) as app:
        assert not is_vpp(app)
        echo_through(app)
    assert [e.errno for e in reasons] == [errno.ENOSYS]
