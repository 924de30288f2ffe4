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
import socket
import weakref
from collections.abc import Awaitable, Callable

from .errors import LocalError, VclError
from .sockets import Address, VclApp, VclSocket, _parse_address

__all__ = ["VclServer", "VclTransport", "open_connection", "start_server"]

_LIMIT = 2**16  # asyncio's default StreamReader limit
_READ_SIZE = 256 * 1024

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
        r, wr = w.readiness(sock._s, not write, write)
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
        self._driver = _Driver.get(sock._app)
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
        self._driver = _Driver.get(listener._app)
        self._driver.acquire()
        self._active = 0
        self._closed = False
        self._waiters: list[asyncio.Future[None]] = []
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
            except (OSError, VclError):
                if self._closed:
                    return
                raise
            VclTransport(self._loop, conn, self._factory(), self)

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
        try:
            await self._loop.create_future()
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


def _opportunistic(app: VclApp | None) -> VclApp | None:
    """``app``, or for None the process-wide app (`pyvcl.fallback.default_app`: attached from
    $VCL_CONFIG and the VCL_* variables), or None when that fell back to kernel sockets."""
    if app is not None:
        return app
    from . import fallback

    default = fallback.default_app()
    return default if isinstance(default, VclApp) else None


async def open_connection(
    app: VclApp | None, host: str, port: int, *, limit: int = _LIMIT
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect over ``app``: asyncio's (StreamReader, StreamWriter) pair.  ``host`` is a
    literal address.  Raises ConnectionRefusedError etc. as asyncio.open_connection does.

    ``app=None``: over the process-wide app when VPP is reachable, else plain
    `asyncio.open_connection` on kernel sockets -- the same code runs with or without VPP."""
    vcl_app = _opportunistic(app)
    if vcl_app is None:
        return await asyncio.open_connection(host, port, limit=limit)
    app = vcl_app
    loop = asyncio.get_running_loop()
    sock = await _connect(app, (host, port))
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = VclTransport(loop, sock, protocol)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


async def _connect(app: VclApp, address: Address) -> VclSocket:
    sock = app.socket(_parse_address(address)[2])
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


async def start_server(
    app: VclApp | None,
    client_connected_cb: Callable[
        [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None
    ],
    host: str | None = None,
    port: int = 0,
    *,
    limit: int = _LIMIT,
) -> VclServer | asyncio.Server:
    """Listen over ``app``; ``client_connected_cb(reader, writer)`` (a function or a
    coroutine function) runs for each connection, as with `asyncio.start_server`.

    ``app=None``: over the process-wide app when VPP is reachable, else plain
    `asyncio.start_server` on kernel sockets (an `asyncio.Server`, used the same way)."""
    vcl_app = _opportunistic(app)
    if vcl_app is None:
        return await asyncio.start_server(client_connected_cb, host, port, limit=limit)
    app = vcl_app
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
