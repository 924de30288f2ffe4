"""pyvcl.aio against a real VPP: asyncio streams over VPP sessions."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import pytest

from pyvcl import aio
from pyvcl.testing.conformance import VclStack
from pyvcl.testing.plugin import vcl_stack_fixture

stack = vcl_stack_fixture(28000, 29000)


def _run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_echo_server_and_clients(stack: VclStack) -> None:
    host, port = stack.unused_address()
    payload = os.urandom(1 << 20)

    async def client(n: int) -> bytes:
        reader, writer = await aio.open_connection(stack.client_app, host, port)
        assert writer.get_extra_info("peername")[1] == port
        data = payload[: (n + 1) * 65536] if n else payload

        async def send() -> None:
            writer.write(data)
            await writer.drain()

        sender = asyncio.create_task(send())
        got = await reader.readexactly(len(data))
        await sender
        writer.close()
        await writer.wait_closed()
        return got

    async def main() -> list[bytes]:
        async with await aio.start_server(stack.server_app, _echo, host, port) as server:
            assert server.is_serving() and server.sockets
            return await asyncio.gather(*(client(n) for n in range(4)))

    results = _run(main())
    assert hashlib.sha256(results[0]).digest() == hashlib.sha256(payload).digest()
    for n, got in enumerate(results[1:], 1):
        assert got == payload[: (n + 1) * 65536]


def test_lines_and_eof(stack: VclStack) -> None:
    host, port = stack.unused_address()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        writer.write(line.upper() + b"bye\n")
        await writer.drain()
        writer.close()  # the client reads the rest, then EOF

    async def main() -> tuple[bytes, bytes, bytes]:
        server = await aio.start_server(stack.server_app, serve, host, port)
        reader, writer = await aio.open_connection(stack.client_app, host, port)
        writer.write(b"hello vpp\n")
        await writer.drain()
        first = await reader.readline()
        rest = await reader.read()  # until EOF
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return first, rest, await reader.read()

    assert _run(main()) == (b"HELLO VPP\n", b"bye\n", b"")


def test_open_connection_refused(stack: VclStack) -> None:
    host, port = stack.unused_address()

    async def main() -> None:
        with pytest.raises(ConnectionRefusedError):
            await aio.open_connection(stack.client_app, host, port)

    _run(main(), 20)
