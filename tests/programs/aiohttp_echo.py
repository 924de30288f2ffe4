"""An aiohttp server and a client checking it: many concurrent requests and a large echo.

    python aiohttp_echo.py server HOST PORT
    python aiohttp_echo.py client HOST PORT CONCURRENT POST_BYTES

The server answers ``GET /n/{n}`` with ``n`` squared and ``POST /echo`` with the body it
got, and prints ``{"listening": PORT}``.  The client sends CONCURRENT GETs at once (each
checks its own answer), then one POST of POST_BYTES random bytes whose echo must have the
same sha256; it prints one JSON line and exits 1 on any mismatch.  Only asyncio's default
loop and aiohttp.
"""

import asyncio
import hashlib
import json
import os
import sys

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web


async def square(request: web.Request) -> web.Response:
    n = int(request.match_info["n"])
    return web.Response(text=str(n * n))


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


async def serve(host: str, port: int) -> None:
    app = web.Application(client_max_size=64 << 20)
    app.router.add_get("/n/{n}", square)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(json.dumps({"listening": port}), flush=True)
    await asyncio.Event().wait()


async def check(host: str, port: int, concurrent: int, post_bytes: int) -> dict:
    base = f"http://{host}:{port}"
    connector = TCPConnector(limit=concurrent)
    async with ClientSession(connector=connector, timeout=ClientTimeout(total=60)) as session:

        async def get(n: int) -> bool:
            async with session.get(f"{base}/n/{n}") as resp:
                return resp.status == 200 and await resp.text() == str(n * n)

        answers = await asyncio.gather(*(get(n) for n in range(concurrent)))
        body = os.urandom(post_bytes)
        async with session.post(f"{base}/echo", data=body) as resp:
            back = await resp.read()
            post_status = resp.status
    return {
        "gets_ok": sum(answers),
        "post_status": post_status,
        "post_bytes": len(back),
        "post_sha_ok": hashlib.sha256(back).digest() == hashlib.sha256(body).digest(),
    }


if __name__ == "__main__":
    role, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if role == "server":
        asyncio.run(serve(host, port))
    else:
        result = asyncio.run(check(host, port, int(sys.argv[4]), int(sys.argv[5])))
        print(json.dumps(result))
        sys.exit(0 if result["post_sha_ok"] and result["gets_ok"] == int(sys.argv[4]) else 1)
