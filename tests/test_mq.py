"""pyvcl.mq.queue: the svm message queue against queues laid out as VPP lays them out, across
processes in both signalling modes, against hostile headers, and on real VPP memory."""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvcl import shmview as ins
from pyvcl.errors import LocalError, SharedMemoryError, Timeout, WouldBlock
from pyvcl.mq import events
from pyvcl.mq.queue import CONDVAR, EVENTFD, MessageQueue, WaitResult
from pyvcl.segment import Segment
from pyvcl.wire.enums import MqRing
from pyvcl.wire.enums import SessionEvent as E
from pyvcl.wire.mq import SVM_MSG_Q_RING_SHARED, SVM_MSG_Q_SHARED, SVM_MSG_Q_SHARED_QUEUE
from pyvcl.wire.session import CTRL_PAYLOADS, SESSION_EVENT_PAYLOAD_OFFSET

from .mq_fixtures import alloc_mq, app_mq_rings, build_mq, mq_size, vpp_mq_rings
from .segment_fixtures import (
    load_own_snapshot,
    load_snapshot,
    make_segment,
    own_snapshot_names,
    snapshot_names,
)
from .shared_data import cross_check, load_json

MODES = [CONDVAR, EVENTFD]
_Q_OFF = SVM_MSG_Q_SHARED.size  # queue header within the mq
_RING_HDR = SVM_MSG_Q_RING_SHARED

Factory = Callable[..., tuple[Segment, int, MessageQueue]]


@pytest.fixture
def new_mq() -> Iterator[Factory]:
    """build_mq with an eventfd (closed at teardown) when mode is eventfd."""
    fds: list[int] = []

    def make(mode: str, q_nitems: int = 64, rings: Any = None) -> tuple[Segment, int, MessageQueue]:
        fd = None
        if mode == EVENTFD:
            fd = os.eventfd(0, os.EFD_CLOEXEC)
            fds.append(fd)
        return build_mq(q_nitems, rings, eventfd=fd)

    yield make
    for fd in fds:
        os.close(fd)


# -- field pokers for corrupting headers -----------------------------------------------------------
def q_field(seg: Segment, off: int, name: str) -> tuple[Any, int]:
    return SVM_MSG_Q_SHARED_QUEUE[name], seg.fsh + off + _Q_OFF


def poke_q(seg: Segment, off: int, name: str, value: int) -> None:
    f, base = q_field(seg, off, name)
    f.put(seg.view, base, value)


def ring_hdr(mq: MessageQueue, ring: int) -> int:
    """Mapping offset of a ring header, computed from the layout (not from mq internals)."""
    base = mq.segment.fsh + mq.offset + _Q_OFF + SVM_MSG_Q_SHARED_QUEUE.size + 8 * mq.maxsize
    for r in range(ring):
        base += _RING_HDR.size + mq.ring_nitems(r) * mq.ring_elsize(r)
    return base


def poke_ring(mq: MessageQueue, ring: int, name: str, value: int) -> None:
    _RING_HDR[name].put(mq.segment.view, ring_hdr(mq, ring), value)


def poke_handle(mq: MessageQueue, index: int, ring: int, elt: int) -> None:
    data = mq.segment.fsh + mq.offset + _Q_OFF + SVM_MSG_Q_SHARED_QUEUE.size
    mq.segment.view[data + 8 * index : data + 8 * index + 8] = ring.to_bytes(4, "little") + (
        elt.to_bytes(4, "little")
    )


# -- layout ----------------------------------------------------------------------------------------
def test_sizes_and_ring_offsets_match_vpp() -> None:
    # protocol.md 5.1: VPP mq 315552 bytes, app mq (EVT_QUEUE_SIZE 2048) 86176 bytes; for an mq
    # at fsh + 320, ring 0 is at fsh + 16824 and ring 1 at fsh + 53708.
    assert mq_size(2048, vpp_mq_rings(2048)) == 315552
    assert mq_size(2048, app_mq_rings(2048)) == 86176
    seg = make_segment(2 << 20, n_mqs=1)
    off = alloc_mq(seg, 2048, vpp_mq_rings(2048))
    assert off == 320
    mq = MessageQueue(seg, off)
    d = mq.describe()
    assert mq.size == 315552
    assert [r["fsh_offset"] for r in d["rings"]] == [16824, 53708]
    assert [(r["nitems"], r["elsize"]) for r in d["rings"]] == [(2048, 18), (1024, 256)]
    assert d["queue"]["mutex"]["__kind"] == 144 and d["queue"]["condvar"]["__wrefs"] == 1
    assert d["queue_fsh_offset"] == 328 and d["problems"] == []


def test_condvar_declaration_matches_layouts() -> None:
    from pyvcl.wire.mq import PTHREAD_COND_FIELDS

    fields = {
        f["name"]: f["offset"]
        for f in load_json("vpp-v26.06", "layouts.json")["records"]["svm_msg_q_shared_queue_t"][
            "fields"
        ]
    }
    cond = SVM_MSG_Q_SHARED_QUEUE.offset("condvar")
    for name, field in PTHREAD_COND_FIELDS.fields.items():
        assert fields[f"condvar.__data.{name}"] == cond + field.offset


# -- the events' repr ---------------------------------------------------------------------------
def test_event_repr_is_short_and_keeps_the_bytes() -> None:
    """A ctrl event prints its type and key fields on one short line, not its 256-byte slot;
    the slot is still in ``raw`` and every field in `fields()`."""
    slot = events.encode_ctrl(E.CTRL_DISCONNECTED, client_index=3, context=9, handle=0xABC)
    slot += b"\xee" * (256 - len(slot))
    ev = events.decode(MqRing.CTRL_EVT, slot)
    assert repr(ev) == "Event(CTRL_DISCONNECTED, handle=0xabc, context=9, raw=256 B)"
    assert ev.raw == slot and ev.fields()["client_index"] == 3
    io = events.decode(MqRing.IO_EVT, events.encode_io(E.IO_RX, 7))
    assert repr(io) == "Event(IO_RX, session_index=7, raw=18 B)"


