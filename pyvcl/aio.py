"""asyncio over VPP sessions: `open_connection` and `start_server`, as in `asyncio` streams.

    reader, writer = await pyvcl.aio.open_connection(app, "127.0.0.1", 8080)
    writer.write(b"hello")
    await writer.drain()
    print(await reader.read(100))
    writer.close()
    await writer.wait_closed()

The reader and writer are asyncio's own `asyncio.StreamReader` and `asyncio.StreamWriter`
(``read``, ``readexactly``, ``readline``, ``readuntil``, ``write``, ``drain``, ``close``,
``wait_closed``, ``write_eof``, ``get_extra_info``...), driven by a transport of ours,
`VclTransport`, over a non-blocking `VclSocket`.

How it waits: one `_Driver` per (event loop, `VclApp`) watches the app's message-queue
eventfd and the app socket with ``loop.add_reader``.  When VPP signals, the driver resets
the eventfd, handles the queued events (`SessionWorker.pump_signalled`) and re-checks the
readiness of every socket a coroutine waits on (`SessionWorker.readiness`, which re-arms
VPP's wake-ups: docs/async.md).  Everything runs on the loop's thread.

Limits: the app must use eventfd signalling (the default); while asyncio uses a `VclApp`, do
not make blocking calls on that app from other threads (such a thread becomes the mq's
poller and consumes the eventfd's wake-ups; use ``loop.run_in_executor`` with care).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .errors import LocalError, VclError, VppDisconnected
from .vclsocket import Address, VclApp, VclSocket, parse_address

if TYPE_CHECKING:
    from .fallback import OpportunisticApp

__all__ = ["OpportunisticServer", "VclServer", "VclTransport", "open_connection", "start_server"]

log = logging.getLogger(__name__)
_LIMIT = 2**16  # asyncio's default StreamReader limit
_READ_SIZE = 256 * 1024
_RELISTEN_DELAY = 0.5  # before listening again after a failed try (VPP still starting, say)

_drivers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Driver]] = (
    weakref.WeakKeyDictionary()
)


class _Driver:
    """Wakes the coroutines of one loop waiting on sockets of one app."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app: VclApp) -> None:
        mq = app.app.app_mq
        if app.closed or mq is None:
            raise LocalError("the VclApp is closed", errno.EBADF)
        if mq.eventfd is None:
            raise LocalError(
                "this VclApp signals its message queue with a mutex and condvar "
                "(use_mq_eventfd=False): asyncio needs the eventfd; attach with "
                "use_mq_eventfd=True (the default)"
            )
        self.loop, self.app = loop, app
        self.users = 0
        self.waiters: list[tuple[VclSocket, bool, asyncio.Future[None]]] = []
        self.evfd, self.sapi_fd = mq.fileno(), app.app.sapi.fileno()
        self._scheduled = False
        loop.add_reader(self.evfd, self._signalled)
        loop.add_reader(self.sapi_fd, self._sapi_readable)
        self._watching = True

    @classmethod
    def get(cls, app: VclApp) -> _Driver:
        loop = asyncio.get_running_loop()
        per_loop = _drivers.setdefault(loop, {})
        d = per_loop.get(id(app))
        if d is None or d.app is not app or not d._watching:
            d = per_loop[id(app)] = cls(loop, app)
        return d

    def acquire(self) -> None:
        self.users += 1

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0 and not self.waiters:
            self._stop_watching()
            per_loop = _drivers.get(self.loop)
            if per_loop is not None and per_loop.get(id(self.app)) is self:
                del per_loop[id(self.app)]

    def _stop_watching(self) -> None:
        if self._watching:
            self._watching = False
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.evfd)
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.sapi_fd)

    async def wait(self, sock: VclSocket, write: bool) -> None:
        """Until ``sock`` is readable (``write`` False) or writable; returns at once if
        it is, or if the app or VPP is gone (the socket call then raises)."""
        while not self._ready(sock, write):
            fut = self.loop.create_future()
            entry = (sock, write, fut)
            self.waiters.append(entry)
            try:
                await fut
            finally:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(entry)

    def _ready(self, sock: VclSocket, write: bool) -> bool:
        if sock.closed or self.app.closed or not self._watching:
            return True
        w = self.app.worker
        if w.dead is not None:
            return True
        r, wr = sock.readiness(not write, write)
        return wr if write else r

    def _signalled(self) -> None:
        """The eventfd fired (or events may still be pending): pump, then wake waiters."""
        self._scheduled = False
        if self.app.closed:
            self._stop_watching()
        else:
            w = self.app.worker
            try:
                w.pump_signalled()
            except VclError:
                self._stop_watching()  # VPP gone or app closed: every waiter is "ready"
            else:
                mq = self.app.app.app_mq
                if mq is not None and mq.size_now() and not self._scheduled:
                    # Events that came during the drain raised no signal (the queue was
                    # not empty): handle them on the next loop iteration.
                    self._scheduled = True
                    self.loop.call_soon(self._signalled)
        for sock, write, fut in list(self.waiters):
            if not fut.done() and self._ready(sock, write):
                fut.set_result(None)

    def _sapi_readable(self) -> None:
        if self.app.closed or not self.app.worker.check_vpp():
            self._stop_watching()
            self._signalled()


