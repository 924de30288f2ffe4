"""An asyncio echo server and client that choose uvloop, each in one of uvloop's ways.

    python uvloop_echo.py server HOST PORT (run | policy)
    python uvloop_echo.py client HOST PORT (run | new_event_loop)

``run`` is ``uvloop.run(main())``, ``policy`` sets ``uvloop.EventLoopPolicy()`` before
``asyncio.run``, ``new_event_loop`` runs the loop it gives.  The server prints
``{"listening": PORT, "loop": CLASS}`` and echoes each connection until EOF; the client sends
1 MiB in one connection, reads the echo back (no half-close: cut-through passes none) and
prints ``{"echo_ok": true, "loop": CLASS}`` (false when it differs).  Needs uvloop.
"""

import asyncio
import json
import os
import sys

import uvloop

SIZE = 1 << 20


def _loop_name() -> str:
    return type(asyncio.get_running_loop()).__name__


async def serve(host: str, port: int) -> None:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    server = await asyncio.start_server(echo, host, port)
    print(json.dumps({"listening": port, "loop": _loop_name()}), flush=True)
    async with server:
        await server.serve_forever()


async def client(host: str, port: int) -> None:
    data = os.urandom(SIZE)
    r, w = await asyncio.open_connection(host, port)
    w.write(data)
    await w.drain()
    got = await r.readexactly(SIZE)
    w.close()
    print(json.dumps({"echo_ok": got == data, "loop": _loop_name()}), flush=True)


def main() -> None:
    role, host, port, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    coro = serve(host, port) if role == "server" else client(host, port)
    if how == "run":
        uvloop.run(coro)
    elif how == "policy":
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.run(coro)
    else:
        loop = uvloop.new_event_loop()
        try:
            loop.run_until_complete(coro)
        finally:
            loop.close()


if __name__ == "__main__":
    main()