# -- the two describers ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_queue_describe_and_the_inspector_agree(new_mq: Factory, mode: str) -> None:
    """`MessageQueue.describe` (the attached queue) and `pyvcl.shmview.describe_mq` (a segment
    alone) use the same names for the same things, and their values agree."""
    seg, off, mq = new_mq(mode)
    for i in range(5):  # events consumed and events still pending, in both rings
        mq.send_io(E.IO_TX, i)
        mq.send(events.encode_ctrl(E.CTRL_APP_DETACH, client_index=i), ring=MqRing.CTRL_EVT)
        if i < 3:
            mq.drain()
    ours, theirs = mq.describe(), ins.describe_mq(seg, off)
    assert len(ours["queue"]["pending_handles"]) == 4
    shared = _same_where_shared(ours, theirs)
    assert shared >= 30
    assert {"fsh_offset", "length", "queue_fsh_offset", "queue_data_fsh_offset"} <= ours.keys()


def test_read_handles_refuses_positions_outside_the_queue() -> None:
    _, _, mq = build_mq(8, ((8, 18), (4, 256)))
    mq.send_io(E.IO_TX, 1)
    assert mq.read_handles(0, 1) == [(0, 0)]
    for head, n in ((8, 1), (-1, 1), (0, 9)):
        with pytest.raises(LocalError):
            mq.read_handles(head, n)


# -- round trips -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_round_trip_io(new_mq: Factory, mode: str) -> None:
    _, _, mq = new_mq(mode)
    mq.send_io(E.IO_TX, 7)
    assert [(e.type, e.session_index) for e in mq.pending()] == [(E.IO_TX, 7)]
    d = mq.describe()
    assert d["queue"]["cursize"] == 1 and d["rings"][0]["cursize"] == 1
    assert d["queue"]["pending_handles"] == [{"ring_index": 0, "elt_index": 0}]
    (ev,) = mq.recv(timeout=1)
    assert (ev.type, ev.ring, ev.session_index) == (E.IO_TX, MqRing.IO_EVT, 7)
    assert ev.raw == events.encode_io(E.IO_TX, 7)
    d = mq.describe()
    assert (d["queue"]["head"], d["queue"]["tail"], d["queue"]["cursize"]) == (1, 1, 0)
    assert (d["rings"][0]["head"], d["rings"][0]["tail"], d["rings"][0]["cursize"]) == (1, 1, 0)
    assert mq.drain() == [] and mq.pending() == []


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_ctrl_zeroes_the_slot(new_mq: Factory, mode: str) -> None:
    seg, _, mq = new_mq(mode)
    # Stale bytes in the slot the message will use: send must zero them (5.3 step 4).
    slot = ring_hdr(mq, 1) + _RING_HDR.size
    seg.view[slot : slot + 256] = b"\xee" * 256
    ip = bytes(12) + bytes([127, 0, 0, 1])
    mq.send_ctrl(E.CTRL_CONNECT, client_index=0x10001, context=5, port=0x611E, ip=ip, is_ip4=1)
    (ev,) = mq.recv(timeout=1)
    assert ev.type == E.CTRL_CONNECT and ev.ring == MqRing.CTRL_EVT
    assert (ev.msg.client_index, ev.msg.context, ev.msg.port, ev.msg.ip) == (0x10001, 5, 0x611E, ip)
    size = CTRL_PAYLOADS[E.CTRL_CONNECT].size
    assert len(ev.raw) == 256 and ev.raw[SESSION_EVENT_PAYLOAD_OFFSET + size :] == bytes(
        256 - 2 - size
    )
    # A raw send to an explicit ring, without decoding on the way out.
    mq.send(events.encode_ctrl(E.CTRL_APP_DETACH, client_index=3), ring=MqRing.CTRL_EVT)
    ((ring, raw),) = mq.drain(decode=False)
    assert ring == 1 and raw[:6] == bytes([E.CTRL_APP_DETACH, 0, 3, 0, 0, 0])


@pytest.mark.parametrize("mode", MODES)
def test_order_is_one_fifo_across_rings(new_mq: Factory, mode: str) -> None:
    _, _, mq = new_mq(mode)
    sent = []
    for i in range(40):
        if i % 3 == 0:
            mq.send_ctrl(E.CTRL_DISCONNECT, handle=i)
            sent.append((E.CTRL_DISCONNECT, i))
        else:
            mq.send_io(E.IO_RX if i % 2 else E.IO_TX, i)
            sent.append((E.IO_RX if i % 2 else E.IO_TX, i))
    assert [(e.type, e.msg.handle if e.msg else e.session_index) for e in mq.pending()] == sent
    got = mq.drain(max_n=7) + mq.drain()
    assert [(e.type, e.msg.handle if e.msg else e.session_index) for e in got] == sent
    assert [e.ring for e in got] == [1 if t == E.CTRL_DISCONNECT else 0 for t, _ in sent]


