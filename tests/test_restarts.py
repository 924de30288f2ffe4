"""VPP restarts under opportunistic apps (pyvcl.fallback.OpportunisticApp, docs/restarts.md).

Without VPP: a scripted fake VPP attaches the app, then "dies" (its app socket closes and the
socket file stays, refusing connections, as after a SIGKILL) and "comes back" (a new fake at
the same path).  With VPP: a private VPP is killed and restarted under an asyncio echo server
opened with ``app=None`` while a client loop checks every byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvcl import aio, fallback
from pyvcl.errors import VppDisconnected, VppUnreachable
from pyvcl.fallback import KernelApp, OpportunisticApp, is_vpp, open_app
from pyvcl.vclsocket import VclApp

from .fake_vpp import SILENT, FakeVpp, Send, attach_reply, vpp_like_segments
from .test_fallback import echo_through

FAST = 0.02  # the watcher's interval in these tests


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.01)


class FakeVppHost:
    """A fake VPP at one path that can die and come back; each life answers ``attaches``
    attaches (one app each), then stays silent until it dies."""

    def __init__(self, directory: Path, attaches: int = 1) -> None:
        self.directory, self.attaches = directory, attaches
        self.fds: list[int] = []
        self.fake: FakeVpp | None = None
        self.lives = 0

    @property
    def path(self) -> Path:
        return self.directory / "fake.sock"

    def start(self) -> FakeVppHost:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # as VPP does with a stale socket file at start
        scripts = []
        for _ in range(self.attaches):
            vfd, voff, afd, aoff = vpp_like_segments()
            self.fds += [vfd, afd]
            reply = attach_reply(app_mq=aoff, vpp_ctrl_mq=voff, segment_handle=1 << 32)
            scripts.append([Send(reply, [vfd, afd]), SILENT])
        self.fake = FakeVpp(self.directory, scripts[0], worker_scripts=scripts[1:])
        self.lives += 1
        return self

    def kill(self) -> None:
        """Die as VPP does on SIGKILL: every app socket hangs up, the file stays (refusing)."""
        if self.fake is not None:
            with contextlib.suppress(OSError):  # wakes its accept if an attach was not used
                self.fake.listener.shutdown(socket.SHUT_RDWR)
            self.fake.close()
            self.fake = None

    def close(self) -> None:
        self.kill()
        for fd in self.fds:
            os.close(fd)
        self.fds = []


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FakeVppHost]:
    h = FakeVppHost(tmp_path, attaches=2).start()
    yield h
    h.close()


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "pyvcl.fallback"]


def test_follows_vpp_away_and_back(host: FakeVppHost, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "pyvcl.fallback")
    switches: list[bool] = []
    app = open_app(host.path, use_mq_eventfd=False, watch_interval=FAST, name="follow")
    assert isinstance(app, OpportunisticApp)
    explicit = VclApp(host.path, use_mq_eventfd=False, name="explicit")
    try:
        app.on_switch(lambda a: switches.append(a.is_vpp))
        first = app.backend
        assert isinstance(first, VclApp) and is_vpp(app) and app.reason is None

        host.kill()
        wait_for("the watcher's switch to the kernel", lambda: app.switches == 1)
        assert isinstance(app.backend, KernelApp) and not is_vpp(app) and not app.is_vpp
        assert isinstance(app.reason, VppDisconnected)
        assert messages(caplog) == [
            (
                logging.WARNING,
                f"VPP went away (app socket {host.path}): new connections use kernel sockets "
                "until it is back",
            )
        ]
        echo_through(app)  # new connections and listeners: kernel sockets
        kernel_conn = app.create_server(("127.0.0.1", 0))
        # An explicit VclApp is never resurrected: it stays failed, and says why.
        with pytest.raises(VppDisconnected, match="VPP went away"):
            explicit.create_connection(("127.0.0.1", 9), timeout=1)

        host.start()
        wait_for("attach again", lambda: app.is_vpp)
        second = app.backend
        assert isinstance(second, VclApp) and second is not first and is_vpp(app)
        assert messages(caplog)[1:] == [
            (
                logging.WARNING,
                f"VPP is back (app socket {host.path}): new connections use VPP again",
            )
        ]
        assert switches == [False, True] and app.switches == 2
        # Kernel sockets made meanwhile keep working; the dead attachment, without a
        # socket left, is released.
        assert kernel_conn.fileno() >= 0
        wait_for("release of the dead attachment", lambda: first.closed)
        with pytest.raises(VppDisconnected):
            explicit.create_connection(("127.0.0.1", 9), timeout=1)
        kernel_conn.close()
    finally:
        host.kill()  # (closing an app is quick once VPP is gone)
        explicit.close()
        app.close()
    assert app.closed
    app._thread.join(5)
    assert not app._thread.is_alive()  # closing stops the watcher
    with pytest.raises(OSError):
        app.backend  # noqa: B018


def test_a_listener_of_a_dead_vpp_says_so_from_accept(tmp_path: Path) -> None:
    """accept on a listener whose VPP died raises `VppDisconnected`, not "not listening"."""
    from pyvcl.session.core import State

    h = FakeVppHost(tmp_path).start()
    try:
        with VclApp(h.path, use_mq_eventfd=False) as app:
            listener = app.socket()
            listener._s.is_listener, listener._s.state = True, State.LISTENING  # (as VPP's)
            h.kill()
            wait_for("hang-up visible", lambda: not app.worker.check_vpp(), timeout=5)
            with pytest.raises(VppDisconnected, match="VPP went away"):
                listener.accept()
    finally:
        h.close()


def test_without_fallback_new_connections_fail_until_vpp_is_back(
    host: FakeVppHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "pyvcl.fallback")
    app = open_app(host.path, fallback=False, use_mq_eventfd=False, watch_interval=FAST)
    assert isinstance(app, OpportunisticApp)
    try:
        host.kill()
        wait_for("VPP's death noticed", lambda: not app.is_vpp)
        with pytest.raises(VppUnreachable, match="new connections fail until it is back"):
            app.create_connection(("127.0.0.1", 9), timeout=1)
        with pytest.raises(VppUnreachable):
            app.create_server(("127.0.0.1", 0))
        assert messages(caplog)[0][1].endswith("new connections fail until it is back")
        host.start()
        wait_for("attach again", lambda: app.is_vpp)
        assert isinstance(app.backend, VclApp)
    finally:
        host.kill()
        app.close()


def test_death_noticed_at_the_next_call_before_the_watcher_looks(host: FakeVppHost) -> None:
    """A connection asked for right after VPP died does not go to the dead attachment."""
    app = open_app(host.path, use_mq_eventfd=False, watch_interval=3600)
    assert isinstance(app, OpportunisticApp)
    try:
        host.kill()
        with KernelApp() as other:
            srv = other.create_server(("127.0.0.1", 0))
            wait_for("hang-up visible", lambda: not app.check_vpp(), timeout=5)
            with app.create_connection(srv.getsockname(), timeout=5) as c:
                assert isinstance(c, socket.socket)
    finally:
        app.close()


def test_a_connect_broken_by_vpps_death_is_tried_once_more_on_the_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = FakeVppHost(tmp_path).start()
    app = open_app(h.path, use_mq_eventfd=False, watch_interval=3600)
    assert isinstance(app, OpportunisticApp)
    vpp = app.backend
    assert isinstance(vpp, VclApp)

    def dies_meanwhile(address: Any, timeout: float | None = None) -> Any:
        h.kill()
        wait_for("hang-up visible", lambda: not vpp.worker.check_vpp(), timeout=5)
        raise vpp.worker.dead or AssertionError("not dead")

    monkeypatch.setattr(vpp, "create_connection", dies_meanwhile)
    try:
        with KernelApp() as other:
            srv = other.create_server(("127.0.0.1", 0))
            with app.create_connection(srv.getsockname(), timeout=5) as c:
                assert isinstance(c, socket.socket) and isinstance(app.backend, KernelApp)
    finally:
        h.close()
        app.close()


def test_starting_without_vpp_attaches_when_it_comes(tmp_path: Path) -> None:
    h = FakeVppHost(tmp_path)
    app = open_app(h.path, use_mq_eventfd=False, watch_interval=FAST)
    try:
        assert isinstance(app, OpportunisticApp) and isinstance(app.backend, KernelApp)
        h.start()
        wait_for("attach", lambda: app.is_vpp)
    finally:
        h.close()
        app.close()


def test_follow_vpp_false_is_the_first_choice_for_good(tmp_path: Path) -> None:
    with open_app(tmp_path / "no-vpp", follow_vpp=False) as app:
        assert isinstance(app, KernelApp)


def test_aio_server_listens_again_on_each_switch(
    host: FakeVppHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OpportunisticServer's following, with VPP's listener played by a kernel one (the
    fake cannot listen): VPP's death moves the listener to the kernel on the same port, VPP's
    return back to "VPP"; a connection accepted before a switch keeps working."""
    started_on: list[object] = []

    async def fake_vcl_server(backend: VclApp, cb: Any, host_: Any, port: int, limit: int) -> Any:
        started_on.append(backend)
        return await asyncio.start_server(cb, host_, port, limit=limit)

    monkeypatch.setattr(aio, "_start_vcl_server", fake_vcl_server)
    app = open_app(host.path, use_mq_eventfd=False, watch_interval=FAST)
    assert isinstance(app, OpportunisticApp)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1000):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def roundtrip(port: int, payload: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        got = await reader.readexactly(len(payload))
        writer.close()
        return got

    async def until(what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not ready():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.01)

    async def main() -> None:
        server = await aio.start_server(app, echo, "127.0.0.1", 0)
        assert isinstance(server, aio.OpportunisticServer)
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        first_vpp = app.backend
        assert started_on == [first_vpp]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # before the switch
        host.kill()
        await until("listening on the kernel", lambda: server._listening_on is app._kernel)
        assert server.sockets[0].getsockname()[1] == port  # type: ignore[attr-defined]
        assert await roundtrip(port, b"kernel") == b"kernel"
        writer.write(b"still")
        assert await reader.readexactly(5) == b"still"
        host.start()
        await until("listening through VPP again", lambda: len(started_on) == 2)
        assert started_on[1] is app.backend and started_on[1] is not first_vpp
        assert await roundtrip(port, b"again") == b"again"
        writer.close()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)
        assert server.sockets == () and not server.is_serving()

    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        host.kill()
        app.close()


