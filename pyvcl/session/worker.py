"""The blocking adapter: one app worker's event loop and data path.

`SessionWorker` feeds the worker mq's events to the IO-free `SessionLayer`, sends the actions
it returns on the right VPP queue, and maps the fifos each session names.  Threads may block
on different sessions at once: whichever thread needs to wait becomes the *poller* (the only
consumer of the app mq, as the protocol requires) while the others sleep on a condition; after
every round of events the poller wakes them all to re-check what they wait for.

The data path follows C VCL (``vppcom_session_read_internal`` / ``write_inline``):
- read: dequeue; when the fifo is drained clear ``has_event`` so VPP sends the next RX event;
  then, if the producer asked for a dequeue notification (TCP zero window, a blocked
  cut-through writer), send it an RX event (protocol.md 4.7, gotcha 10).
- write: enqueue; send a TX event only when ``has_event`` goes 0 -> 1; when the fifo is full,
  ask for a dequeue notification and wait for VPP's TX event.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from ..app import App
from ..errors import (
    BrokenPipe,
    ConnectionReset,
    LocalError,
    NotConnected,
    RemoteError,
    SessionLayerError,
    SessionRefused,
    Timeout,
    VclError,
    VppDisconnected,
    WouldBlock,
    session_error,
)
from ..fifo import Fifo
from ..fifo.fastpath import after_read, make_dequeue, make_dequeue_into
from ..interrupts import interruptible
from ..mq.events import Event
from ..mq.queue import MessageQueue
from ..wire.enums import DeqNotify
from ..wire.enums import SessionEvent as E
from .core import Action, Session, SessionLayer, State
from .replay import watch_layer

POLL_SLICE = 0.05  # longest single wait of the poller, so new waiters' deadlines are honoured
_READY = State.READY
_PEER_CLOSED = State.PEER_CLOSED


class _Condition(threading.Condition):
    """A condition that knows whether anyone waits on it: the poller notifies after every
    round, and with nobody waiting (a one-thread program) that call is skipped."""

    def __init__(self, lock: threading.RLock) -> None:
        super().__init__(lock)
        self.waiting = 0  # changed with the lock held, like everything else here

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting += 1
        try:
            return super().wait(timeout)
        finally:
            self.waiting -= 1


class SessionWorker:
    def __init__(self, app: App) -> None:
        self.app = app
        self.layer = SessionLayer(app.api_client_handle)
        watch_layer(self.layer)  # records the core's calls when tracing is on (else nothing)
        self.lock = threading.RLock()
        self.cond = _Condition(self.lock)
        self._polling = False
        self._fifos: dict[int, tuple[Fifo, Fifo]] = {}
        self.dead: VclError | None = None  # set when VPP went away
        # Called (lock held) after each round of events handled, with those events: how an
        # adapter that mirrors session state elsewhere (pyvcl.interpose) learns of changes.
        self.on_events: Callable[[list[Event]], None] | None = None
        self.busy_poll = 0.0  # seconds a blocking wait spins before sleeping (0: never)
        self.reserved_for: int | None = None  # the only thread that may poll (`reserve_poller`)

    @property
    def polling(self) -> bool:
        """Whether a thread is the poller right now (the app mq's consumer)."""
        return self._polling

    # -- event loop --------------------------------------------------------------------------
    def execute(self, actions: list[Action]) -> None:
        for a in actions:
            mq = self.app.ctrl_mq if a.mq_offset is None else self.vpp_mq(a.mq_offset)
            mq.send_ctrl(a.event_type, **a.fields)

    def vpp_mq(self, offset: int) -> MessageQueue:
        for mq in self.app.vpp_mqs:
            if mq.offset == offset:
                return mq
        raise RemoteError(f"VPP named a message queue at {offset:#x} that does not exist")

    @interruptible
    def wait_until(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``ready()`` (called with the lock held) is true; False on timeout.

        With `busy_poll` (seconds) the poller first spins for that long -- ``ready()`` and a
        non-blocking look at the app mq, back to back -- before it sleeps on the app mq: a
        reader sees the peer's bytes in the fifo without waiting for VPP's event and the
        wake-up (docs/busy-polling.md)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        spin_end = None
        with self.lock:
            while True:
                if self.dead is not None:
                    raise self.dead
                if ready():
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if self._polling or (self.reserved_for is not None and self._reserved_elsewhere()):
                    # Re-check every slice even unwoken: the poller may sleep long (the
                    # pump of pyvcl.interpose does), and a wake-up VPP owes us can be lost
                    # (a cut-through dequeue notification, see _ask_for_room).
                    self.cond.wait(POLL_SLICE if remaining is None else min(remaining, POLL_SLICE))
                    continue
                wait = POLL_SLICE if remaining is None else min(remaining, POLL_SLICE)
                if self.busy_poll:
                    now = time.monotonic()
                    if spin_end is None:
                        spin_end = now + self.busy_poll
                    if now < spin_end:
                        wait = 0.0
                if self._poll_round(wait, ready):
                    return True

    def _poll_round(self, timeout: float, ready: Callable[[], bool] | None = None) -> bool:
        """Become the poller for one wait on the app mq (lock held on entry and exit).

        With ``ready`` (the waiter's condition), when the app mq was empty and its signal
        came, ``ready()`` is looked at *before* the events are taken: a reader whose bytes are
        in the fifo goes on at once (True is returned), and the events (already acted on by
        VPP) are handled at the next wait, off the round trip's path; the sleep is
        `App.nap`, which leaves even the eventfd's reset to then.  Not when an adapter
        mirrors session state from the events (`on_events`): it must see them now."""
        self._polling = True
        try:
            self.lock.release()
            try:
                events: list[Event] | None
                if ready is not None and timeout and self.on_events is None:
                    events = self.app.poll(0)
                    if not events:
                        self.app.nap(timeout)
                        events = None  # (look at ready() first)
                else:
                    events = self.app.poll(timeout)
            finally:
                self.lock.acquire()
            if events is None:
                if ready is not None and ready():
                    return True
                events = self.app.poll(0)
            for ev in events:
                self.execute(self.layer.handle_event(ev))
            if events and self.on_events is not None:
                self.on_events(events)
        except VppDisconnected as e:
            self._vpp_gone(e)
        finally:
            self._polling = False
            if self.cond.waiting:
                self.cond.notify_all()
        return False

    def pump(self) -> None:
        """Handle whatever events are queued now, without waiting."""
        self.wait_until(lambda: True, 0)
        with self.lock:
            if not self._polling:
                self._poll_round(0)

    def _vpp_gone(self, e: VclError) -> None:
        self.dead = VppDisconnected(f"VPP went away: {e.strerror}")
        for s in self.layer.sessions.values():
            if s.state not in (State.CLOSED, State.FAILED):
                s.state = State.RESET
        self._fifos.clear()

    # -- fifos ------------------------------------------------------------------------------
    def fifos(self, s: Session) -> tuple[Fifo, Fifo]:
        if s.released:  # (callers look first; this keeps a missed look out of VPP's memory)
            raise NotConnected("VPP has taken back this session's fifos")
        pair = self._fifos.get(s.index)
        if pair is not None:
            return pair
        ref = s.fifos
        if ref is None:
            raise LocalError("session has no fifos (not connected)")
        seg = self.app.segments.get(ref.segment_handle)
        if seg is None:
            raise RemoteError(f"session fifos in unknown segment {ref.segment_handle:#x}")
        rx_sig = tx_sig = None
        if ref.signal_segment_handle is not None:
            sig_seg = self.app.segments.get(ref.signal_segment_handle)
            if sig_seg is None or ref.rx_signals is None or ref.tx_signals is None:
                raise RemoteError(f"signal fifos in unknown segment {ref.signal_segment_handle}")
            rx_sig, tx_sig = (sig_seg, ref.rx_signals), (sig_seg, ref.tx_signals)
        pair = (Fifo(seg, ref.rx, signals=rx_sig), Fifo(seg, ref.tx, signals=tx_sig))
        self._fifos[s.index] = pair
        return pair

    def forget(self, s: Session) -> None:
        self._fifos.pop(s.index, None)

    def data_path(self, s: Session) -> DataPath | None:
        """The per-call path of ``s`` (`DataPath`), once it is connected; None before."""
        with self.lock:
            if self.dead is not None or s.state is not _READY or s.freed:
                return None
            rx, tx = self.fifos(s)
            return DataPath(self, s, rx, tx)

    # -- requests with waits -----------------------------------------------------------------
    def request(self, actions: list[Action]) -> None:
        with self.lock:
            if self.dead is not None:
                raise self.dead
            self.execute(actions)

    def wait_state(self, s: Session, states: set[State], timeout: float | None, what: str) -> None:
        if not self.wait_until(lambda: s.state in states or s.state == State.FAILED, timeout):
            raise Timeout(f"{what} timed out after {timeout} s")
        if s.state == State.FAILED:
            raise listen_connect_error(what, s.error, connect=s.is_listener is False)

    # -- data path ---------------------------------------------------------------------------
    def recv_into(self, s: Session, buf: Any, timeout: float | None) -> int:
        """Read into ``buf``; 0 at EOF.  ``timeout`` 0 = non-blocking."""
        if len(buf) == 0:
            return 0
        while True:
            with self.lock:
                self._check_readable(s)
                if s.released:  # VPP freed the fifos (or may): what was unread is gone
                    if s.peer_closed:
                        return 0
                    raise ConnectionReset("connection reset (VPP freed the session)")
                if s.state in (State.READY, State.PEER_CLOSED):
                    rx, _ = self.fifos(s)
                    n = rx.dequeue_into(buf)
                    if n:
                        self._after_read(s, rx, n)
                        return n
                    rx.unset_event()  # drained: VPP must tell us about the next bytes
                    if rx.max_dequeue():
                        continue
                    if s.state == State.PEER_CLOSED or s.shut_rd:
                        return 0
            if timeout == 0:
                raise WouldBlock("no data to read")
            if not self.wait_until(lambda: self._readable(s), timeout):
                raise Timeout("recv timed out")

    def _readable(self, s: Session) -> bool:
        if not s.readable_state or s.shut_rd:
            return True
        rx, _ = self.fifos(s)
        if rx.max_dequeue() or s.state == State.PEER_CLOSED:
            return True
        if s.cut_through and rx.needs_deq_ntf(0):
            # A cut-through writer's request for room reaches our signal words only when VPP
            # handles the writer's TX event (ct_session_tx, which also wakes us), possibly
            # after we read what filled the fifo: answer it now, or the writer waits forever.
            rx.clear_deq_ntf()
            self.vpp_mq(self._mq_of(s)).send_io(E.IO_RX, s.vpp_index)
        # Before every sleep, not just the first: an RX event can arrive after its bytes were
        # read (VPP sets has_event, then queues the event), and a has_event left set makes
        # VPP skip the event for the next bytes (mq_send_io_rx_event).  C VCL does the same in
        # its wait loop (vppcom_session_read_internal).
        rx.unset_event()
        return rx.max_dequeue() > 0

    def _after_read(self, s: Session, rx: Fifo, n: int) -> None:
        if rx.max_dequeue() == 0:
            rx.unset_event()
        if rx.needs_deq_ntf(n):
            rx.clear_deq_ntf()
            self.vpp_mq(self._mq_of(s)).send_io(E.IO_RX, s.vpp_index)

    def _check_readable(self, s: Session) -> None:
        if self.dead is not None and s.state == State.RESET:
            raise self.dead
        if s.state == State.RESET:
            raise ConnectionReset("connection reset by peer")
        if s.state in (State.CLOSING, State.CLOSED) and s.app_closed:
            raise LocalError("session is closed", errno.EBADF)
        if s.state in (
            State.CREATED,
            State.CONNECTING,
            State.LISTEN_PENDING,
            State.LISTENING,
            State.FAILED,
        ):
            raise NotConnected("session is not connected")

    def send(self, s: Session, data: Any, timeout: float | None) -> int:
        """Write as much of ``data`` as fits now (waiting for room first when blocking)."""
        view = memoryview(data).cast("B")
        if not len(view):
            return 0
        while True:
            with self.lock:
                self._check_writable(s)
                _, tx = self.fifos(s)
                n = tx.enqueue(view)
                if n:
                    if tx.set_event():
                        self.vpp_mq(self._mq_of(s)).send_io(E.IO_TX, s.vpp_index)
                    return n
                if timeout == 0:
                    raise WouldBlock("send buffer (tx fifo) is full")
                # Ask to be told once a useful amount is free, not after every dequeue: a
                # wake-up per few bytes would make writer and reader ping-pong through VPP.
                want = min(len(view), max(1, tx.size // 4))
                if self._ask_for_room(s, tx, want):  # room appeared while we asked: go again
                    continue
                seen = s.tx_events
            # The notification may come before ``want`` bytes are free (a cut-through reader
            # uses its own threshold): then write what fits, or ask again.
            woken = functools.partial(self._writable_or_notified, s, want, seen)
            if not self.wait_until(woken, timeout):
                raise Timeout("send timed out")

    def wait_sent(self, s: Session, timeout: float | None) -> bool:
        """Wait until the peer has read everything written so far (the tx fifo is empty), or
        the session can no longer deliver it (closed, reset).  True when the fifo emptied."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.lock:
                if not s.writable_state or s.state == State.PEER_CLOSED:
                    return False
                _, tx = self.fifos(s)
                if tx.max_dequeue() == 0:
                    return True
                if self._ask_for_room(s, tx, tx.size):  # emptied while we asked
                    continue
                seen = s.tx_events
            left = None if deadline is None else deadline - time.monotonic()
            woken = functools.partial(self._writable_or_notified, s, tx.size, seen)
            if (left is not None and left <= 0) or not self.wait_until(woken, left):
                return False

    def _ask_for_room(self, s: Session, tx: Fifo, want: int) -> bool:
        """Request a dequeue notification for when ``want`` bytes are free; True if they are
        free already (checked after asking, so no notification can be missed)."""
        tx.deq_thresh = want
        tx.add_want_deq_ntf(DeqNotify.WANT_DEQ_NOTIF)
        if tx.max_enqueue() >= want:
            return True
        if s.cut_through:
            # The reader checks its own signal words, not ours: VPP copies our request there
            # only when it handles a TX event of ours (ct_session_tx).  Send one even when
            # has_event is set already: VPP leaves it set after a TX it descheduled
            # (session_tx_fifo_custom... TRANSPORT_SND_F_DESCHED), so "an event is pending"
            # does not mean VPP will look at our request again.
            tx.set_event()
            self.vpp_mq(self._mq_of(s)).send_io(E.IO_TX, s.vpp_index)
        return False

    def _writable_or_notified(self, s: Session, want: int, seen: int) -> bool:
        return s.tx_events != seen or self._writable(s, want)

    def _writable(self, s: Session, want: int = 1) -> bool:
        if not s.writable_state:
            return True
        _, tx = self.fifos(s)
        return tx.max_enqueue() >= want

    def _check_writable(self, s: Session) -> None:
        if self.dead is not None and s.state == State.RESET:
            raise self.dead
        if s.state == State.RESET:
            # Like a kernel socket: writing into a connection the peer closed and then reset
            # is a broken pipe; a reset out of the blue is a reset.
            if s.peer_closed:
                raise BrokenPipe("the peer closed the connection")
            raise ConnectionReset("connection reset by peer")
        if s.shut_wr or s.app_closed:
            raise BrokenPipe("cannot send after shutdown or close")
        if s.freed:
            raise NotConnected("VPP freed this session")
        if s.confirmed:  # the transport is gone (CLEANUP(TRANSPORT)) after the peer's close
            raise BrokenPipe("the peer closed the connection")
        if s.state == State.PEER_CLOSED and s.cut_through:
            raise BrokenPipe("the peer closed the connection")
        if not s.writable_state:
            raise NotConnected("session is not connected")

    def _mq_of(self, s: Session) -> int:
        if s.vpp_mq is None:
            raise RemoteError("session has no VPP message queue")
        return s.vpp_mq

    def shutdown_worker(self, reason: VclError, timeout: float = 1.0) -> None:
        """Fail every waiter with ``reason`` and wait (bounded) for the poller to leave the
        app mq, so the app can be closed without pulling fds from under a thread."""
        deadline = time.monotonic() + timeout
        with self.lock:
            if self.dead is None:
                self.dead = reason
            self.cond.notify_all()
            while self._polling and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())

    def reserve_poller(self, timeout: float) -> bool:
        """Let the calling thread alone poll the app mq from now on (for good: it is for
        leaving at interpreter exit, `pyvcl.interpose.leave`).  Call with the lock held.  The
        other threads stop taking the poller's role (a waiter loops as when another thread
        polls); True once the thread polling now has ended its round, False if it has not
        within ``timeout``."""
        self.reserved_for = threading.get_ident()
        deadline = time.monotonic() + timeout
        while self._polling:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.cond.wait(min(left, POLL_SLICE))
        return True

    def _reserved_elsewhere(self) -> bool:
        return self.reserved_for is not None and self.reserved_for != threading.get_ident()

    def close(self, s: Session) -> None:
        with self.lock:
            if self.dead is not None:
                self.layer.sessions.pop(s.index, None)
                self.forget(s)
                return
            with contextlib.suppress(VclError):
                self.execute(self.layer.close(s))
            self.forget(s)

    # -- readiness, for event loops (pyvcl.selector, pyvcl.aio; docs/async.md) --------------
    def readiness(self, s: Session, read: bool = True, write: bool = True) -> tuple[bool, bool]:
        """(readable, writable) as poll(2) says it of a kernel TCP socket: would recv/accept
        or send return without blocking (data, EOF, a pending accept or an error to report;
        room, a connect that ended, an error).  Only the directions asked are computed.

        What is not ready is re-armed, so VPP signals the app mq when it changes: the rx
        fifo's has_event is cleared and the fifo re-checked (as `_readable`), and a full tx
        fifo asks for a dequeue notification (as `send`).  Pump the events first
        (`pump_signalled`)."""
        with self.lock:
            if self.dead is not None:
                return read, write
            try:
                return (read and self._ready_to_read(s), write and self._ready_to_write(s))
            except VclError:
                return read, write  # the call itself will raise it

    def _ready_to_read(self, s: Session) -> bool:
        st = s.state
        if s.is_listener:
            return bool(s.accepted) or st not in (State.LISTENING, State.LISTEN_PENDING)
        if st in (State.CONNECTING, State.ACCEPTING):
            return False
        return self._readable(s)  # (re-arms has_event when not readable)

    def _ready_to_write(self, s: Session) -> bool:
        st = s.state
        if s.is_listener:
            return st not in (State.LISTENING, State.LISTEN_PENDING)
        if st in (State.CONNECTING, State.ACCEPTING):
            return False
        if not s.writable_state:
            return True  # send raises at once
        _, tx = self.fifos(s)
        if tx.max_enqueue():
            return True
        # Wake at a quarter free, as `send` does; any room that appeared meanwhile counts.
        return self._ask_for_room(s, tx, max(1, tx.size // 4)) or tx.max_enqueue() > 0

    def pump_signalled(self) -> bool:
        """For an event loop woken by the app mq's eventfd: reset the eventfd, then handle
        every event queued now, without waiting.  False if another thread is the poller (it
        handles them).  Raises the worker's error once VPP is gone or the app closed."""
        with self.lock:
            if self.dead is not None:
                raise self.dead
            if self._polling or self._reserved_elsewhere():
                return False
            mq = self.app.app_mq
            if mq is not None:
                mq.clear_signal()  # before the drain: what comes after it signals again
            self._poll_round(0)
            return True

    def drain_unattended(self) -> bool:
        """Handle the events queued now, without waiting, unless a thread is the poller or
        holds the reservation (then False): for `pyvcl.session.idle`, when nobody consumes.
        Raises the worker's error once VPP is gone or the app closed."""
        with self.lock:
            if self.dead is not None:
                raise self.dead
            if self._polling or self._reserved_elsewhere():
                return False
            self._poll_round(0)
            return True

    def claim_poller(self) -> bool:
        """Become the poller so the caller may sleep on the app mq's eventfd itself; False
        (the caller must not sleep long) when another thread polls, events are pending or the
        worker is dead.  Call with the lock held, right after `pump_signalled` and the
        readiness checks; then sleep and call `release_poller`."""
        with self.lock:
            mq = self.app.app_mq
            if self._polling or self.dead is not None or mq is None or mq.size_now():
                return False
            if self._reserved_elsewhere():
                return False
            self._polling = True
            return True

    def release_poller(self) -> None:
        with self.lock:
            self._polling = False
            self.cond.notify_all()  # threads waiting for the poller re-check

    def check_vpp(self) -> bool:
        """False when VPP is gone (or the app closed): when the app socket reports VPP's
        close, fail the worker as a poller would (sessions RESET, `dead` set)."""
        if self.dead is None and not self.app.closed and not self.app.sapi.poll_closed():
            return True  # (the usual answer, given without the lock: see Pump._run)
        with self.lock:
            if self.dead is not None or self.app.closed:
                return False
            if not self.app.sapi.poll_closed():
                return True
            self._vpp_gone(VppDisconnected(f"VPP closed the app socket {self.app.sapi.path}"))
            self.cond.notify_all()
            return False


def listen_connect_error(what: str, code: int, connect: bool = False) -> VclError:
    """The error for a failed listen/connect.  Like VCL (vppcom_wait_for_session_state_change),
    every connect failure but "address in use" is reported as ECONNREFUSED; the exception
    keeps VPP's own code (``.code``, ``.name``) for the curious."""
    err = session_error(f"{what} failed", code)
    if connect and err.errno != errno.EADDRINUSE and not isinstance(err, ConnectionRefusedError):
        assert isinstance(err, SessionLayerError)
        return SessionRefused(f"{what} failed", err.code, err.name, errno.ECONNREFUSED)
    return err


class DataPath:
    """The per-call path of one connected session: what `VclSocket` tries first on every
    send/sendall/recv_into/recv, as closures (``send``, ``recv_into``, ``recv``) holding
    everything they use in cell variables: the session, the worker lock's methods, the
    fifos' own per-call closures (`pyvcl.fifo.fastpath`) and the raw ``has_event`` exchange.

    They do the common case only -- a write that fits, a read that finds data -- and return
    -1 (``recv``: None) for everything else (not READY, full, empty, closed, an error to
    raise), so the general path (`SessionWorker.send` / `recv_into`) decides, waits and
    raises as before.  They hold the worker lock like the general path: the poller changes
    session state and answers VPP's reset/disconnect (after which VPP frees the fifos) only
    under that lock, so a state seen READY here stays so until the copy is done.  The fifo
    side is this process's alone (one thread at a time under the lock), and the IO event
    follows C VCL (``vppcom_session_write_inline`` / ``read_internal``): sent only when
    ``has_event`` goes 0 -> 1, cleared when a read drains the fifo (`fastpath.after_read`).
    The state is looked at on every call, so a path kept after the session ended (or its
    app closed, or VPP died) only ever answers -1.
    """

    __slots__ = ("_handle", "_mq", "_s", "_w", "recv", "recv_into", "send")

    send: Callable[[Any], int]
    recv_into: Callable[[Any], int]
    recv: Callable[[int], bytes | None]

    def __init__(self, worker: SessionWorker, s: Session, rx: Fifo, tx: Fifo) -> None:
        self._w = worker
        self._s = s
        self._handle: int | None = None  # the handle ``_mq`` was looked up for (migration)
        self._mq: MessageQueue | None = None
        self.send = self._sender(tx)
        after = after_read(rx, self._rx_notify)
        self.recv_into, self.recv = self._readers(
            make_dequeue_into(rx, after), make_dequeue(rx, after)
        )

    def _vpp_mq(self) -> MessageQueue:
        s = self._s
        if self._mq is None or s.handle != self._handle:
            self._mq = self._w.vpp_mq(self._w._mq_of(s))
            self._handle = s.handle
        return self._mq

    def _rx_notify(self) -> None:
        """The producer asked for a dequeue notification (`fastpath.after_read`)."""
        self._vpp_mq().send_io(E.IO_RX, self._s.vpp_index)

    def _sender(self, tx: Fifo) -> Callable[[Any], int]:
        s, w, vpp_mq = self._s, self._w, self._vpp_mq
        acquire, release = w.lock.acquire, w.lock.release
        enqueue = tx.enqueue
        region, set_flag = tx.signals.event_exchanger(1)
        set_event = tx.signals.set_event  # (checked: raises once the region is closed)

        def send(data: Any) -> int:
            """Write what fits of ``data`` now; -1 when nothing was written (the general
            path then decides: wait, raise, or write)."""
            acquire()
            try:
                if (
                    s.state is not _READY
                    or s.shut_wr
                    or s.app_closed
                    or s.freed
                    or w.dead is not None
                ):
                    return -1
                n = enqueue(data)
                if n <= 0:
                    return -1
                # The exchange (a full barrier) orders our tail store before the flag is
                # read: VPP clears the flag and then reads tail, so one of us sees the other.
                if region.closed:
                    set_event()  # (raises: the memory may be gone)
                elif not set_flag():
                    vpp_mq().send_io(E.IO_TX, s.vpp_index)
                return n
            finally:
                release()

        return send

    def _readers(
        self, dequeue_into: Callable[[Any], int], dequeue: Callable[[int], bytes]
    ) -> tuple[Callable[[Any], int], Callable[[int], bytes | None]]:
        s, w = self._s, self._w
        acquire, release = w.lock.acquire, w.lock.release
        # (``s.freed or s.confirmed`` below is `Session.released` spelled out: no property
        # call on the per-call path)

        def recv_into(view: Any) -> int:
            """Read what is there into ``view``; -1 when nothing is (the general path then
            waits, returns EOF or raises)."""
            acquire()
            try:
                st = s.state
                if (
                    (st is not _READY and st is not _PEER_CLOSED)
                    or s.freed
                    or s.confirmed
                    or w.dead
                ):
                    return -1
                n = dequeue_into(view)
                return n if n > 0 else -1
            finally:
                release()

        def recv(bufsize: int) -> bytes | None:
            """Up to ``bufsize`` bytes that are there now (one copy); None when none are."""
            acquire()
            try:
                st = s.state
                if (
                    (st is not _READY and st is not _PEER_CLOSED)
                    or s.freed
                    or s.confirmed
                    or w.dead
                ):
                    return None
                return dequeue(bufsize) or None
            finally:
                release()

        return recv_into, recv