@pytest.mark.parametrize("mode", MODES)
def test_indices_wrap(new_mq: Factory, mode: str) -> None:
    _, _, mq = new_mq(mode, 8, ((8, 18), (3, 256)))
    seq = 0
    expect: deque[int] = deque()  # sequence numbers; multiples of 4 (+3) went to the ctrl ring
    for rnd in range(60):
        for _ in range(1 + rnd % 5):
            ctrl = seq % 4 == 3
            if len(expect) == 8 or (ctrl and sum(1 for x in expect if x % 4 == 3) == 3):
                break
            if ctrl:
                mq.send_ctrl(E.CTRL_CLEANUP, handle=seq, block=False)
            else:
                mq.send_io(E.IO_RX, seq, block=False)
            expect.append(seq)
            seq += 1
        # Drain some (crossing the end of the handle array and of each ring as rounds go by).
        got = mq.drain(max_n=1 + rnd % 4) if rnd % 3 else mq.drain()
        for e in got:
            assert (e.msg.handle if e.msg else e.session_index) == expect.popleft()
        d = mq.describe()
        assert d["queue"]["cursize"] == len(expect)
        assert d["queue"]["tail"] == seq % 8
        assert d["queue"]["head"] == (seq - len(expect)) % 8
    for e in mq.drain():
        assert (e.msg.handle if e.msg else e.session_index) == expect.popleft()
    assert not expect and seq > 8 * 20


class _Model:
    """A queue of capacity `maxsize` over two rings, in plain Python."""

    def __init__(self, maxsize: int, nitems: tuple[int, int]) -> None:
        self.maxsize, self.nitems = maxsize, nitems
        self.items: deque[tuple[int, int]] = deque()

    def can_send(self, ring: int) -> bool:
        in_ring = sum(1 for r, _ in self.items if r == ring)
        return len(self.items) < self.maxsize and in_ring < self.nitems[ring]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("io"), st.integers(0, 2**32 - 1)),
            st.tuples(st.just("ctrl"), st.integers(0, 2**64 - 1)),
            st.tuples(st.just("drain"), st.integers(0, 6)),
        ),
        max_size=80,
    ),
    sizes=st.sampled_from([(1, (2, 1)), (4, (4, 2)), (5, (6, 5)), (16, (16, 1))]),
)
def test_matches_a_model(ops: list[tuple[str, int]], sizes: tuple[int, tuple[int, int]]) -> None:
    maxsize, nitems = sizes
    _, _, mq = build_mq(maxsize, ((nitems[0], 18), (nitems[1], 256)))
    model = _Model(maxsize, nitems)
    for op, arg in ops:
        if op == "drain":
            got = mq.drain(max_n=arg or None)
            want = [model.items.popleft() for _ in range(min(arg or maxsize, len(model.items)))]
            assert [(e.ring, e.msg.handle if e.msg else e.session_index) for e in got] == want
            continue
        ring = 0 if op == "io" else 1
        if model.can_send(ring):
            if ring:
                mq.send_ctrl(E.CTRL_CLEANUP, handle=arg, block=False)
            else:
                mq.send_io(E.IO_TX, arg, block=False)
            model.items.append((ring, arg))
        else:
            with pytest.raises(WouldBlock):
                if ring:
                    mq.send_ctrl(E.CTRL_CLEANUP, handle=arg, block=False)
                else:
                    mq.send_io(E.IO_TX, arg, block=False)
        d = mq.describe()
        assert d["queue"]["cursize"] == len(model.items)
        assert [r["cursize"] for r in d["rings"]] == [
            sum(1 for r, _ in model.items if r == i) for i in (0, 1)
        ]


# -- full queue / ring -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_full_queue(new_mq: Factory, mode: str) -> None:
    _, _, mq = new_mq(mode, 4, ((8, 18), (4, 256)))
    for i in range(4):
        mq.send_io(E.IO_TX, i, block=False)
    with pytest.raises(WouldBlock):
        mq.send_io(E.IO_TX, 4, block=False)
    with pytest.raises(WouldBlock):  # the queue, not the ctrl ring, is full
        mq.send_ctrl(E.CTRL_DISCONNECT, handle=4, block=False)
    t0 = time.monotonic()
    with pytest.raises(Timeout):
        mq.send_io(E.IO_TX, 4, timeout=0.05)
    assert 0.05 <= time.monotonic() - t0 < 1.0
    assert [e.session_index for e in mq.drain(max_n=1)] == [0]
    mq.send_io(E.IO_TX, 4, timeout=0.05)
    assert [e.session_index for e in mq.drain()] == [1, 2, 3, 4]


@pytest.mark.parametrize("mode", MODES)
def test_full_ring(new_mq: Factory, mode: str) -> None:
    _, _, mq = new_mq(mode, 8, ((8, 18), (2, 256)))
    mq.send_ctrl(E.CTRL_DISCONNECT, handle=1)
    mq.send_ctrl(E.CTRL_DISCONNECT, handle=2)
    with pytest.raises(WouldBlock):
        mq.send_ctrl(E.CTRL_DISCONNECT, handle=3, block=False)
    with pytest.raises(Timeout):
        mq.send_ctrl(E.CTRL_DISCONNECT, handle=3, timeout=0.03)
    mq.send_io(E.IO_TX, 9, block=False)  # the IO ring still has room
    assert mq.describe()["rings"][1]["cursize"] == 2
    assert [e.type for e in mq.drain(max_n=1)] == [E.CTRL_DISCONNECT]
    mq.send_ctrl(E.CTRL_DISCONNECT, handle=3, block=False)
    assert [(e.msg.handle if e.msg else e.session_index) for e in mq.drain()] == [2, 9, 3]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("what", ["queue", "ring"])
def test_blocked_producer_is_woken_by_the_consumer(new_mq: Factory, mode: str, what: str) -> None:
    _, _, mq = new_mq(mode, 2 if what == "queue" else 8, ((8, 18), (1, 256)))
    if what == "queue":
        mq.send_io(E.IO_TX, 0)
        mq.send_io(E.IO_TX, 1)
    else:
        mq.send_ctrl(E.CTRL_DISCONNECT, handle=0)
    done: list[float] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            if what == "queue":
                mq.send_io(E.IO_TX, 2, timeout=5)
            else:
                mq.send_ctrl(E.CTRL_DISCONNECT, handle=1, timeout=5)
            done.append(time.monotonic())
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(0.1)
    assert not done
    drained_at = time.monotonic()
    mq.drain(max_n=1)
    t.join(5)
    assert not errors and done and done[0] - drained_at < 0.5
    assert len(mq.drain()) == (2 if what == "queue" else 1)