# -- with VPP: kill -9 and restart under an asyncio echo server opened with app=None ----------


class ClientLoop:
    """Numbered messages, one at a time, each checked byte for byte when it comes back.  A
    connection that breaks raises: its unanswered message counts as failed, never as lost;
    an echo that differs, or a wait that does not end, is what must never happen."""

    def __init__(self, app: OpportunisticApp, port: int) -> None:
        self.app, self.port = app, port
        self.ok: list[tuple[str, bool]] = []  # (phase, through VPP) of each echoed message
        self.failed: list[str] = []  # how each broken message failed
        self.refused = 0
        self.corrupt: list[str] = []
        self.phase = "vpp"
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            seq = 0
            while not self.stop.is_set():
                try:
                    conn = self.app.create_connection(("127.0.0.1", self.port), timeout=2)
                except OSError:
                    self.refused += 1  # (during a switch the two sides may differ)
                    time.sleep(0.02)
                    continue
                with conn:
                    conn.settimeout(5)
                    via_vpp = not isinstance(conn, socket.socket)
                    for _ in range(20):
                        seq += 1
                        msg = f"{seq:08d}:".encode() + os.urandom(40).hex().encode() + b"\n"
                        try:
                            conn.sendall(msg)
                            got = b""
                            while len(got) < len(msg):
                                chunk = conn.recv(len(msg) - len(got))
                                if not chunk:
                                    raise ConnectionResetError("EOF before the whole echo")
                                got += chunk
                        except TimeoutError:
                            self.corrupt.append(f"message {seq}: no echo and no error in 5 s")
                            return
                        except OSError as e:
                            self.failed.append(f"{type(e).__name__}: {e}")
                            break
                        if got != msg:
                            self.corrupt.append(f"message {seq}: sent {msg!r}, got {got!r}")
                        self.ok.append((self.phase, via_vpp))
                        time.sleep(0.005)
        except BaseException as e:  # reported by the test
            self.error = e

    def seen(self, phase: str, via_vpp: bool) -> bool:
        return (phase, via_vpp) in self.ok


