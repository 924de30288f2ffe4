"""The per-call paths (issue 9 item 6): the fifos' cached chunk on enqueue/dequeue, the
socket's `DataPath`, and opt-in busy polling.  Speed is measured in bench/, not here; these
check that the fast paths keep the general paths' behaviour and hostile-memory checks."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from pyvcl.app.base import _WorkerBase
from pyvcl.errors import SharedMemoryError, VppDisconnected
from pyvcl.fifo import Fifo
from pyvcl.segment import Segment
from pyvcl.session import worker as worker_mod
from pyvcl.session.worker import POLL_SLICE, SessionWorker
from pyvcl.testing.conformance import VclStack, pair
from pyvcl.testing.plugin import vcl_stack_fixture
from pyvcl.vclsocket import BUSY_POLL_ENV, VclApp, busy_poll_usec
from pyvcl.wire.enums import SessionEvent
from pyvcl.wire.fifo import SVM_FIFO_CHUNK, SVM_FIFO_SHARED

from .fifo_fixtures import alloc_fifo
from .mq_fixtures import build_mq
from .segment_fixtures import make_segment

stack = vcl_stack_fixture(31000, 32000)


@pytest.fixture
def seg() -> Segment:
    return make_segment(16 << 20)


def _fifo_put(seg: Segment, f: int, **values: Any) -> None:
    for k, v in values.items():
        SVM_FIFO_SHARED[k].put(seg.view, seg.fsh + f, v)


def _fifo_get(seg: Segment, f: int, name: str) -> int:
    return int(SVM_FIFO_SHARED[name].get(seg.view, seg.fsh + f))


# ---------------------------------------------------------------------------------------------
# Fifo: the cached chunk


def test_many_small_writes_and_reads_cross_chunks_intact(seg: Segment) -> None:
    """1 KiB writes and reads over many chunk boundaries (cache built, dropped, rebuilt as
    chunks are freed and reused) deliver every byte in order."""
    f = alloc_fifo(seg, 64 << 10)
    p, c = Fifo(seg, f), Fifo(seg, f)
    data = os.urandom(1 << 20)
    got = bytearray()
    buf = bytearray(700)
    for i in range(0, len(data), 1024):
        assert p.enqueue(memoryview(data)[i : i + 1024]) == 1024
        while p.max_enqueue() < 1024 or (i // 1024) % 5 == 4:
            n = c.dequeue_into(buf)
            if not n:
                break
            got += buf[:n]
    while n := c.dequeue_into(buf):
        got += buf[:n]
    assert got == data


def test_cached_tail_chunk_scribbled_is_rechecked(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p = Fifo(seg, f)
    p.enqueue(b"abc")  # caches the tail chunk
    tail_chunk = _fifo_get(seg, f, "tail_chunk")
    SVM_FIFO_CHUNK["length"].put(seg.view, seg.fsh + tail_chunk, 1 << 30)
    with pytest.raises(SharedMemoryError, match="length"):
        p.enqueue(b"x")


def test_cached_tail_chunk_pointer_moved_outside_is_refused(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p = Fifo(seg, f)
    p.enqueue(b"abc")
    _fifo_put(seg, f, tail_chunk=seg.size + 4096)
    before = bytes(seg.view)
    with pytest.raises(SharedMemoryError):
        p.enqueue(b"x")
    assert bytes(seg.view) == before


def test_cached_head_chunk_scribbled_is_rechecked(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p, c = Fifo(seg, f), Fifo(seg, f)
    p.enqueue(b"abcdef")
    assert c.dequeue(1) == b"a"  # caches the head chunk
    head_chunk = _fifo_get(seg, f, "head_chunk")
    SVM_FIFO_CHUNK["length"].put(seg.view, seg.fsh + head_chunk, 3)
    with pytest.raises(SharedMemoryError, match="length"):
        c.dequeue_into(bytearray(2))


def test_write_up_to_a_chunk_end_moves_tail_chunk_on(seg: Segment) -> None:
    """A write ending exactly at its chunk's end leaves tail_chunk at the next chunk (0 when
    there is none), as VPP's copy does; the next write grows the chain."""
    f = alloc_fifo(seg, 100_000)
    p, c = Fifo(seg, f), Fifo(seg, f)
    first = p.chunks()[0]
    p.enqueue(b"a")  # caches the chunk
    assert p.enqueue(b"b" * (first.length - 1)) == first.length - 1
    assert _fifo_get(seg, f, "tail_chunk") == 0 and p.tail == first.length
    assert p.enqueue(b"c" * 10) == 10
    assert _fifo_get(seg, f, "tail_chunk") == p.chunks()[1].offset
    assert c.dequeue(first.length + 10) == b"a" + b"b" * (first.length - 1) + b"c" * 10