# -- consumer waiting ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_wait(new_mq: Factory, mode: str) -> None:
    _, _, mq = new_mq(mode)
    t0 = time.monotonic()
    assert mq.wait(0.05) == WaitResult(False, ())
    assert time.monotonic() - t0 >= 0.05
    with pytest.raises(Timeout):
        mq.recv(timeout=0.02)

    def later() -> None:
        time.sleep(0.05)
        mq.send_io(E.IO_RX, 1)

    threading.Thread(target=later).start()
    t0 = time.monotonic()
    assert mq.wait(5) == WaitResult(True, ())
    assert time.monotonic() - t0 < 1.0
    assert mq.wait(5).pending  # still pending: wait does not consume
    assert [e.session_index for e in mq.recv(1)] == [1]


@pytest.mark.parametrize("mode", MODES)
def test_wait_also_watches_other_fds(new_mq: Factory, mode: str) -> None:
    _, _, mq = new_mq(mode)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        assert mq.wait(0.02, also_fds=[a.fileno()]) == WaitResult(False, ())
        threading.Timer(0.05, lambda: b.send(b"x")).start()
        t0 = time.monotonic()
        assert mq.wait(5, also_fds=[a.fileno()]) == WaitResult(False, (a.fileno(),))
        assert time.monotonic() - t0 < 1.0
        a.recv(10)
        mq.send_io(E.IO_RX, 3)
        assert mq.wait(5, also_fds=[a.fileno()]) == WaitResult(True, ())
        b.close()  # "VPP died": the app socket hangs up
        assert mq.wait(5, also_fds=[a.fileno()]) == WaitResult(True, (a.fileno(),))
        mq.drain()
        assert mq.wait(5, also_fds=[a.fileno()]) == WaitResult(False, (a.fileno(),))


def test_fileno_and_selectors(new_mq: Factory) -> None:
    _, _, cv = new_mq(CONDVAR)
    with pytest.raises(LocalError):
        cv.fileno()
    assert cv.clear_signal() == 0
    _, _, mq = new_mq(EVENTFD)
    with selectors.DefaultSelector() as sel:
        sel.register(mq.fileno(), selectors.EVENT_READ)
        assert sel.select(0) == []
        mq.send_io(E.IO_RX, 1)
        mq.send_io(E.IO_RX, 2)  # not empty->non-empty: no second signal
        assert len(sel.select(1)) == 1
        assert mq.clear_signal() == 1
        assert sel.select(0) == []
        assert [e.session_index for e in mq.drain()] == [1, 2]
        assert mq.clear_signal() == 0


def test_eventfd_consumer_signals_full_to_not_full(new_mq: Factory) -> None:
    _, _, mq = new_mq(EVENTFD, 2, ((4, 18), (16, 256)))
    mq.send_io(E.IO_TX, 1)
    assert mq.clear_signal() == 1
    mq.send_io(E.IO_TX, 2)  # now full
    mq.drain(max_n=1)  # full -> not full: the consumer writes the eventfd
    assert mq.clear_signal() == 1
    mq.drain()
    assert mq.clear_signal() == 0


def test_bad_sends_are_local_errors(new_mq: Factory) -> None:
    _, _, mq = new_mq(CONDVAR)
    with pytest.raises(LocalError):
        mq.send(b"")
    with pytest.raises(LocalError):
        mq.send(events.encode_io(E.IO_TX, 1), ring=2)
    with pytest.raises(LocalError):
        mq.send(bytes(19), ring=0)  # larger than an IO slot
    with pytest.raises(ValueError):
        mq.send_io(E.CTRL_CONNECT, 1)
    assert mq.size_now() == 0


