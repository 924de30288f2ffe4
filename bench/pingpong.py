"""Blocking TCP ping-pong (round-trip latency), a standalone script.

    python bench/pingpong.py server PORT [HOST] [--module M]
    python bench/pingpong.py client HOST PORT N SIZE [--module M] [--warmup W]

The server accepts one connection and echoes whatever it reads until EOF.  The client sends a
SIZE-byte message, reads SIZE bytes back, N times (after W untimed warm-up round trips), and
prints one JSON line with the round-trip percentiles in microseconds.  The server prints
``{"listening": PORT}`` once it listens and ``{"served": BYTES}`` when the peer closed.

Only the standard library (and bench/_script_common.py beside it) is used, so the same file
runs on kernel sockets, over C VCL under LDP (``LD_PRELOAD=libvcl_ldpreload.so`` into the real
interpreter binary) and -- with ``--module`` naming a socket-like module -- over any other
stack.  The module must provide
``AF_INET``, ``SOCK_STREAM`` and ``socket(family, type)`` returning an object with ``bind``,
``listen``, ``accept``, ``connect``, ``sendall``, ``recv_into``, ``close`` (``setsockopt`` with
``IPPROTO_TCP``/``TCP_NODELAY`` and ``SOL_SOCKET``/``SO_REUSEADDR`` is used when it exists).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # run from any directory, also with -I / -P
    sys.path.insert(0, _HERE)
from _script_common import connect, emit, listen, parse_args, sockopt  # noqa: E402


def server(mod: Any, port: int, host: str) -> int:
    ls = listen(mod, host, port)
    emit({"listening": port})
    conn, _ = ls.accept()
    sockopt(mod, conn, "IPPROTO_TCP", "TCP_NODELAY")
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    total = 0
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        conn.sendall(view[:n])
        total += n
    conn.close()
    ls.close()
    emit({"served": total})
    return 0


def client(mod: Any, host: str, port: int, n: int, size: int, warmup: int) -> int:
    sock = connect(mod, host, port)
    sockopt(mod, sock, "IPPROTO_TCP", "TCP_NODELAY")
    msg = b"p" * size
    buf = bytearray(size)
    view = memoryview(buf)
    samples = [0] * n
    clock = time.perf_counter_ns
    t_start = time.perf_counter()
    for i in range(-warmup, n):
        t0 = clock()
        sock.sendall(msg)
        got = 0
        while got < size:
            k = sock.recv_into(view[got:])
            if not k:
                raise ConnectionError(f"server closed after {i + warmup} round trips")
            got += k
        if i >= 0:
            samples[i] = clock() - t0
    wall = time.perf_counter() - t_start
    sock.close()
    if buf != msg:
        raise ValueError("echoed bytes differ from the bytes sent")
    samples.sort()

    def us(ns: float) -> float:
        return round(ns / 1000.0, 2)

    emit(
        {
            "rounds": n,
            "size": size,
            "warmup": warmup,
            "p50_us": us(samples[n // 2]),
            "p90_us": us(samples[min(n - 1, n * 9 // 10)]),
            "p99_us": us(samples[min(n - 1, n * 99 // 100)]),
            "mean_us": us(sum(samples) / n),
            "min_us": us(samples[0]),
            "max_us": us(samples[-1]),
            "seconds": round(wall, 3),
        }
    )
    return 0


def _client_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("n", type=int)
    c.add_argument("size", type=int)
    c.add_argument("--warmup", type=int, default=None, help="default: min(1000, N // 10)")


def main(argv: list[str] | None = None) -> int:
    args, mod, ap = parse_args(__doc__, _client_args, argv)
    if args.role == "server":
        return server(mod, args.port, args.host)
    if args.n < 1 or args.size < 1:
        ap.error("N and SIZE must be positive")
    warmup = min(1000, args.n // 10) if args.warmup is None else args.warmup
    return client(mod, args.host, args.port, args.n, args.size, warmup)


if __name__ == "__main__":
    sys.exit(main())
