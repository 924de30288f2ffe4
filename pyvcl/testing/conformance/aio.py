"""The two-way stream checks over asyncio streams: `Streams` opens and serves asyncio's
``(StreamReader, StreamWriter)`` pairs, over `pyvcl.aio` (`VclStreams`) or over asyncio's own
event loop given a stack's sockets (`SocketStreams`: kernel sockets, or those of ``pyvcl
run``).  Each ``check_aio_*`` takes a `Streams` and runs its own event loop, so it is called
like the socket checks; back-pressure is ``drain()``, half-close is ``write_eof()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeAlias

from .stacks import Address, InterposedStack, Stack, VclStack
from .two_way import (
    EOF_WAIT,
    FIFO_SIZE,
    SEED,
    THREAD_LIMIT,
    chunk_sizes,
    expect_same,
    pattern,
)

Reader: TypeAlias = asyncio.StreamReader
Writer: TypeAlias = asyncio.StreamWriter
Connected = Callable[[Reader, Writer], Awaitable[None]]


class Streams(Protocol):
    name: str

    async def start_server(self, connected: Connected) -> tuple[Any, Address]:
        """A serving server (``close``, ``wait_closed``) calling ``connected`` for each
        connection, and the address clients connect to."""

    async def open_connection(self, address: Address) -> tuple[Reader, Writer]: ...


class VclStreams:
    """`pyvcl.aio`'s streams over a `VclStack`'s two apps."""

    def __init__(self, stack: VclStack) -> None:
        self.stack, self.name = stack, f"{stack.name}-aio"

    async def start_server(self, connected: Connected) -> tuple[Any, Address]:
        from ... import aio

        host, port = self.stack.unused_address()[:2]
        server = await aio.start_server(self.stack.server_app, connected, host, port)
        return server, (host, port)

    async def open_connection(self, address: Address) -> tuple[Reader, Writer]:
        from ... import aio

        return await aio.open_connection(self.stack.client_app, address[0], address[1])


class SocketStreams:
    """asyncio's own streams and event loop over the sockets of a stack whose sockets the
    standard selectors can wait on (`KernelStack`, `InterposedStack`)."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.name = stack, f"{stack.name}-asyncio"

    async def start_server(self, connected: Connected) -> tuple[Any, Address]:
        listener, address = self.stack.server()
        return await asyncio.start_server(connected, sock=listener), address

    async def open_connection(self, address: Address) -> tuple[Reader, Writer]:
        # Non-blocking: a cut-through connect completes only once the server (on this very
        # loop) accepted it.
        sock = self.stack.client_socket()
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)


def streams_over(stack: Stack) -> Streams:
    """The asyncio streams that go with ``stack``: pyvcl.aio's for a `VclStack`, asyncio's
    own over the sockets of the others."""
    if isinstance(stack, VclStack) and not isinstance(stack, InterposedStack):
        return VclStreams(stack)
    return SocketStreams(stack)


