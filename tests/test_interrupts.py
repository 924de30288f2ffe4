"""Signals whose handlers raise, held back while pyvcl changes shared memory (pyvcl.interrupts).

Without VPP: which frames hold a signal back, that a held-back handler runs once, later, where
the program is, and that `DEFER_LIMIT_S` bounds the wait.  With VPP: a blocking reader, then a
blocking writer, in the main thread, interrupted by a raising SIGALRM handler every 50 µs
while 256 MiB cross cut-through; every byte arrives intact.  Unguarded, the same run breaks a
fifo within a few interrupts (``chunk chain ends at 4096 before position 65536``): an
interrupt between two steps of a dequeue.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import pyvcl
from pyvcl import interrupts
from pyvcl.interrupts import guard_signal, held_back, interruptible, unguard_signal
from pyvcl.testing.streams import CheckedThread

PKG = Path(pyvcl.__file__).resolve().parent


def _library_code(body: str, name: str = "step") -> Any:
    """A function whose code says it is pyvcl's library (its file name is in the package), as
    a change of shared memory in several steps would be."""
    ns: dict[str, Any] = {"time": time, "sys": sys}
    exec(compile(body, str(PKG / "fifo" / "_test_only.py"), "exec"), ns)
    return ns[name]


def test_which_frames_hold_a_signal_back() -> None:
    here = sys._getframe()
    assert not held_back(here)  # the program's own code
    assert not held_back(None)
    step = _library_code("def step():\n    return sys._getframe()\n")
    assert held_back(step())
    tool = compile(
        "def f():\n    import sys\n    return sys._getframe()\n", str(PKG / "cli" / "x.py"), "exec"
    )
    ns: dict[str, Any] = {}
    exec(tool, ns)
    assert not held_back(ns["f"]())  # pyvcl's tools are the program, not the library

    wait = _library_code("def wait():\n    return sys._getframe()\n", "wait")
    interruptible(wait)
    assert not held_back(wait())

    # Standard-library frames are looked through: a library function blocked in threading's
    # Condition.wait is still the library.
    inner = _library_code(
        "import threading\n"
        "def step():\n"
        "    c = threading.Condition()\n"
        "    out = []\n"
        "    with c:\n"
        "        c.wait_for(lambda: out.append(sys._getframe(1)) or True, 0)\n"
        "    return out[0]\n"
    )
    frame = inner()
    assert frame.f_code.co_filename.endswith("threading.py")
    assert held_back(frame)


def test_guard_only_where_python_runs_a_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    old = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        assert not guard_signal(signal.SIGUSR2)  # ignored: nothing of Python's would run
        signal.signal(signal.SIGUSR2, lambda *a: None)
        got: list[bool] = []
        t = threading.Thread(target=lambda: got.append(guard_signal(signal.SIGUSR2)))
        t.start()
        t.join()
        assert got == [False]  # only the main thread may change handlers
        mine = signal.getsignal(signal.SIGUSR2)
        assert guard_signal(signal.SIGUSR2) and guard_signal(signal.SIGUSR2)  # idempotent
        wrapped = signal.getsignal(signal.SIGUSR2)
        assert wrapped is not mine and getattr(wrapped, "__wrapped__", None) is mine
        unguard_signal(signal.SIGUSR2)
        assert signal.getsignal(signal.SIGUSR2) is mine
    finally:
        unguard_signal(signal.SIGUSR2)
        signal.signal(signal.SIGUSR2, old)


class _Caught(Exception):
    pass


def _run_guarded(step: Any, *args: Any) -> tuple[list[FrameType | None], float, float]:
    """Guard SIGUSR1 with a raising handler, send it from another thread while the main
    thread runs ``step(*args)``; return the frames the handler ran in, when it was sent and
    when the handler ran (monotonic)."""
    frames: list[FrameType | None] = []
    ran: list[float] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        frames.append(frame)
        ran.append(time.monotonic())
        raise _Caught

    old = signal.signal(signal.SIGUSR1, handler)
    sent: list[float] = []
    try:
        assert guard_signal(signal.SIGUSR1)
        main = threading.main_thread().ident
        assert main is not None

        def send() -> None:
            time.sleep(0.02)
            sent.append(time.monotonic())
            signal.pthread_kill(main, signal.SIGUSR1)

        t = CheckedThread(send)
        try:
            step(*args)
            time.sleep(1.0)  # the program's own code: the handler runs here at the latest
        except _Caught:
            pass
        t.result()
    finally:
        unguard_signal(signal.SIGUSR1)
        signal.signal(signal.SIGUSR1, old)
    return frames, sent[0], ran[0] if ran else float("nan")


def test_a_held_back_handler_runs_once_after_the_step() -> None:
    step = _library_code(
        "def step(seconds):\n"
        "    end = time.monotonic() + seconds\n"
        "    while time.monotonic() < end:\n"
        "        pass\n"
        "    return time.monotonic()\n"
    )
    frames, sent, ran = _run_guarded(step, 0.2)
    assert len(frames) == 1
    assert frames[0] is not None and frames[0].f_code.co_filename == __file__
    assert ran - sent >= 0.15  # it waited for the step, which had 0.18 s to go


def test_a_hold_back_that_broke_off_long_ago_does_not_count_against_the_next() -> None:
    # (as if an earlier chain's last sending never came: its first arrival is left behind)
    interrupts._first_held[signal.SIGUSR1] = time.monotonic() - 60
    step = _library_code(
        "def step(seconds):\n"
        "    end = time.monotonic() + seconds\n"
        "    while time.monotonic() < end:\n"
        "        pass\n"
    )
    frames, sent, ran = _run_guarded(step, 0.2)
    assert len(frames) == 1 and ran - sent >= 0.15


def test_an_unmarked_wait_delays_a_signal_at_most_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(interrupts, "DEFER_LIMIT_S", 0.2)
    # A library function waiting in slices nobody marked (as a contended mutex waits): held
    # back slice after slice until the limit, then its handler runs inside the wait.
    step = _library_code(
        "def step(seconds):\n"
        "    end = time.monotonic() + seconds\n"
        "    while time.monotonic() < end:\n"
        "        time.sleep(0.05)\n"
    )
    frames, sent, ran = _run_guarded(step, 5.0)
    assert len(frames) == 1
    assert frames[0] is not None and frames[0].f_code.co_filename.endswith("_test_only.py")
    assert 0.15 <= ran - sent < 1.0


def test_a_marked_wait_takes_the_signal_at_once() -> None:
    step = _library_code("def step(seconds):\n    time.sleep(seconds)\n")
    interruptible(step)
    frames, sent, ran = _run_guarded(step, 5.0)
    assert len(frames) == 1 and ran - sent < 0.5


# -- against VPP ---------------------------------------------------------------------------

TOTAL = 256 << 20
PERIOD_S = 0.00005


class _Tick(Exception):
    pass


@pytest.mark.vpp
@pytest.mark.parametrize("main_side", ["reader", "writer"])
def test_interrupted_every_50us_the_stream_stays_whole(vpp: Any, main_side: str) -> None:
    from pyvcl.vclsocket import VclApp

    sock = str(vpp.app_socket())
    ticks = {"raised": 0}

    def handler(signum: int, frame: FrameType | None) -> None:
        # Raise only inside pyvcl: raised in this test's own lines, an interrupt would lose
        # what a finished call returned, as it would with kernel sockets -- Python's doing.
        if frame is not None and frame.f_code.co_filename.startswith(str(PKG)):
            ticks["raised"] += 1
            raise _Tick

    data = os.urandom(1 << 20)
    want = hashlib.sha256(data * (TOTAL // len(data))).digest()
    with (
        VclApp(sock, scope_local=True, scope_global=False) as a,
        VclApp(sock, scope_local=True, scope_global=False) as b,
    ):
        ls = a.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        port = ls.getsockname()[1]
        conn_box: list[Any] = []
        t = CheckedThread(lambda: conn_box.append(ls.accept()[0]))
        client = b.create_connection(("127.0.0.1", port))
        t.result()
        server = conn_box[0]
        reader, writer = (server, client)
        got = hashlib.sha256()

        def read_all() -> None:
            buf = bytearray(1 << 16)
            n = 0
            while n < TOTAL:
                try:
                    k = reader.recv_into(buf)
                except _Tick:
                    continue
                assert k, f"EOF after {n} bytes"
                got.update(memoryview(buf)[:k])
                n += k

        def write_all() -> None:
            n = 0
            view = memoryview(data)
            while n < TOTAL:
                try:
                    n += writer.send(view[n % len(data) :])
                except _Tick:
                    continue

        old = signal.signal(signal.SIGALRM, handler)
        try:
            assert guard_signal(signal.SIGALRM)
            side = CheckedThread(write_all if main_side == "reader" else read_all, timeout=60)
            signal.setitimer(signal.ITIMER_REAL, PERIOD_S, PERIOD_S)
            try:
                (read_all if main_side == "reader" else write_all)()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            side.result()
        finally:
            unguard_signal(signal.SIGALRM)
            signal.signal(signal.SIGALRM, old)
        assert got.digest() == want
        assert ticks["raised"] > 0, "no interrupt landed inside pyvcl: the run proves nothing"
        client.close()
        server.close()
