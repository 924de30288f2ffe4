"""Small helpers for tests that move bytes over socket-like objects (VclSockets or kernel
sockets alike): read exactly, read to EOF, run worker threads with a bound (`run_threads`,
`CheckedThread`: what a thread raises reaches the test), and check that a blocked receive
returns once the peer dies."""

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


class CheckedThread(threading.Thread):
    """A thread whose checks reach the test: what ``target`` raises (a failed assert included)
    is kept, and `result` joins the thread, fails if it is still running after ``timeout``
    seconds, and raises it -- an assert in a bare thread only prints a warning.  Starts at
    once; daemonic, so a hung one does not keep the test process alive.

    As a context manager it calls ``result(timeout)`` on leaving the block, and the thread's
    error wins over the block's (a server that failed its check leaves its client timing out:
    the server's assert is the cause to show)::

        with CheckedThread(serve, timeout=5):
            ...client side...
    """

    def __init__(
        self,
        target: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._call = target
        self._call_args = args
        self._timeout = timeout
        self._value: Any = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._value = self._call(*self._call_args)
        except BaseException as e:  # handed to the test by result()
            self._error = e

    def result(self, timeout: float | None = None) -> Any:
        """What ``target`` returned; raises what it raised, or AssertionError if it hung."""
        limit = self._timeout if timeout is None else timeout
        self.join(limit)
        assert not self.is_alive(), f"thread {self.name} still running after {limit:g} s"
        if self._error is not None:
            raise self._error
        return self._value

    def __enter__(self) -> CheckedThread:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.result()
            return
        self.join(self._timeout)
        if not self.is_alive() and self._error is not None:
            raise self._error  # chained to the block's exception, which it likely caused


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