# -- across processes ------------------------------------------------------------------------------
def _child(body: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    return pid


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _produce(seg: Segment, off: int, fd: int | None, first: int, n: int, tag: int = 0) -> None:
    mq = MessageQueue(seg, off, eventfd=fd)  # the child's own attachment
    for i in range(first, first + n):
        if i % 5 == 0:
            mq.send_ctrl(
                E.CTRL_ACCEPTED_REPLY, context=tag, handle=i, app_session_index=i, timeout=20
            )
        else:
            mq.send_io(E.IO_TX if tag == 0 else E.IO_RX, i, timeout=20)


def _key(e: events.Event) -> tuple[int, int]:
    if e.msg is not None:
        return int(e.msg.context), int(e.msg.handle)
    return (0 if e.type == E.IO_TX else 1), int(e.session_index or 0)


@pytest.mark.parametrize("mode", MODES)
def test_cross_process_in_order(new_mq: Factory, mode: str) -> None:
    seg, off, mq = new_mq(mode, 32, ((32, 18), (8, 256)))
    n = 12000
    pid = _child(lambda: _produce(seg, off, mq.eventfd, 0, n))
    got: list[events.Event] = []
    try:
        while len(got) < n:
            if len(got) % 3000 < 40:  # now and then let the producer fill the queue and block
                time.sleep(0.01)
            got += mq.recv(timeout=20, max_n=40)
    finally:
        assert _exit_code(pid) == 0
    assert [(e.msg.handle if e.msg else e.session_index) for e in got] == list(range(n))
    assert all((e.ring == 1) == (i % 5 == 0) for i, e in enumerate(got))
    d = mq.describe()
    assert d["queue"]["cursize"] == 0 and d["queue"]["head"] == n % 32
    assert [r["head"] for r in d["rings"]] == [(n - n // 5) % 32, (n // 5) % 8]


def test_cross_process_two_producers_share_the_mutex(new_mq: Factory) -> None:
    seg, off, mq = new_mq(CONDVAR, 16, ((16, 18), (4, 256)))
    n = 5000
    pids = [_child(lambda t=t: _produce(seg, off, None, 0, n, tag=t)) for t in (0, 1)]
    got: list[events.Event] = []
    try:
        while len(got) < 2 * n:
            got += mq.recv(timeout=20)
    finally:
        assert [_exit_code(p) for p in pids] == [0, 0]
    for tag in (0, 1):
        assert [i for t, i in map(_key, got) if t == tag] == list(range(n))


def test_robust_mutex_owner_dies_mid_send(new_mq: Factory) -> None:
    seg, off, mq = new_mq(CONDVAR)
    mq.send_io(E.IO_TX, 1)

    def die_mid_send() -> None:
        child = MessageQueue(seg, off)
        words = child._words

        class DieOnStore:  # the first word send_io stores is the ring tail, publishing
            def __getitem__(self, i: int) -> int:
                return words[i]

            def __setitem__(self, i: int, v: int) -> None:
                os._exit(0)  # slot and handle written, nothing published, mutex held

        child._words = DieOnStore()
        child.send_io(E.IO_TX, 666)

    pid = _child(die_mid_send)
    assert _exit_code(pid) == 0
    assert mq.describe()["queue"]["mutex"]["__owner"] == pid  # the dead thread still owns it
    mq.send_io(E.IO_TX, 2, timeout=2)  # recovers (EOWNERDEAD) instead of hanging
    assert mq.recovered_owner_deaths == 1
    assert [e.session_index for e in mq.drain()] == [1, 2]  # no trace of the half send
    d = mq.describe()
    assert d["queue"]["mutex"]["__owner"] == 0 and d["problems"] == []
    for i in range(3, 60):
        mq.send_io(E.IO_TX, i, timeout=2)
    assert [e.session_index for e in mq.recv(1)] == list(range(3, 60))


def test_robust_mutex_owner_death_neither_blocks_a_waiting_consumer_nor_a_producer(
    new_mq: Factory,
) -> None:
    seg, off, mq = new_mq(CONDVAR)

    def lock_and_die() -> None:
        MessageQueue(seg, off)._mutex.lock()
        os._exit(0)

    assert _exit_code(_child(lock_and_die)) == 0
    t0 = time.monotonic()
    assert mq.wait(0.02) == WaitResult(False, ())  # polls: never touches the mutex
    assert time.monotonic() - t0 < 0.5
    assert mq.recovered_owner_deaths == 0
    mq.send_io(E.IO_RX, 5)  # the producer recovers it
    assert mq.recovered_owner_deaths == 1
    assert [e.session_index for e in mq.recv(1)] == [5]


def test_a_peer_sitting_on_the_mutex_delays_wait_and_drain_only_boundedly(
    new_mq: Factory,
) -> None:
    seg, off, mq = new_mq(CONDVAR, 2, ((4, 18), (16, 256)))
    mq.send_io(E.IO_RX, 1)
    mq.send_io(E.IO_RX, 2)  # full: draining it owes producers a broadcast, under the mutex
    r, w = os.pipe()

    def sit() -> None:
        MessageQueue(seg, off)._mutex.lock()
        os.write(w, b"!")
        time.sleep(2.5)  # alive, holding it; then exits still holding it

    pid = _child(sit)
    try:
        os.read(r, 1)
        t0 = time.monotonic()
        assert [e.session_index for e in mq.drain()] == [1, 2]
        assert time.monotonic() - t0 < 1.8  # the broadcast is owed, not waited for
        t0 = time.monotonic()
        assert mq.wait(0.2) == WaitResult(False, ())
        assert time.monotonic() - t0 < 0.6
    finally:
        assert _exit_code(pid) == 0
        os.close(r)
        os.close(w)
    assert mq.drain() == []  # pays the owed broadcast, recovering the mutex from the dead peer
    assert mq.recovered_owner_deaths == 1
    mq.send_io(E.IO_RX, 3)
    assert [e.session_index for e in mq.recv(1)] == [3]


# -- hostile headers -------------------------------------------------------------------------------
def _attach(seg: Segment, off: int, fd: int | None = None) -> MessageQueue:
    return MessageQueue(seg, off, eventfd=fd)


@pytest.mark.parametrize(
    "field, value",
    [
        ("maxsize", 0),
        ("maxsize", 0xFFFFFFFF),  # the handles would run past the segment
        ("maxsize", 5000),  # handles fit, the rings no longer do
        ("elsize", 16),
        ("head", 64),
        ("tail", 1000),
        ("cursize", 65),
    ],
)
def test_hostile_queue_header(field: str, value: int) -> None:
    seg, off, _ = build_mq(64, seg_size=1 << 16)
    poke_q(seg, off, field, value)
    with pytest.raises(SharedMemoryError):
        _attach(seg, off)


@pytest.mark.parametrize(
    "ring, field, value",
    [
        (0, "nitems", 0),
        (1, "nitems", 1 << 20),  # ring 1 does not fit the segment
        (0, "nitems", 63),  # ring 1 shifts to a misaligned header
        (0, "elsize", 17),
        (1, "elsize", 255),
        (1, "head", 32),
        (0, "tail", 64),
        (1, "cursize", 33),
    ],
)
def test_hostile_ring_header(ring: int, field: str, value: int) -> None:
    seg, off, mq = build_mq(64, seg_size=1 << 16)
    poke_ring(mq, ring, field, value)
    with pytest.raises(SharedMemoryError):
        _attach(seg, off)


def test_hostile_placement_and_kind() -> None:
    seg, off, _ = build_mq(64, seg_size=1 << 16)
    view = seg.view
    for bad in (0, 64, off + 4, seg.size, seg.size - seg.fsh - 100):
        with pytest.raises(SharedMemoryError):
            _attach(seg, bad)
    SVM_MSG_Q_SHARED["n_rings"].put(view, seg.fsh + off, 3)
    with pytest.raises(SharedMemoryError):
        _attach(seg, off)
    SVM_MSG_Q_SHARED["n_rings"].put(view, seg.fsh + off, 2)
    # A mutex that is not robust + process-shared is refused in condvar mode only.
    from pyvcl.wire.mq import PTHREAD_MUTEX_FIELDS

    PTHREAD_MUTEX_FIELDS["__kind"].put(view, seg.fsh + off + _Q_OFF, 0)
    with pytest.raises(SharedMemoryError):
        _attach(seg, off)
    fd = os.eventfd(0)
    try:
        assert _attach(seg, off, fd).mode == EVENTFD
    finally:
        os.close(fd)


def _two_pending(mode_fd: int | None = None) -> tuple[Segment, int, MessageQueue]:
    seg, off, mq = build_mq(8, ((8, 18), (4, 256)), eventfd=mode_fd)
    mq.send_io(E.IO_TX, 1)
    mq.send_ctrl(E.CTRL_DISCONNECT, handle=2)
    return seg, off, mq


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda mq: poke_handle(mq, 1, 1, 4), id="elt-beyond-nitems"),
        pytest.param(lambda mq: poke_handle(mq, 0, 7, 0), id="ring-beyond-n_rings"),
        pytest.param(lambda mq: poke_handle(mq, 1, 1, 3), id="elt-not-at-ring-head"),
        pytest.param(lambda mq: poke_ring(mq, 0, "head", 3), id="wrong-ring-head"),
        pytest.param(lambda mq: poke_ring(mq, 1, "head", 9), id="ring-head-beyond-nitems"),
        pytest.param(lambda mq: poke_ring(mq, 1, "cursize", 0), id="ring-cursize-too-small"),
        pytest.param(lambda mq: poke_handle(mq, 1, 0, 1), id="two-for-a-one-item-ring"),
    ],
)
def test_hostile_handles_leave_the_queue_untouched(corrupt: Callable[[MessageQueue], None]) -> None:
    _, _, mq = _two_pending()
    corrupt(mq)
    before = mq.describe()
    with pytest.raises(SharedMemoryError):
        mq.drain()
    after = mq.describe()
    assert after == before and (after["queue"]["head"], after["queue"]["cursize"]) == (0, 2)


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda mq: poke_handle(mq, 0, 1, 4), id="elt-beyond-nitems"),
        pytest.param(lambda mq: poke_handle(mq, 0, 7, 0), id="ring-beyond-n_rings"),
        pytest.param(lambda mq: poke_handle(mq, 0, 0, 3), id="elt-not-at-ring-head"),
        pytest.param(lambda mq: poke_ring(mq, 0, "head", 3), id="wrong-ring-head"),
        pytest.param(lambda mq: poke_ring(mq, 0, "head", 9), id="ring-head-beyond-nitems"),
        pytest.param(lambda mq: poke_ring(mq, 0, "cursize", 0), id="ring-cursize-too-small"),
        pytest.param(lambda mq: poke_ring(mq, 0, "cursize", 9), id="ring-cursize-too-large"),
    ],
)
@pytest.mark.parametrize("how", ["one-pending", "max_n-1"])
def test_hostile_handle_of_a_single_drain(
    corrupt: Callable[[MessageQueue], None], how: str
) -> None:
    """The one-message drain (the data path's usual case) checks as much as the batch path."""
    if how == "one-pending":
        _, _, mq = build_mq(8, ((8, 18), (4, 256)))
        mq.send_io(E.IO_TX, 1)
    else:
        _, _, mq = _two_pending()
    corrupt(mq)
    before = mq.describe()
    with pytest.raises(SharedMemoryError):
        mq.drain() if how == "one-pending" else mq.drain(max_n=1)
    assert mq.describe() == before