class VclTransport(asyncio.Transport):
    """An asyncio transport over a connected non-blocking `VclSocket`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: VclSocket,
        protocol: asyncio.Protocol,
        server: VclServer | None = None,
    ) -> None:
        extra: dict[str, object] = {"socket": sock, "sockname": sock.getsockname()}
        with contextlib.suppress(OSError):
            extra["peername"] = sock.getpeername()
        super().__init__(extra)
        sock.setblocking(False)
        self._loop, self._sock, self._protocol, self._server = loop, sock, protocol, server
        self._driver = _Driver.get(sock.app)
        self._driver.acquire()
        self._buffer = bytearray()
        self._high, self._low = 64 * 1024, 16 * 1024
        self._writing_paused = False
        self._closing = False  # close() called: flush, then close
        self._eof_wanted = False
        self._eof_sent = False
        self._lost = False
        self._reading = asyncio.Event()
        self._reading.set()
        self._write_ready = asyncio.Event()
        if server is not None:
            server._attach()
        loop.call_soon(protocol.connection_made, self)
        self._tasks = [
            loop.create_task(self._read_loop()),
            loop.create_task(self._write_loop()),
        ]

    # -- reading ----------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        try:
            while True:
                await self._reading.wait()
                await self._driver.wait(self._sock, write=False)
                if not self._reading.is_set():
                    continue
                try:
                    data = self._sock.recv(_READ_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    if not self._protocol.eof_received():
                        self.close()
                    return
                self._protocol.data_received(data)
        except asyncio.CancelledError:
            raise
        except (OSError, VclError) as e:
            self._force_close(e)

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def is_reading(self) -> bool:
        return self._reading.is_set() and not self._lost

    # -- writing ----------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_wanted:
            raise RuntimeError("cannot write after write_eof()")
        if self._closing or self._lost or not data:
            return
        self._buffer += data
        self._write_ready.set()
        if not self._writing_paused and len(self._buffer) > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    async def _write_loop(self) -> None:
        try:
            while True:
                while not self._buffer:
                    if self._eof_wanted and not self._eof_sent:
                        self._eof_sent = True
                        self._sock.shutdown(socket.SHUT_WR)
                    if self._closing:
                        self._finish(None)
                        return
                    self._write_ready.clear()
                    await self._write_ready.wait()
                await self._driver.wait(self._sock, write=True)
                try:
                    n = self._sock.send(self._buffer)
                except BlockingIOError:
                    continue
                del self._buffer[:n]
                if self._writing_paused and len(self._buffer) <= self._low:
                    self._writing_paused = False
                    self._protocol.resume_writing()
        except asyncio.CancelledError:
            raise
        except (OSError, VclError) as e:
            self._force_close(e)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof_wanted:
            return
        self._eof_wanted = True
        self._write_ready.set()

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low

    # -- closing ----------------------------------------------------------------------------
    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Close once the buffered data is sent; then ``connection_lost(None)``."""
        if self._closing or self._lost:
            return
        self._closing = True
        self._reading.clear()
        self._write_ready.set()

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._buffer.clear()
        self._finish(exc)

    def _finish(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                t.cancel()
        self._sock.close()
        self._driver.release()
        if self._server is not None:
            self._server._detach()
            self._server = None
        self._loop.call_soon(self._protocol.connection_lost, exc)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return f"<pyvcl.aio.VclTransport {state} {self._sock!r}>"


class VclServer:
    """What `start_server` returns: like `asyncio.Server` (close, wait_closed,
    serve_forever, sockets, async with)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: VclSocket,
        factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self._loop, self._listener, self._factory = loop, listener, factory
        self._driver = _Driver.get(listener.app)
        self._driver.acquire()
        self._active = 0
        self._closed = False
        self.failure: BaseException | None = None  # what broke the listener (VPP's death)
        self._waiters: list[asyncio.Future[None]] = []
        self._forever: list[asyncio.Future[None]] = []  # serve_forever's, failed by `failure`
        self._task: asyncio.Task[None] | None = loop.create_task(self._accept_loop())

    @property
    def sockets(self) -> tuple[VclSocket, ...]:
        return () if self._closed else (self._listener,)

    def is_serving(self) -> bool:
        return not self._closed

    async def _accept_loop(self) -> None:
        while True:
            await self._driver.wait(self._listener, write=False)
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                continue
            except (OSError, VclError) as e:
                if not self._closed:
                    self._fail(e)
                return
            VclTransport(self._loop, conn, self._factory(), self)

    def _fail(self, e: BaseException) -> None:
        """The listener broke (VPP went away: `VppDisconnected`): stop serving, and make
        `serve_forever` raise ``e``.  Accepted connections fail on their own."""
        self.failure = e
        self._task = None  # (this is that task, ending)
        self.close()
        for fut in self._forever:
            if not fut.done():
                fut.set_exception(e)

    def close(self) -> None:
        """Stop listening; connections already accepted stay open."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._listener.close()
        self._driver.release()
        self._wake()

    async def wait_closed(self) -> None:
        """Until closed and every connection it accepted is closed."""
        if self._closed and self._active == 0:
            return
        fut = self._loop.create_future()
        self._waiters.append(fut)
        await fut

    async def serve_forever(self) -> None:
        """Until cancelled (then close), or until the listener breaks: raises `failure`."""
        if self.failure is not None:
            raise self.failure
        fut = self._loop.create_future()
        self._forever.append(fut)
        try:
            await fut
        finally:
            self.close()
            await self.wait_closed()

    def _attach(self) -> None:
        self._active += 1

    def _detach(self) -> None:
        self._active -= 1
        self._wake()

    def _wake(self) -> None:
        if self._closed and self._active == 0:
            for fut in self._waiters:
                if not fut.done():
                    fut.set_result(None)
            self._waiters.clear()

    async def __aenter__(self) -> VclServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


def _following(app: VclApp | OpportunisticApp | None) -> VclApp | OpportunisticApp:
    """``app``, or for None the process-wide app (`pyvcl.fallback.default_app`: attached from
    $VCL_CONFIG and the VCL_* variables, following VPP's restarts)."""
    if app is not None:
        return app
    from . import fallback

    return fallback.default_app()


async def open_connection(
    app: VclApp | OpportunisticApp | None, host: str, port: int, *, limit: int = _LIMIT
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect over ``app``: asyncio's (StreamReader, StreamWriter) pair.  ``host`` is a
    literal address.  Raises ConnectionRefusedError etc. as asyncio.open_connection does.

    ``app=None`` (or an `OpportunisticApp`): over the process-wide app when VPP is there, else
    plain `asyncio.open_connection` on kernel sockets -- the same code runs with or without
    VPP.  A connect that VPP's death breaks is tried once more, on what the app uses then."""
    chosen = _following(app)
    if isinstance(chosen, VclApp):
        return await _open_vcl_connection(chosen, host, port, limit)
    backend = chosen.backend
    if not isinstance(backend, VclApp):
        return await asyncio.open_connection(host, port, limit=limit)
    try:
        return await _open_vcl_connection(backend, host, port, limit)
    except VppDisconnected:
        if chosen.backend is backend:
            raise
        return await open_connection(chosen, host, port, limit=limit)


async def _open_vcl_connection(
    app: VclApp, host: str, port: int, limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    sock = await _connect(app, (host, port))
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = VclTransport(loop, sock, protocol)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


async def _connect(app: VclApp, address: Address) -> VclSocket:
    sock = app.socket(parse_address(address)[2])
    try:
        sock.setblocking(False)
        driver = _Driver.get(app)
        driver.acquire()
        try:
            try:
                sock.connect(address)
            except BlockingIOError:
                await driver.wait(sock, write=True)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:  # OSError picks the subclass: ConnectionRefusedError...
                    raise OSError(err, f"Connect call failed {address}") from None
        finally:
            driver.release()
    except BaseException:
        sock.close()
        raise
    return sock


ConnectedCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]


async def start_server(
    app: VclApp | OpportunisticApp | None,
    client_connected_cb: ConnectedCallback,
    host: str | None = None,
    port: int = 0,
    *,
    limit: int = _LIMIT,
) -> VclServer | OpportunisticServer:
    """Listen over ``app``; ``client_connected_cb(reader, writer)`` (a function or a
    coroutine function) runs for each connection, as with `asyncio.start_server`.

    ``app=None`` (or an `OpportunisticApp`): an `OpportunisticServer` listening over the
    process-wide app when VPP is there, else as `asyncio.start_server` on kernel sockets,
    and again over whichever the app switches to when VPP goes or comes back."""
    chosen = _following(app)
    if isinstance(chosen, VclApp):
        return await _start_vcl_server(chosen, client_connected_cb, host, port, limit)
    server = OpportunisticServer(chosen, client_connected_cb, host, port, limit)
    try:
        await server._listen()
    except BaseException:
        server.close()  # (stops following the app)
        raise
    return server


async def _start_vcl_server(
    app: VclApp, client_connected_cb: ConnectedCallback, host: str | None, port: int, limit: int
) -> VclServer:
    loop = asyncio.get_running_loop()
    listener = app.create_server((host or "0.0.0.0", port))  # waits briefly for BOUND
    listener.setblocking(False)
    # That wait consumed the eventfd's signal: let the other waiters re-check.
    driver = _drivers.get(loop, {}).get(id(app))
    if driver is not None:
        loop.call_soon(driver._signalled)

    def factory() -> asyncio.Protocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return VclServer(loop, listener, factory)


class OpportunisticServer(asyncio.AbstractServer):
    """What `start_server` returns for an `OpportunisticApp` (``app=None``): a server that
    follows VPP (docs/restarts.md).  It listens through the app's backend -- a `VclServer`
    over VPP, an `asyncio.Server` over kernel sockets -- and, each time the app switches,
    listens through the new backend first and then closes the old listener, on the same
    port (the first one's, when asked for port 0).  Accepted connections stay on the stack
    they came through.  `sockets` are the current listener's."""

    def __init__(
        self,
        app: OpportunisticApp,
        client_connected_cb: ConnectedCallback,
        host: str | None,
        port: int,
        limit: int,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._app, self._cb, self._host, self._port, self._limit = (
            app, client_connected_cb, host, port, limit,
        )  # fmt: skip
        self._server: VclServer | asyncio.Server | None = None
        self._listening_on: object = None  # the backend `_server` listens through
        self._old: list[VclServer | asyncio.Server] = []  # for wait_closed
        self._closed = False
        self._follower: asyncio.Task[None] | None = None
        self._closing_waiters: list[asyncio.Future[None]] = []
        self._stop_following = app.on_switch(self._switched)

    # -- following the app --------------------------------------------------------------------
    async def _listen(self) -> None:
        """Listen through the app's backend now; then close the previous listener."""
        backend = self._app.backend  # (raises VppUnreachable while VPP is away, no fallback)
        old = self._listening_on
        if isinstance(old, VclApp) and old.worker.dead is not None:
            self._close_listener()  # VPP's death broke it: nothing to keep till the new one
        server: VclServer | asyncio.Server
        if isinstance(backend, VclApp):
            server = await _start_vcl_server(backend, self._cb, self._host, self._port,
                                             self._limit)  # fmt: skip
        else:
            server = await asyncio.start_server(self._cb, self._host, self._port,
                                                limit=self._limit)  # fmt: skip
        if self._closed:  # closed while we waited
            server.close()
            self._old.append(server)
            return
        if self._port == 0 and server.sockets:
            self._port = server.sockets[0].getsockname()[1]
        self._close_listener()
        self._server, self._listening_on = server, backend

    def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            self._old.append(self._server)
            self._server, self._listening_on = None, None

    def _switched(self, app: OpportunisticApp) -> None:
        """The app switched (called in the thread that noticed it): follow on the loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to follow
            self._loop.call_soon_threadsafe(self._follow)

    def _follow(self) -> None:
        if self._closed or (self._follower is not None and not self._follower.done()):
            return  # (a running follower re-checks the backend before it ends)
        self._follower = self._loop.create_task(self._follow_app())

    async def _follow_app(self) -> None:
        while not self._closed:
            try:
                backend: object = self._app.backend
            except VclError:  # VPP away without fallback: nothing to listen through
                backend = None
            if backend is self._listening_on:
                return
            if backend is None:
                self._close_listener()
                return
            try:
                await self._listen()
            except (OSError, VclError) as e:
                if self._closed:
                    return
                log.warning("pyvcl.aio: listening on port %d again failed (%s); retrying",
                            self._port, e)  # fmt: skip
                self._loop.call_later(_RELISTEN_DELAY, self._follow)
                return
            log.info("pyvcl.aio: listening on port %d through %s", self._port,
                     "VPP" if isinstance(backend, VclApp) else "kernel sockets")  # fmt: skip

    # -- asyncio.AbstractServer --------------------------------------------------------------
    @property
    def sockets(self) -> tuple[object, ...]:
        if self._closed or self._server is None:
            return ()
        return tuple(self._server.sockets)

    @property
    def is_vpp(self) -> bool:
        """Whether the current listener is VPP's."""
        return isinstance(self._server, VclServer) and not self._closed

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return not self._closed

    async def start_serving(self) -> None:
        """(It serves from the start.)"""

    def close(self) -> None:
        """Stop listening (and following VPP); connections already accepted stay open."""
        if self._closed:
            return
        self._closed = True
        self._stop_following()
        if self._follower is not None:
            self._follower.cancel()
        self._close_listener()
        for fut in self._closing_waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_closed(self) -> None:
        """Until closed and every listener's connections are closed."""
        if not self._closed:
            fut = self._loop.create_future()
            self._closing_waiters.append(fut)
            await fut
        for server in list(self._old):
            await server.wait_closed()

    async def serve_forever(self) -> None:
        try:
            await self._loop.create_future()
        finally:
            self.close()
            await self.wait_closed()
