"""One-way TCP bulk throughput, a standalone script.

    python bench/bulk.py server PORT [HOST] [--module M]
    python bench/bulk.py client HOST PORT SECONDS CHUNK [--module M]

The client writes CHUNK-byte buffers for at least SECONDS, closes, and prints one JSON line
(``bytes``, ``seconds``, ``gbps``, ``writes``: the send side).  The server accepts one
connection, reads into a 1 MiB buffer and discards until EOF, and prints one JSON line with the
*receive* side: ``bytes``, ``seconds`` from the first byte to EOF, ``gbps`` (the figure to
report; the two byte counts must agree).  Before that it prints ``{"listening": PORT}``.

There is no reply from server to client: over C VCL cut-through under LDP (v26.06) a
``shutdown(SHUT_WR)`` never reaches the peer as EOF, while ``close()`` does.

Standard library only (and bench/_script_common.py beside it), so it runs on kernel sockets,
over C VCL under LDP, and -- with ``--module`` naming a socket-like module -- over any other
stack; the module needs what bench/pingpong.py needs (no ``shutdown``).
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
from _script_common import connect, emit, listen, parse_args  # noqa: E402

RECV_BUF = 1 << 20


def server(mod: Any, port: int, host: str) -> int:
    ls = listen(mod, host, port)
    emit({"listening": port})
    conn, _ = ls.accept()
    buf = bytearray(RECV_BUF)
    recv_into = conn.recv_into
    clock = time.perf_counter
    n = recv_into(buf)
    t_first = clock()
    total, reads = n, 1
    while n:
        n = recv_into(buf)
        total += n
        reads += 1
    elapsed = clock() - t_first
    conn.close()
    ls.close()
    emit(
        {
            "bytes": total,
            "reads": reads,
            "seconds": round(elapsed, 4),
            "gbps": round(total * 8 / elapsed / 1e9, 4) if elapsed > 0 else 0.0,
        }
    )
    return 0


def client(mod: Any, host: str, port: int, seconds: float, chunk: int) -> int:
    sock = connect(mod, host, port)
    data = memoryview(bytes(chunk))
    sendall = sock.sendall
    clock = time.perf_counter
    writes = 0
    t0 = clock()
    end = t0 + seconds
    while True:
        sendall(data)
        writes += 1
        if clock() >= end:
            break
    elapsed = clock() - t0
    sock.close()
    sent = writes * chunk
    emit(
        {
            "chunk": chunk,
            "writes": writes,
            "bytes": sent,
            "seconds": round(elapsed, 4),
            "gbps": round(sent * 8 / elapsed / 1e9, 4),
        }
    )
    return 0


def _client_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("seconds", type=float)
    c.add_argument("chunk", type=int)


def main(argv: list[str] | None = None) -> int:
    args, mod, ap = parse_args(__doc__, _client_args, argv)
    if args.role == "server":
        return server(mod, args.port, args.host)
    if args.seconds <= 0 or args.chunk < 1:
        ap.error("SECONDS and CHUNK must be positive")
    return client(mod, args.host, args.port, args.seconds, args.chunk)


if __name__ == "__main__":
    sys.exit(main())