def test_asyncio_server_survives_vpp_kill_and_restart(
    vpp_factory: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "pyvcl")
    directory = Path(tempfile.mkdtemp(prefix="pyvcl-rs-"))  # short: socket paths
    vpp = vpp_factory(directory=directory)
    monkeypatch.setenv("VCL_CONFIG", "")
    monkeypatch.setenv("VCL_VPP_SAPI_SOCKET", str(vpp.app_socket()))
    monkeypatch.setenv("VCL_APP_SCOPE_LOCAL", "1")  # cut-through to the client app
    fallback.close_default_app()
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free on the kernel's side too

    through_vpp: list[bool] = []  # per accepted connection: a VclTransport?
    started, stop = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        through_vpp.append(isinstance(writer.transport, aio.VclTransport))
        with contextlib.suppress(OSError):  # (VPP's death breaks its connections)
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve() -> None:
        server = await aio.start_server(None, echo, "127.0.0.1", port)
        box["server"] = server
        # An explicit app's server beside it: it must stop, saying why, and stay stopped.
        explicit = VclApp(vpp.app_socket(), name="rs-explicit", scope_local=True)
        xserver = await aio.start_server(explicit, echo, "127.0.0.1", port + 1)
        forever = asyncio.ensure_future(xserver.serve_forever())
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.02)
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
        box["explicit"] = forever.exception() if forever.done() else "still serving"
        with pytest.raises(VppDisconnected):  # even with VPP back
            explicit.create_connection(("127.0.0.1", port), timeout=1)
        forever.cancel()
        explicit.close()

    def server_thread() -> None:
        try:
            asyncio.run(serve())
        except BaseException as e:
            box["error"] = e
            started.set()

    srv = threading.Thread(target=server_thread, daemon=True)
    srv.start()
    assert started.wait(20) and "error" not in box, box.get("error")
    assert box["server"].is_vpp
    client = open_app(vpp.app_socket(), name="rs-client", scope_local=True, scope_global=False)
    assert isinstance(client, OpportunisticApp) and client.is_vpp
    loop = ClientLoop(client, port)
    loop.thread.start()
    try:
        wait_for("an echo through VPP", lambda: loop.seen("vpp", True), 20)
        held = client.create_connection(("127.0.0.1", port), timeout=5)  # dies with VPP
        held.settimeout(5)

        loop.phase = "down"
        os.kill(vpp.pid, signal.SIGKILL)
        wait_for("VPP's end", lambda: not vpp.is_running())
        killed_at = time.monotonic()
        with pytest.raises(OSError) as broken:  # an error, not a hang nor silent loss
            held.sendall(b"x")
            held.recv(1)
        assert not isinstance(broken.value, TimeoutError)
        held.close()
        wait_for("an echo over the kernel", lambda: loop.seen("down", False), 20)
        down_served = time.monotonic() - killed_at
        assert not box["server"].is_vpp and through_vpp[-1] is False
        kept = client.create_connection(("127.0.0.1", port), timeout=5)  # kernel: survives
        assert isinstance(kept, socket.socket)
        kept.settimeout(5)

        for stale in ("cli.sock", "api.sock", "stats.sock", "app_ns_sockets/default"):
            with contextlib.suppress(FileNotFoundError):
                (directory / stale).unlink()  # so "ready" means the new VPP's sockets
        launched_at = time.monotonic()
        vpp_factory(directory=directory)
        back_at = time.monotonic()
        loop.phase = "back"
        wait_for("an echo through VPP again", lambda: loop.seen("back", True), 20)
        vpp_again = time.monotonic() - back_at
        since_launch = time.monotonic() - launched_at
        assert through_vpp[-1] is True and box["server"].is_vpp
        kept.sendall(b"kernel still")
        assert kept.recv(100) == b"kernel still"
        kept.close()
    finally:
        loop.stop.set()
        loop.thread.join(15)
        stop.set()
        srv.join(15)
        client.close()
        fallback.close_default_app()
        for inst in vpp_factory.instances:
            inst.stop()
        shutil.rmtree(directory, ignore_errors=True)
    assert loop.error is None, loop.error
    assert "error" not in box, box["error"]
    assert isinstance(box["explicit"], VppDisconnected), box["explicit"]
    assert loop.corrupt == [], loop.corrupt  # no byte lost or changed silently
    print(
        f"\nkernel service {down_served:.2f} s after the kill; through VPP again "
        f"{vpp_again:.2f} s after VPP was ready ({since_launch:.2f} s after its launch); "
        f"{len(loop.ok)} echoes, "
        f"{len(loop.failed)} broken messages ({sorted(set(loop.failed))}), "
        f"{loop.refused} refused connects"
    )
    logged = [r.getMessage() for r in caplog.records if r.name == "pyvcl.fallback"]
    assert any(m.startswith("VPP went away") for m in logged), logged
    assert any(m.startswith("VPP is back") for m in logged), logged