def test_hostile_indices_after_attach() -> None:
    seg, off, mq = _two_pending()
    poke_q(seg, off, "cursize", 9)
    with pytest.raises(SharedMemoryError):
        mq.drain()
    with pytest.raises(SharedMemoryError):
        mq.send_io(E.IO_TX, 3)
    with pytest.raises(SharedMemoryError):
        mq.pending()
    with pytest.raises(SharedMemoryError):
        mq.wait(0)
    assert mq.describe()["problems"]  # the inspector reports instead of raising
    poke_q(seg, off, "cursize", 2)
    poke_q(seg, off, "head", 8)
    with pytest.raises(SharedMemoryError):
        mq.drain()
    poke_q(seg, off, "head", 0)
    poke_q(seg, off, "tail", 8)
    with pytest.raises(SharedMemoryError):
        mq.send_io(E.IO_TX, 3)
    poke_q(seg, off, "tail", 2)
    poke_ring(mq, 1, "tail", 4)
    with pytest.raises(SharedMemoryError):
        mq.send_ctrl(E.CTRL_DISCONNECT, handle=3)
    poke_ring(mq, 1, "tail", 1)
    with pytest.raises(SharedMemoryError):
        mq.peek_slot(0, 8)
    assert [e.type for e in mq.drain()] == [E.IO_TX, E.CTRL_DISCONNECT]


# -- real VPP memory -------------------------------------------------------------------------------
def _check_payload(ev: events.Event, payload: dict[str, Any]) -> None:
    ours = ev.msg._asdict()
    for k, v in payload.items():
        if k.endswith("_str") or k.endswith("_raw"):
            continue
        if f"{k}_raw" in payload:  # ports: compare the stored (network order) value
            assert ours[k] == payload[f"{k}_raw"], k
        elif isinstance(v, dict):
            for sk, sv in v.items():
                if sk == "port":
                    assert socket.ntohs(ours[f"{k}_{sk}"]) == sv, (k, sk)
                elif isinstance(sv, int):
                    assert ours[f"{k}_{sk}"] == sv, (k, sk)
        elif isinstance(v, str) and k == "segment_name":
            assert ours[k].rstrip(b"\0").decode() == v
        elif isinstance(v, str):
            assert ours[k] == bytes.fromhex(v), k
        else:
            assert ours[k] == v, k


