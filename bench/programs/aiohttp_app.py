"""A minimal aiohttp web app and a client hammering it: requests per second.

    python aiohttp_app.py server HOST PORT
    python aiohttp_app.py client HOST PORT SECONDS CONCURRENCY

The server answers ``GET /`` with a short fixed body (no access log) and prints
``{"listening": PORT}`` once its site is up.  The client opens one ``aiohttp.ClientSession``
(a connection pool of CONCURRENCY keep-alive connections) and runs CONCURRENCY tasks, each
sending GETs one after the other for SECONDS and checking status and body; it prints one JSON
line with the requests per second.  One untimed request first, so connecting is not counted.

Only asyncio's default event loop and aiohttp: the same file runs under plain Python, under
LDP and under ``pyvcl run``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiohttp import ClientSession, TCPConnector, web

BODY = b"hello from aiohttp\n"


def emit(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


async def hello(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="text/plain")


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    emit({"listening": port})
    await asyncio.Event().wait()  # until killed


async def load(host: str, port: int, seconds: float, concurrency: int) -> dict[str, object]:
    url = f"http://{host}:{port}/"
    async with ClientSession(connector=TCPConnector(limit=concurrency)) as session:

        async def get() -> None:
            async with session.get(url) as resp:
                body = await resp.read()
            if resp.status != 200 or body != BODY:
                raise RuntimeError(f"GET {url}: status {resp.status}, body {body[:80]!r}")

        await get()
        end = time.perf_counter() + seconds

        async def worker() -> int:
            n = 0
            while time.perf_counter() < end:
                await get()
                n += 1
            return n

        t0 = time.perf_counter()
        counts = await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    total = sum(counts)
    return {
        "req_per_s": round(total / elapsed, 1),
        "requests": total,
        "concurrency": concurrency,
        "seconds": round(elapsed, 4),
    }


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "server":
        asyncio.run(serve(argv[1], int(argv[2])))
        return 0
    if len(argv) == 5 and argv[0] == "client":
        emit(asyncio.run(load(argv[1], int(argv[2]), float(argv[3]), int(argv[4]))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