def test_a_scribbled_link_at_a_chunk_end_is_refused(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p = Fifo(seg, f)
    first = p.chunks()[0]
    p.enqueue(b"a")
    # The chain grown past the first chunk, then its link pointed outside the segment.
    SVM_FIFO_CHUNK["next"].put(seg.view, seg.fsh + first.offset, seg.size + 4096)
    p.enqueue(b"b" * (first.length - 1))  # up to the end: tail_chunk takes that link
    before = bytes(seg.view)
    with pytest.raises(SharedMemoryError):
        p.enqueue(b"x")
    assert bytes(seg.view) == before


def test_the_producers_cached_head_is_a_head_the_fifo_had(seg: Segment) -> None:
    """Positions wrap at 2**32: a cached head that never was (0, say) could look like one
    just behind a tail that wrapped, and let a write run over unread bytes."""
    size = 100_000
    f = alloc_fifo(seg, size, start=(1 << 32) - 50_000)
    p, c = Fifo(seg, f), Fifo(seg, f)
    data = os.urandom(size - 10)
    assert p.enqueue(data) == size - 10  # tail wraps past 0
    assert p.enqueue(b"z" * 20) == 10
    assert p.enqueue(b"z") == 0
    assert c.dequeue(size) == data + b"z" * 10


def test_size_shrunk_under_the_cache_is_honoured(seg: Segment) -> None:
    f = alloc_fifo(seg, 100_000)
    p = Fifo(seg, f)
    p.enqueue(b"abc")
    _fifo_put(seg, f, size=4)
    assert p.enqueue(b"xyz") == 1  # only what the new size leaves room for


# ---------------------------------------------------------------------------------------------
# Busy polling: configuration and the poller's spin


def test_busy_poll_value_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BUSY_POLL_ENV, raising=False)
    assert busy_poll_usec(None) == 0
    assert busy_poll_usec(50) == 50
    monkeypatch.setenv(BUSY_POLL_ENV, "120")
    assert busy_poll_usec(None) == 120
    for bad in ("abc", "-1", "nan", "1e12"):
        monkeypatch.setenv(BUSY_POLL_ENV, bad)
        with pytest.raises(ValueError, match=BUSY_POLL_ENV):
            busy_poll_usec(None)


def test_bad_busy_poll_fails_before_attaching(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="busy_poll"):
        VclApp(tmp_path / "no-such-socket", busy_poll=-5)


class _FakeApp:
    """Just what `SessionWorker.wait_until` touches: an app whose mq never has events."""

    api_client_handle = 1

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def poll(self, timeout: float) -> list[Any]:
        self.calls.append(("poll", timeout))
        return []

    def wait(self, timeout: float) -> None:
        self.calls.append(("wait", timeout))

    def nap(self, timeout: float) -> None:  # the poller's sleep (App.nap)
        self.calls.append(("nap", timeout))