def _check_slot(mq: MessageQueue, ring: int, slot: dict[str, Any]) -> events.Event:
    ev = mq.peek_slot(ring, slot["elt"])
    assert ev.type == slot["event_type"] and ev.raw[1] == slot["postponed"]
    if "session_index" in slot:
        assert ev.session_index == slot["session_index"]
    if "payload" in slot:
        _check_payload(ev, slot["payload"])
        end = SESSION_EVENT_PAYLOAD_OFFSET + CTRL_PAYLOADS[ev.type].size
        assert sum(1 for b in ev.raw[end:] if b) == slot["nonzero_bytes_after_payload"]
    if "rpc_fp" in slot:  # VPP-internal event in ring 0: kept raw
        assert ev.msg is None and int.from_bytes(ev.raw[2:10], "little") == slot["rpc_fp"]
    return ev


def _snapshot_mqs(name: str) -> Iterator[tuple[dict[str, Any], MessageQueue]]:
    snap = load_snapshot(name)  # not closed: the queues yielded use its memory
    for m in snap.meta["mqs"]:
        yield m, MessageQueue(snap.segment(m["segment"]), m["fsh_offset"], name=m["role"])


def _same_where_shared(ours: Any, theirs: Any, where: str = "") -> int:
    """Assert that two describers' dicts agree on every key both have (recursing into dicts and
    lists of dicts); returns how many leaf values were compared."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return sum(
            _same_where_shared(ours[k], theirs[k], f"{where}.{k}") for k in ours.keys() & theirs
        )
    if isinstance(ours, list) and ours and all(isinstance(x, dict) for x in ours):
        assert isinstance(theirs, list) and len(ours) == len(theirs), where
        return sum(
            _same_where_shared(a, b, f"{where}[{i}]")
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
        )
    assert ours == theirs, where
    return 1


def _agree(m: dict[str, Any], mq: MessageQueue) -> None:
    d = mq.describe()
    q = m["queue"]
    assert d["problems"] == []
    assert d["length"] == mq.size == m["length"]
    # Same names for the same things (pyvcl.mq.describe's docstring): everything shared agrees.
    assert _same_where_shared(d, m) >= 30
    for theirs in m["rings"]:
        for slot in theirs["slots"]:
            _check_slot(mq, theirs["index"], slot)
    live = {(r["index"], s["elt"]): s for r in m["rings"] for s in r["slots"] if s["live"]}
    pending = mq.pending()
    assert len(pending) == len(q["pending_handles"]) == len(live)
    for ev, h in zip(pending, q["pending_handles"], strict=True):
        slot = live[(h["ring_index"], h["elt_index"])]
        assert ev == _check_slot(mq, h["ring_index"], slot)


@cross_check("vpp-v26.06", "snapshots")
def test_ct_server_connected_snapshot() -> None:
    mqs = dict((m["role"], (m, mq)) for m, mq in _snapshot_mqs("ct-server-connected"))
    m, app = mqs["app worker mq"]
    _agree(m, app)
    d = app.describe()
    assert (d["queue"]["head"], d["queue"]["tail"], d["queue"]["cursize"]) == (8, 8, 0)
    assert d["queue"]["maxsize"] == 2048 and d["queue"]["mutex"]["__kind"] == 144
    assert [(r["nitems"], r["head"]) for r in d["rings"]] == [(2048, 2), (128, 6)]
    assert app.pending() == []
    history = [app.peek_slot(1, e) for e in range(6)]
    assert [e.name for e in history] == [
        "CTRL_BOUND",
        "CTRL_BOUND",
        "CTRL_APP_ADD_SEGMENT",
        "CTRL_ACCEPTED",
        "CTRL_APP_ADD_SEGMENT",
        "CTRL_ACCEPTED",
    ]
    accepted = history[5].msg
    assert (accepted.context, accepted.handle, accepted.listener_handle) == (2, 5, 1)
    assert (accepted.server_rx_fifo, accepted.server_tx_fifo) == (6272, 6080)
    assert accepted.segment_handle == 0x400000000 and accepted.vpp_event_queue_address == 320
    assert socket.ntohs(accepted.lcl_port) == 7778 and accepted.rmt_is_ip4 == 1
    assert history[4].msg.segment_name.rstrip(b"\0") == b"seg-2-2-5"
    assert [app.peek_slot(0, e).session_index for e in (0, 1)] == [3, 3]
    m, vpp = mqs["vpp worker mq 0"]
    _agree(m, vpp)
    assert vpp.peek_slot(1, 3).msg.app_session_index == 3
    assert [vpp.peek_slot(0, e).type for e in range(10)] == [5, 5, 5, 1, 1, 1, 1, 5, 5, 5]


@cross_check("vpp-v26.06", "snapshots")
def test_snapshot_pending_messages_are_consumed_like_vcl() -> None:
    # mutex/condvar mode client at vppcom_app_destroy: RX then APP_DEL_SEGMENT still queued.
    mqs = dict((m["role"], (m, mq)) for m, mq in _snapshot_mqs("ct-noevfd-client-closing"))
    m, app = mqs["app worker mq"]
    _agree(m, app)
    pending = app.pending()
    assert [e.name for e in pending] == ["IO_RX", "CTRL_APP_DEL_SEGMENT"]
    got = app.drain()
    assert got == pending
    d = app.describe()
    assert (d["queue"]["head"], d["queue"]["cursize"]) == (11, 0)
    assert [(r["head"], r["cursize"]) for r in d["rings"]] == [(4, 0), (7, 0)]


@cross_check("vpp-v26.06", "snapshots")
@pytest.mark.parametrize("name", snapshot_names())
def test_every_snapshot_agrees(name: str) -> None:
    for m, mq in _snapshot_mqs(name):
        _agree(m, mq)


@pytest.mark.parametrize("name", own_snapshot_names())
def test_own_snapshot_queues_consumed_like_vcl(name: str) -> None:
    """Each queue of the project's own snapshots (tools/record_fixtures.py), attached as a
    `MessageQueue`: no problem, the pending events the live process showed (the recording's
    ``live``), consumed in that order, leaving the queue empty."""
    with load_own_snapshot(name) as snap:
        live = {m["role"]: m for m in snap.meta["live"]["mqs"]}
        for region in snap.mq_regions():
            role = region.info["role"]
            mq = MessageQueue(snap.segment(region.segment), region.fsh_offset, name=role)
            d = mq.describe()
            assert d["problems"] == [] and d["length"] == region.length
            pending = mq.pending()
            assert [e.name for e in pending] == live[role]["pending"]
            assert len(pending) == d["queue"]["cursize"] == live[role]["queued"]
            assert mq.drain() == pending
            assert mq.describe()["queue"]["cursize"] == 0 and mq.pending() == []


@cross_check("vpp-v26.06", "snapshots")
def test_attaches_to_pyvcl_snapshot_segments() -> None:
    """The project's own loader refuses bytes that were not captured: attaching, describing
    and decoding read nothing outside the captured queue."""
    with load_snapshot("ct-full-server-stalled") as snap:
        for m in snap.meta["mqs"]:
            mq = MessageQueue(snap.segment(m["segment"]), m["fsh_offset"], name=m["role"])
            _agree(m, mq)
            if m["role"] == "app worker mq":
                (ev,) = mq.pending()
                assert ev.name == "IO_RX" and mq.drain() == [ev]


def test_two_threads_waiting_on_one_eventfd_queue() -> None:
    """Misuse (the queue has one consumer), but it must not break: each concurrent waiter
    gets its own poll object instead of a RuntimeError from a shared one."""
    fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    r, w = os.pipe()
    try:
        _, _, mq = build_mq(8, ((8, 18), (4, 256)), eventfd=fd)
        results: list[object] = []

        def waiter() -> None:
            try:
                results.append(mq.wait(5, also_fds=(r,)).pending)
            except Exception as e:  # the failure this test is about
                results.append(e)

        threads = [threading.Thread(target=waiter) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        mq.send_io(E.IO_TX, 1)
        for t in threads:
            t.join(10)
        assert results == [True, True]
    finally:
        for f in (fd, r, w):
            os.close(f)


@pytest.mark.parametrize("mode", MODES)
def test_send_io_writes_the_whole_slot(new_mq: Factory, mode: str) -> None:
    # send_io writes the slot with one pack: what was in it before must not show through.
    seg, _, mq = new_mq(mode, 8, ((4, 18), (4, 256)))
    io = mq._rings[MqRing.IO_EVT]
    seg.view[io.data : io.data + 4 * 18] = b"\xff" * (4 * 18)
    for i in range(4):
        mq.send_io(E.IO_TX, 0x01020304 + i)
    got = mq.drain(decode=False)
    assert got == [(0, events.encode_io(E.IO_TX, 0x01020304 + i)) for i in range(4)]
    with pytest.raises(ValueError, match="not a u32"):
        mq.send_io(E.IO_TX, 1 << 32)
    assert mq.size_now() == 0 and mq.describe()["problems"] == []  # refused before queueing


def test_send_io_broadcasts_only_to_a_waiting_consumer(
    new_mq: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With nobody waiting on the condvar, send_io skips glibc's broadcast; a consumer waiting
    # as C VCL's svm_msg_q_wait does (mutex held, condvar wait) is woken.
    _, _, mq = new_mq(CONDVAR)
    pt = mq._cond._pt
    real, calls = pt.broadcast, []

    def broadcast(addr: int) -> int:
        calls.append(addr)
        return real(addr)

    monkeypatch.setattr(pt, "broadcast", broadcast)
    mq.send_io(E.IO_TX, 1)
    assert calls == [] and [e.session_index for e in mq.drain()] == [1]
    ready, seen, errors = threading.Event(), [], []

    def consumer() -> None:
        try:
            mq._mutex.lock()
            try:
                ready.set()  # set with the mutex held: send_io locks after the wait releases it
                deadline = time.monotonic() + 10
                while mq.size_now() == 0 and time.monotonic() < deadline:
                    mq._cond.wait(mq._mutex, 1)
                seen.append(mq.size_now())
            finally:
                mq._mutex.unlock()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=consumer)
    t.start()
    assert ready.wait(10)
    t0 = time.monotonic()
    mq.send_io(E.IO_TX, 2)
    t.join(15)
    assert errors == [] and seen == [1] and len(calls) == 1
    assert time.monotonic() - t0 < 0.9  # woken by the broadcast, not by its 1 s wait slice


@pytest.mark.parametrize("mode", MODES)
def test_a_queue_of_a_closed_segment_raises_local_error(new_mq: Factory, mode: str) -> None:
    # The hot paths use addresses looked up at attach: once the segment is unmapped they must
    # refuse with a clear error, not touch the old addresses (a crash) or raise ValueError.
    seg, _, mq = new_mq(mode)
    mq.send_io(E.IO_TX, 1)
    seg.close()
    with pytest.raises(LocalError):
        mq.send_io(E.IO_TX, 2)
    with pytest.raises(LocalError):
        mq.drain()
