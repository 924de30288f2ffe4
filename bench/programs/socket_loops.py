"""Small-call loops on the plain socket module: a program of the kind `pyvcl run` must not slow.

    python socket_loops.py server MODE HOST PORT
    python socket_loops.py client MODE HOST PORT AMOUNT

MODE is one of

* ``sendall``: the client calls ``sendall`` with 1 KiB for AMOUNT seconds, then closes; the
  server drains (``recv_into`` a 1 MiB buffer) until EOF and prints ``{"received": BYTES}``.
* ``connect``: the client opens and closes connections for AMOUNT seconds (at most
  `MAX_CONNECTIONS`): ``connect``, read the one byte the server sends, ``close``.  The server
  accepts, sends one byte and closes, forever.  Reading that byte ties each connection to one
  accept, so a client faster than the accept loop cannot overflow the backlog (a kernel drops
  SYNs then and the client stalls for a second).
* ``echo``: AMOUNT round trips of 64 bytes with TCP_NODELAY, blocking, after
  min(1000, AMOUNT // 10) untimed ones; the server echoes until EOF.

Servers print ``{"listening": PORT}`` once they listen; clients print one JSON line with their
figures.  Standard library only and nothing but `socket` for the network: the same file runs
under plain Python, under LDP and under ``pyvcl run``.
"""

from __future__ import annotations

import json
import socket
import sys
import time

SENDALL_SIZE = 1024
ECHO_SIZE = 64
MAX_CONNECTIONS = 50_000
CONNECT_RETRY_S = 10.0
CALLS_PER_CLOCK_CHECK = 256


def emit(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def connect(host: str, port: int) -> socket.socket:
    """Connect, retrying a refused connect for a while (a listener on VPP may show up late)."""
    deadline = time.monotonic() + CONNECT_RETRY_S
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.connect((host, port))
            return sock
        except ConnectionRefusedError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def serve(mode: str, host: str, port: int) -> None:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(128)
    emit({"listening": port})
    if mode == "connect":
        while True:
            conn, _ = ls.accept()
            conn.sendall(b"!")
            conn.close()
    conn, _ = ls.accept()
    buf = bytearray(1 << 20)
    total = 0
    if mode == "echo":
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        view = memoryview(buf)
        while n := conn.recv_into(buf):
            conn.sendall(view[:n])
            total += n
    else:
        while n := conn.recv_into(buf):
            total += n
    conn.close()
    emit({"received": total})


def sendall_client(host: str, port: int, seconds: float) -> dict[str, object]:
    sock = connect(host, port)
    chunk = b"x" * SENDALL_SIZE
    calls = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(CALLS_PER_CLOCK_CHECK):
            sock.sendall(chunk)
        calls += CALLS_PER_CLOCK_CHECK
        if time.perf_counter() >= end:
            break
    elapsed = time.perf_counter() - t0
    sock.close()
    return {
        "calls_per_s": round(calls / elapsed, 1),
        "calls": calls,
        "size": SENDALL_SIZE,
        "bytes": calls * SENDALL_SIZE,
        "seconds": round(elapsed, 4),
    }


def connect_client(host: str, port: int, seconds: float) -> dict[str, object]:
    connect(host, port).close()  # the listener is up (not timed)
    count = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while count < MAX_CONNECTIONS and time.perf_counter() < end:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.connect((host, port))
        got = sock.recv(1)
        sock.close()
        if got != b"!":
            raise ConnectionError(f"connection {count}: expected b'!', got {got!r}")
        count += 1
    elapsed = time.perf_counter() - t0
    return {
        "conn_per_s": round(count / elapsed, 1),
        "connections": count,
        "seconds": round(elapsed, 4),
    }


def echo_client(host: str, port: int, rounds: int) -> dict[str, object]:
    sock = connect(host, port)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"e" * ECHO_SIZE
    buf = bytearray(ECHO_SIZE)
    view = memoryview(buf)
    warmup = min(1000, rounds // 10)
    samples = [0] * rounds
    clock = time.perf_counter_ns
    for i in range(-warmup, rounds):
        t0 = clock()
        sock.sendall(msg)
        got = 0
        while got < ECHO_SIZE:
            k = sock.recv_into(view[got:])
            if not k:
                raise ConnectionError(f"server closed after {i + warmup} round trips")
            got += k
        if i >= 0:
            samples[i] = clock() - t0
    sock.close()
    if buf != msg:
        raise ValueError("echoed bytes differ from the bytes sent")
    samples.sort()

    def us(ns: float) -> float:
        return round(ns / 1000.0, 2)

    return {
        "p50_us": us(samples[rounds // 2]),
        "p90_us": us(samples[rounds * 9 // 10]),
        "p99_us": us(samples[rounds * 99 // 100]),
        "mean_us": us(sum(samples) / rounds),
        "min_us": us(samples[0]),
        "max_us": us(samples[-1]),
        "rounds": rounds,
        "warmup": warmup,
        "size": ECHO_SIZE,
    }


CLIENTS = {"sendall": sendall_client, "connect": connect_client, "echo": echo_client}


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] not in ("server", "client") or argv[1] not in CLIENTS:
        print(__doc__, file=sys.stderr)
        return 2
    role, mode, host, port = argv[0], argv[1], argv[2], int(argv[3])
    if role == "server":
        serve(mode, host, port)
        return 0
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    amount: float = int(argv[4]) if mode == "echo" else float(argv[4])
    emit(CLIENTS[mode](host, port, amount))  # type: ignore[operator]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
