"""Small helpers for tests that move bytes over socket-like objects (VclSockets or kernel
sockets alike): read exactly, read to EOF, run worker threads with a bound, and check that a
blocked receive returns once the peer dies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

CHUNK = 1 << 20


def recv_exactly(s: Any, n: int) -> bytes:
    """``n`` bytes from ``s``; AssertionError on EOF before that."""
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(CHUNK, n - len(buf)))
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_all(s: Any) -> bytes:
    """Everything until EOF."""
    buf = bytearray()
    while chunk := s.recv(CHUNK):
        buf += chunk
    return bytes(buf)


def run_threads(
    threads: Iterable[threading.Thread], timeout: float, errors: list[BaseException], what: str
) -> float:
    """Start ``threads``, wait up to ``timeout`` seconds for all, then fail if one is still
    running (``what`` hung) or raise the first of ``errors`` (which the threads append to).
    Returns the seconds it took."""
    threads = list(threads)
    t0 = time.monotonic()
    for t in threads:
        t.start()
    deadline = t0 + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), f"{what} hung"
    if errors:
        raise errors[0]
    return elapsed


def recv_when_peer_dies(
    recv: Callable[[], bytes], kill: Callable[[], None], limit: float = 10.0
) -> tuple[bytes | OSError, float]:
    """Run ``recv`` (blocking on a connection to a peer) in a thread, let it block, then
    ``kill`` the peer.  Returns what ``recv`` gave -- its bytes, or the OSError it raised --
    and how many seconds after the kill it returned; AssertionError if it is still blocked
    ``limit`` seconds later (a hang)."""
    outcome: list[bytes | OSError] = []

    def reader() -> None:
        try:
            outcome.append(recv())
        except OSError as e:
            outcome.append(e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.3)  # let it block
    t0 = time.monotonic()
    kill()
    t.join(limit)
    assert not t.is_alive(), f"recv still blocked {limit:g} s after the peer died"
    return outcome[0], time.monotonic() - t0