def test_wait_spins_for_busy_poll_then_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(worker_mod, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    app = _FakeApp()
    w = SessionWorker(app)  # type: ignore[arg-type]
    w.busy_poll = 0.001
    rounds = iter(range(6))

    def ready() -> bool:
        clock[0] += 0.0004  # each check takes 400 µs of the fake clock
        return next(rounds) == 5

    assert w.wait_until(ready, None)
    # spun (non-blocking looks) while within 1 ms of the first check, then slept: a sleeping
    # round looks, waits a POLL_SLICE, checks ready() and takes the events
    spin = [("poll", 0.0)] * 3
    sleep = [("poll", 0.0), ("nap", POLL_SLICE), ("poll", 0.0)]
    assert app.calls == spin + sleep


def test_no_busy_poll_sleeps_at_once() -> None:
    app = _FakeApp()
    w = SessionWorker(app)  # type: ignore[arg-type]
    rounds = iter(range(3))
    assert w.wait_until(lambda: next(rounds) == 2, None)
    assert app.calls == [("poll", 0.0), ("nap", POLL_SLICE), ("poll", 0.0)]  # no spin


# ---------------------------------------------------------------------------------------------
# Sockets over VPP


def test_small_calls_take_the_data_path(stack: VclStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first call, a send that fits and a recv that finds data never reach the
    worker's general path."""
    with pair(stack) as (_srv, c, a):
        c.sendall(b"first")
        assert a.recv(100) == b"first"
        calls: list[str] = []
        real_send, real_recv = SessionWorker.send, SessionWorker.recv_into

        def send(self: SessionWorker, *args: Any) -> int:
            calls.append("send")
            return real_send(self, *args)

        def recv_into(self: SessionWorker, *args: Any) -> int:
            calls.append("recv_into")
            return real_recv(self, *args)

        monkeypatch.setattr(SessionWorker, "send", send)
        monkeypatch.setattr(SessionWorker, "recv_into", recv_into)
        for i in range(50):
            msg = b"%d" % i * 20
            c.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += a.recv(len(msg) - len(got))  # (may wait: general path then)
            assert got == msg
            assert c.send(b"x") == 1
            buf = bytearray(1)
            while not a.recv_into(buf):
                pass
            assert buf == b"x"
        assert "send" not in calls


def test_data_path_after_close(stack: VclStack) -> None:
    with pair(stack) as (_srv, c, a):
        c.sendall(b"abc")
        assert a.recv(3) == b"abc"
        c.close()
        with pytest.raises(OSError) as ei:
            c.send(b"x")
        assert ei.value.errno == 9  # EBADF, as on a closed kernel socket
        with pytest.raises(OSError):
            c.recv(1)
        assert a.recv(10) == b""  # the peer's close, then EOF


def test_busy_poll_echo(stack: VclStack) -> None:
    """Blocking echo with busy polling on both apps: same bytes, and a blocked recv still
    wakes up when the data comes later than the spin."""
    apps = (stack.server_app, stack.client_app)
    old = [app.busy_poll for app in apps]
    for app in apps:
        app.busy_poll = 300
    try:
        with pair(stack) as (_srv, c, a):
            stop = threading.Event()
            errors: list[BaseException] = []

            def echo() -> None:
                try:
                    while not stop.is_set():
                        data = a.recv(1000)
                        if not data:
                            return
                        a.sendall(data)
                except BaseException as e:  # reported by the test below
                    errors.append(e)

            t = threading.Thread(target=echo, daemon=True)
            t.start()
            for i in range(200):
                msg = os.urandom(64)
                c.sendall(msg)
                got = b""
                while len(got) < 64:
                    got += c.recv(64 - len(got))
                assert got == msg, i
            c.settimeout(5)
            threading.Timer(0.05, lambda: a.sendall(b"late")).start()
            assert c.recv(10) == b"late"  # after the spin: the sleeping wait still wakes
            stop.set()
            c.close()
            t.join(10)
            assert not t.is_alive()
            assert not errors, errors
    finally:
        for app, value in zip(apps, old, strict=True):
            app.busy_poll = value


def test_a_waiter_ready_at_the_signal_goes_on_before_taking_the_events() -> None:
    """When the mq's signal comes and the waiter's condition already holds (its bytes are in
    the fifo), the events are left for its next wait: no poll after the wait."""
    app = _FakeApp()
    w = SessionWorker(app)  # type: ignore[arg-type]
    checks = iter([False, True])  # (a third look would raise StopIteration)
    assert w.wait_until(lambda: next(checks), None)
    assert app.calls == [("poll", 0.0), ("nap", POLL_SLICE)]
    # ... but not when an adapter mirrors session state from the events (pyvcl.interpose)
    app.calls.clear()
    w.on_events = lambda events: None
    checks = iter([False, True])
    assert w.wait_until(lambda: next(checks), None)
    assert app.calls == [("poll", POLL_SLICE)]


# ---------------------------------------------------------------------------------------------
# The poller's sleep (App.nap) and the eventfd's signal


class _MqApp(_WorkerBase):
    """An app worker over one in-process eventfd-mode queue, its app socket a socketpair."""

    def __init__(self, mq: Any, sapi: Any) -> None:
        super().__init__(sapi)
        self.mq = mq

    def _check_usable(self) -> None:
        pass

    def _event_mq(self) -> Any:
        return self.mq


def _readable(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


@pytest.fixture
def mq_app() -> Any:
    evfd = os.eventfd(0, os.EFD_NONBLOCK)
    mine, vpps = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    seg, _off, mq = build_mq(eventfd=evfd)
    sapi = SimpleNamespace(fileno=mine.fileno, path="<socketpair>")
    sapi.poll_closed = lambda: _readable(mine.fileno()) and not vpps.fileno() >= 0
    app = _MqApp(mq, sapi)
    yield app, mq, evfd, vpps
    mq.close()
    seg.close()
    mine.close()
    vpps.close()
    os.close(evfd)


def test_nap_returns_at_the_signal_and_leaves_it_for_the_next_poll(mq_app: Any) -> None:
    app, mq, evfd, _ = mq_app
    mq.send_io(SessionEvent.IO_RX, 7)  # empty -> one: signals
    app.nap(5.0)  # returns at once (a 5 s wait would fail the suite's timeout, not pass)
    assert _readable(evfd)  # not reset by the nap ...
    events = app.poll(0)
    assert [(e.type, e.session_index) for e in events] == [(SessionEvent.IO_RX, 7)]
    assert not _readable(evfd)  # ... but by the poll, before it drained


def test_nap_without_signal_sleeps_its_timeout(mq_app: Any) -> None:
    app, _mq, _evfd, _ = mq_app
    t0 = time.monotonic()
    app.nap(0.05)
    assert time.monotonic() - t0 >= 0.04


def test_nap_raises_when_vpp_closes_the_app_socket(mq_app: Any) -> None:
    app, _mq, _evfd, vpps = mq_app
    vpps.close()
    with pytest.raises(VppDisconnected):
        app.nap(5.0)


def test_a_poll_leaving_events_queued_sets_the_signal_again(
    mq_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events queued while a drain ran (it takes a snapshot) raise no signal of VPP's: the
    poll that leaves them must set it again, or a selector sleeping on the eventfd sleeps
    past them (seen: an aiohttp server with 32 requests queued and asleep)."""
    app, mq, evfd, _ = mq_app
    mq.send_io(SessionEvent.IO_RX, 1)
    mq.send_io(SessionEvent.IO_RX, 2)  # (queue not empty: no second signal)
    mq.clear_signal()  # a waiter took the signal
    real_drain = mq.drain
    monkeypatch.setattr(mq, "drain", lambda *a, **k: real_drain(1))  # the snapshot's share
    assert [e.session_index for e in app.poll(0)] == [1]
    assert _readable(evfd)  # event 2 will wake the next sleeper
    assert [e.session_index for e in app.poll(0)] == [2]
    assert mq.size_now() == 0
