"""Connections blocked in three ways when the network stack under them dies.

    python vpp_dies.py HOST PORT

Connects three times to an echo server at HOST PORT and blocks, each in a thread of its own:
in ``recv`` (a blocking socket), in ``selectors.DefaultSelector().select()`` then ``recv``,
and in asyncio's ``StreamReader.read`` (``asyncio.run`` in that thread).  Prints
``{"blocked": [...]}`` once all three are waiting, then, as each wakes, one JSON line
``{"way": W, "recv": OUTCOME, "send": OUTCOME, "detail": [...]}``: the wake-up's outcome
("eof", or the name of the exception's nearest built-in class, which is what an ``except``
clause of a program matches) and that of a ``sendall`` tried after it; ``detail`` has the
exceptions' reprs.  Exits when all three
woke (or after 60 s).  Standard library only.
"""

import asyncio
import json
import selectors
import socket
import sys
import threading

lock = threading.Lock()
ready = threading.Barrier(4)


details: dict = {}


def builtin_name(exc: BaseException) -> str:
    details.setdefault(threading.get_ident(), []).append(repr(exc))
    return next(c.__name__ for c in type(exc).__mro__ if c.__module__ == "builtins")


def report(way: str, recv: str, send: str) -> None:
    with lock:
        detail = details.get(threading.get_ident(), [])
        print(json.dumps({"way": way, "recv": recv, "send": send, "detail": detail}), flush=True)


def outcome(fn) -> str:
    try:
        return "eof" if fn() == b"" else "data"
    except Exception as exc:
        return builtin_name(exc)


def try_send(sock) -> str:
    try:
        for _ in range(64):  # enough to fill any buffer a dead peer cannot drain
            sock.sendall(b"x" * 65536)
        return "sent"
    except Exception as exc:
        return builtin_name(exc)


def blocking(sock: socket.socket) -> None:
    ready.wait()
    report("recv", outcome(lambda: sock.recv(100)), try_send(sock))


def selecting(sock: socket.socket) -> None:
    sock.setblocking(False)
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        ready.wait()
        sel.select()
    sock.setblocking(True)
    report("selectors", outcome(lambda: sock.recv(100)), try_send(sock))


def aio(host: str, port: int) -> None:
    async def main() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        ready.wait()
        got = await asyncio.gather(reader.read(100), return_exceptions=True)
        first = got[0]
        if isinstance(first, BaseException):
            recv = builtin_name(first)
        else:
            recv = "eof" if first == b"" else "data"
        try:
            for _ in range(64):
                writer.write(b"x" * 65536)
                await writer.drain()
            send = "sent"
        except Exception as exc:
            send = builtin_name(exc)
        report("asyncio", recv, send)

    asyncio.run(main())


def main(host: str, port: int) -> int:
    conns = [socket.create_connection((host, port)) for _ in range(2)]
    threads = [
        threading.Thread(target=blocking, args=(conns[0],), daemon=True),
        threading.Thread(target=selecting, args=(conns[1],), daemon=True),
        threading.Thread(target=aio, args=(host, port), daemon=True),
    ]
    for t in threads:
        t.start()
    ready.wait(timeout=30)
    print(json.dumps({"blocked": ["recv", "selectors", "asyncio"]}), flush=True)
    for t in threads:
        t.join(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