@asynccontextmanager
async def stream_pair(streams: Streams) -> AsyncIterator[tuple[Reader, Writer, Reader, Writer]]:
    """(client reader, client writer, server reader, server writer) of one connection; the
    writers and the server are closed afterwards."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[tuple[Reader, Writer]] = loop.create_future()
    finished = asyncio.Event()

    async def connected(reader: Reader, writer: Writer) -> None:
        if not accepted.done():
            accepted.set_result((reader, writer))
        await finished.wait()  # keeps the connection's streams alive while the check runs

    server, address = await streams.start_server(connected)
    writers: list[Writer] = []
    try:
        cr, cw = await asyncio.wait_for(streams.open_connection(address), 10)
        writers.append(cw)
        sr, sw = await asyncio.wait_for(accepted, 10)
        writers.append(sw)
        yield cr, cw, sr, sw
    finally:
        finished.set()
        for w in writers:
            w.close()
        server.close()
        # Bounded, and quiet: a cleanup that hangs or fails must not hide the check's error
        # (a check may have closed a writer already, or its peer reset it).
        waits = [*(w.wait_closed() for w in writers), server.wait_closed()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 10)


def _run(check: Callable[[Streams], Coroutine[Any, Any, None]], streams: Streams) -> None:
    asyncio.run(asyncio.wait_for(check(streams), THREAD_LIMIT))


async def _write_in_chunks(writer: Writer, data: bytes, sizes: list[int]) -> None:
    view, offset, i = memoryview(data), 0, 0
    while offset < len(data):
        size = sizes[i % len(sizes)]
        writer.write(view[offset : offset + size])
        await writer.drain()
        offset, i = offset + size, i + 1


async def _read_in_chunks(reader: Reader, total: int, sizes: list[int], what: str) -> bytes:
    buf, i = bytearray(), 0
    while len(buf) < total:
        got = await reader.read(min(sizes[i % len(sizes)], total - len(buf)))
        if not got:
            raise AssertionError(f"{what}: EOF after {len(buf)} of {total} bytes")
        buf += got
        i += 1
    return bytes(buf)


async def _read_to_eof(reader: Reader, what: str) -> bytes:
    buf = bytearray()
    try:
        while chunk := await asyncio.wait_for(reader.read(1 << 16), EOF_WAIT):
            buf += chunk
    except TimeoutError:
        raise AssertionError(
            f"{what}: no EOF within {EOF_WAIT:g} s ({len(buf)} bytes came before)"
        ) from None
    return bytes(buf)


async def _duplex(streams: Streams) -> None:
    async with stream_pair(streams) as (cr, cw, sr, sw):
        directions = [("connecting -> accepting", cw, sr), ("accepting -> connecting", sw, cr)]
        sent: list[bytes] = []
        jobs: list[Coroutine[Any, Any, bytes | None]] = []
        for n, (what, writer, reader) in enumerate(directions):
            sizes = chunk_sizes(SEED + 50 + 10 * n)
            data = pattern(SEED + 51 + 10 * n, sum(sizes))
            sent.append(data)
            jobs.append(_write_in_chunks(writer, data, sizes))
            jobs.append(_read_in_chunks(reader, len(data), chunk_sizes(SEED + 52 + 10 * n), what))
        results = await asyncio.gather(*jobs)
        for (what, _, _), data, got in zip(directions, sent, results[1::2], strict=True):
            expect_same(got or b"", data, what)


def check_aio_duplex_random_chunks(streams: Streams) -> None:
    """Both sides write (``drain`` after each chunk) and read at once, with seeded random
    sizes; each direction arrives intact."""
    _run(_duplex, streams)


async def _speak_and_answer(
    speaker: tuple[Reader, Writer], answerer: tuple[Reader, Writer], roles: str
) -> None:
    request, reply = pattern(SEED + 60, FIFO_SIZE + 4321), pattern(SEED + 61, 777)
    speaker[1].write(request)
    got, _ = await asyncio.gather(answerer[0].readexactly(len(request)), speaker[1].drain())
    expect_same(got, request, f"{roles}: the request")
    answerer[1].write(reply)
    await answerer[1].drain()
    expect_same(await speaker[0].readexactly(len(reply)), reply, f"{roles}: the reply")
    speaker[1].close()
    await speaker[1].wait_closed()
    assert await _read_to_eof(answerer[0], f"{roles}: after the close") == b"", roles


async def _flipped(streams: Streams) -> None:
    async with stream_pair(streams) as (cr, cw, sr, sw):
        await _speak_and_answer((sr, sw), (cr, cw), "the accepting side speaks")
    async with stream_pair(streams) as (cr, cw, sr, sw):
        await _speak_and_answer((cr, cw), (sr, sw), "the connecting side speaks")


def check_aio_flipped_roles(streams: Streams) -> None:
    """The server's side speaks first and closes; the client answers and sees EOF (and the
    other way round)."""
    _run(_flipped, streams)


async def _half_close(
    closer: tuple[Reader, Writer], replier: tuple[Reader, Writer], roles: str
) -> None:
    request, reply = pattern(SEED + 70, 100_000), pattern(SEED + 71, FIFO_SIZE + 999)
    assert closer[1].can_write_eof(), f"{roles}: can_write_eof() is False"
    closer[1].write(request)
    closer[1].write_eof()
    await closer[1].drain()
    got = await _read_to_eof(replier[0], f"{roles}: the half-close")
    expect_same(got, request, f"{roles}: the request")
    assert replier[0].at_eof(), f"{roles}: EOF read but at_eof() is False"
    replier[1].write(reply)
    replier[1].close()
    answer, _ = await asyncio.gather(
        _read_to_eof(closer[0], f"{roles}: the reply"), replier[1].wait_closed()
    )
    expect_same(answer, reply, f"{roles}: the reply")


async def _half_closes(streams: Streams) -> None:
    async with stream_pair(streams) as (cr, cw, sr, sw):
        await _half_close((cr, cw), (sr, sw), "the connecting side writes EOF")
    async with stream_pair(streams) as (cr, cw, sr, sw):
        await _half_close((sr, sw), (cr, cw), "the accepting side writes EOF")


def check_aio_half_close_then_reply(streams: Streams) -> None:
    """``write_eof()`` ends one direction: the peer reads the data and EOF, then replies
    over the other, from either side."""
    _run(_half_closes, streams)


CLOG_PIECE = 1 << 18
CLOG_LIMIT = 64 << 20  # no stack buffers this much: more accepted means no back-pressure
CLOG_QUIET = 0.5  # seconds a drain() must stay pending for the stream to count as clogged


async def _clog(writer: Writer, reader: Reader, what: str, seed: int) -> None:
    data = pattern(seed, CLOG_LIMIT + CLOG_PIECE)
    view = memoryview(data)
    written = 0
    while True:
        assert written < CLOG_LIMIT, f"{what}: {written} bytes drained with nobody reading"
        writer.write(view[written : written + CLOG_PIECE])
        written += CLOG_PIECE
        drain = asyncio.ensure_future(writer.drain())
        done, _ = await asyncio.wait({drain}, timeout=CLOG_QUIET)
        if not done:
            break
        drain.result()
    assert writer.transport.get_write_buffer_size() > 0, f"{what}: drain() waits on nothing"
    got, _ = await asyncio.gather(reader.readexactly(written), drain)
    expect_same(got, data[:written], f"{what}, after the clog")


async def _clogged(streams: Streams) -> None:
    async with stream_pair(streams) as (_, cw, sr, _sw):
        await _clog(cw, sr, "connecting -> accepting", SEED + 80)
    async with stream_pair(streams) as (cr, _cw, _sr, sw):
        await _clog(sw, cr, "accepting -> connecting", SEED + 81)


def check_aio_clogged_stream(streams: Streams) -> None:
    """Back-pressure, each way: with nobody reading, ``drain()`` stays pending; once the
    reader reads, it returns and every byte arrives intact."""
    _run(_clogged, streams)


ASYNC_CHECKS: list[Callable[[Streams], None]] = [
    check_aio_duplex_random_chunks,
    check_aio_flipped_roles,
    check_aio_half_close_then_reply,
    check_aio_clogged_stream,
]
