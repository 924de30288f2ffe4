"""What the app and its extra workers share: the app socket, the mq VPP posts to, the
segments, polling and segment add/del (`_WorkerBase`), the constants of attaching, and the
release helpers every teardown uses.  `pyvcl.app` builds `App` and `AppWorker` on it."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..api.sapi import SapiSocket
from ..errors import (
    AppSocketError,
    LocalError,
    SharedMemoryError,
    Timeout,
    VclError,
    VppDisconnected,
)
from ..interrupts import interruptible
from ..mq.events import Event
from ..mq.queue import MessageQueue
from ..segment import Segment, describe_fd
from ..wire.enums import SapiMsgType, SessionEvent, SessionFdFlag
from ..wire.segment import FIFO_SEGMENT_HEADER
from ..wire.session import CTRL_PAYLOADS, SEGMENT_NAME_LEN

DEFAULT_RUNTIME_DIR = "/run/vpp"
INVALID_HANDLE = 0xFFFFFFFFFFFFFFFF  # VCL rejects a first segment with this handle
DETACH_SYNC_TIMEOUT = 1.0  # longest wait for VPP to handle our messages before detaching
SEND_FDS_TIMEOUT = 1.0  # longest wait for an added segment's fd (VPP sends it before the event)
SYNC_CONTEXT = 0xFFFFFF00  # contexts of sync_with_vpp's probes (never a session index)
_FSH = FIFO_SEGMENT_HEADER
_FIRST_CTRL = int(SessionEvent.CTRL_RPC)  # event types below are IO events: nothing to do
_ADD_SEGMENT = int(SessionEvent.CTRL_APP_ADD_SEGMENT)
_DEL_SEGMENT = int(SessionEvent.CTRL_APP_DEL_SEGMENT)
# The fds of each role in attach and worker replies are of one kind.
_MEMFD, _EVENTFD = "a memfd", "an eventfd"
_FD_KINDS = {
    SessionFdFlag.VPP_MQ_SEGMENT: _MEMFD,
    SessionFdFlag.MEMFD_SEGMENT: _MEMFD,
    SessionFdFlag.MQ_EVENTFD: _EVENTFD,
    SessionFdFlag.VPP_MQ_EVENTFD: _EVENTFD,
}


def default_app_socket(namespace_id: str = "", runtime_dir: str | None = None) -> Path:
    """Where VPP puts a namespace's app socket: ``<runtime-dir>/app_ns_sockets/<ns>``."""
    env = os.environ.get("VCL_VPP_SAPI_SOCKET")
    if env and not namespace_id and runtime_dir is None:
        return Path(env)
    base = Path(runtime_dir or DEFAULT_RUNTIME_DIR)
    return base / "app_ns_sockets" / (namespace_id or "default")


class _ForkCount:
    """How many forks this process is from the interpreter that imported pyvcl: an App made
    in a parent is not usable in a forked child.  (Compared instead of ``os.getpid()``,
    which glibc no longer caches: a system call on every event poll.)"""

    n = 0

    @classmethod
    def forked(cls) -> None:
        cls.n += 1


os.register_at_fork(after_in_child=_ForkCount.forked)


class _WorkerBase:
    """What worker 0 (`App`) and an extra `AppWorker` share: an app socket, the mq VPP posts this
    worker's events to, and the segments VPP sends over that socket.

    VPP sends a segment's fd on the socket of the app worker the segment is for
    (``app_wrk_send_fd`` uses ``app_wrk->api_client_index``, the worker's own socket), just
    before it queues CTRL_APP_ADD_SEGMENT on that worker's mq (``app_wrk_send_ctrl_evt_fd``).
    So each worker receives and owns its own segments: ``segments`` maps VPP's segment handle
    to the mapping, ``retired_segments`` keeps replaced ones mapped until close, and every fd
    received over the socket is closed on close.
    """

    def __init__(self, sapi: SapiSocket) -> None:
        self.sapi = sapi
        self.pid = os.getpid()
        self._forks = _ForkCount.n  # see _check_usable
        self.segments: dict[int, Segment] = {}
        self.retired_segments: list[Segment] = []
        self._segment_fds: dict[int, int] = {}  # memfds of segments added after attach
        self.fds: list[int] = []  # every other fd we own (first segment memfds, eventfds)
        self.closed = False
        # What poll keeps when acting on an event fails midway (see `_act_on`): events already
        # acted on, events not yet looked at, and the error to raise at the next poll.
        self._ready: list[Event] = []
        self._backlog: list[Event] = []
        self._poll_error: Exception | None = None
        # `nap`'s poll object (event mq eventfd + app socket), and whether its last sleep
        # ended on the eventfd, left set for the next `poll` to reset (see `nap`).
        self._nap_poller: tuple[int, int, Any] | None = None
        self._signal_left = False

    def _check_usable(self) -> None:
        raise NotImplementedError

    def _event_mq(self) -> MessageQueue:
        """The mq VPP posts this worker's events to."""
        raise NotImplementedError

    # -- events ---------------------------------------------------------------------------------
    def poll(self, timeout: float | None = 0.0) -> list[Event]:
        """Events VPP queued for this worker, waiting up to ``timeout`` (None: forever) for the
        first.  Segment add/del events are acted on before they are returned.  Raises
        `VppDisconnected` if VPP closed the app socket.

        A bad event (a control event without its payload, a segment that cannot be mapped)
        loses no other event: this call returns the events before it (if there are none it
        raises the error at once), the next call raises the error, and the call after that
        returns the events after it, each acted on in order."""
        self._check_usable()
        mq = self._event_mq()
        if self._poll_error is not None or self._ready or self._backlog:
            return self._resume()
        if self._signal_left:  # reset before draining: a signal after this is for news
            self._signal_left = False
            mq.clear_signal()
        events = mq.drain()
        if not events and timeout != 0:
            self._wait_on(mq, timeout)
            events = mq.drain()
        if events and mq.size_now():
            # Queued while we drained (a snapshot): they raised no signal, and ours may have
            # been reset already (by `wait`, `nap`'s next poll, a selector's pump).  Whoever
            # sleeps on the eventfd next must wake for them, not sleep past them.
            mq.resignal()
        for ev in events:
            if ev.type >= _FIRST_CTRL:
                return self._act_on(events, [])
        return events

    def wait(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` (None: forever) until events are queued, without taking
        them (`poll` does).  Raises `VppDisconnected` if VPP closed the app socket."""
        self._check_usable()
        if self._poll_error is not None or self._ready or self._backlog:
            return
        self._wait_on(self._event_mq(), timeout)

    @interruptible
    def nap(self, timeout: float) -> None:
        """The poller's sleep between two `poll` calls that found nothing: wait up to
        ``timeout`` seconds for the event mq's signal or VPP closing the app socket
        (`VppDisconnected`), and return at once when either comes, doing nothing else.

        It is `wait` cut to what a blocked reader needs on the way back to its bytes: the
        eventfd is not read and the queue not looked at here.  The eventfd stays set until
        the next `poll`, which resets it before draining (so no signal is lost: VPP signals
        again for any event queued after that), and whoever was woken looks at its own
        condition first.  After a sleep every instruction runs cold on a VM (measured: 5-10x
        slower for some tens of microseconds), so each one left out of this path counts on a
        round trip.  A condvar-mode mq has no eventfd: then it is `wait`."""
        mq = self._event_mq()
        if mq.eventfd is None or self._poll_error is not None or self._ready or self._backlog:
            self.wait(timeout)
            return
        self._check_usable()
        evfd, sfd = mq.eventfd, self.sapi.fileno()
        nap = self._nap_poller
        if nap is None or nap[0] != evfd or nap[1] != sfd:
            poller = select.poll()
            poller.register(evfd, select.POLLIN)
            poller.register(sfd, select.POLLIN | select.POLLPRI)
            nap = self._nap_poller = (evfd, sfd, poller)
        if self._signal_left:
            self._signal_left = False
            mq.clear_signal()
            if mq.size_now():
                return
        for fd, _ in nap[2].poll(max(0, int(timeout * 1000 + 0.999))):
            if fd == evfd:
                self._signal_left = True
            elif self.sapi.poll_closed():
                raise VppDisconnected(f"VPP closed the app socket {self.sapi.path}")

    @interruptible
    def _wait_on(self, mq: MessageQueue, timeout: float | None) -> None:
        woke = mq.wait(timeout, also_fds=(self.sapi.fileno(),))
        if self.sapi.fileno() in woke.fds and self.sapi.poll_closed():
            raise VppDisconnected(f"VPP closed the app socket {self.sapi.path}")

    def _resume(self) -> list[Event]:
        """Carry on where acting on a batch failed: its error, then the rest of the batch."""
        error, self._poll_error = self._poll_error, None
        if error is not None:
            raise error
        ready, backlog = self._ready, self._backlog
        self._ready, self._backlog = [], []
        return self._act_on(backlog, ready)

    def _act_on(self, events: list[Event], done: list[Event]) -> list[Event]:
        """Act on the control events of ``events`` (``done`` were acted on before): map and
        unmap segments, and refuse control events without their payload.

        If one fails, the events before it are returned and its error kept for the next poll
        (raised at once if there are none, or if it is not an `Exception`), and the events
        after it wait in ``_backlog``: a bad event never loses the good ones around it."""
        for i, ev in enumerate(events):
            t = ev.type
            if t < _FIRST_CTRL:
                continue
            try:
                if ev.msg is None and t in CTRL_PAYLOADS:
                    raise SharedMemoryError(
                        f"{self._event_mq().name}: {ev.name} event without its payload (a "
                        "control event type in an IO ring slot)"
                    )
                if t == _ADD_SEGMENT:
                    self._add_segment(ev)
                elif t == _DEL_SEGMENT:
                    self._del_segment(ev)
            except BaseException as e:
                self._backlog = events[i + 1 :]
                handled = done + events[:i]
                if handled and isinstance(e, Exception):
                    self._poll_error = e
                    return handled
                self._ready = handled
                raise
        return done + events if done else events

    def wait_for(self, event_type: int, timeout: float, **match: Any) -> tuple[Event, list[Event]]:
        """Poll until an event of ``event_type`` whose payload fields equal ``match`` arrives;
        return it and every other event seen meanwhile (in order)."""
        deadline = time.monotonic() + timeout
        others: list[Event] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"no {SessionEvent(event_type).name} from VPP within {timeout} s")
            for i, ev in enumerate(events := self.poll(remaining)):
                fields = ev.fields()
                if ev.type == event_type and all(fields.get(k) == v for k, v in match.items()):
                    return ev, others + events[:i] + events[i + 1 :]
            others.extend(events)

    # -- segments (protocol 7.13; vcl_session_app_add/del_segment_handler) -----------------------
    def _add_segment(self, ev: Event) -> None:
        msg = ev.msg
        name = (
            bytes(msg.segment_name[:SEGMENT_NAME_LEN]).split(b"\0", 1)[0].decode(errors="replace")
        )
        if not msg.fd_flags:
            raise AppSocketError(f"segment {name} announced without an fd (unsupported)")
        # VPP sent the fd on this worker's socket just before queueing the event (7.13), so it
        # is already there: not finding it soon is a protocol error, not a slow VPP.
        try:
            fd_msg = self.sapi.recv_expect(SapiMsgType.SEND_FDS, SEND_FDS_TIMEOUT)
        except Timeout:
            raise AppSocketError(
                f"segment {name} announced but no SEND_FDS on the app socket {self.sapi.path}"
            ) from None
        if (n_fds := len(fd_msg.fds)) != 1:
            fd_msg.close_fds()
            raise AppSocketError(f"SEND_FDS for segment {name} carried {n_fds} fds, not 1")
        fd = fd_msg.fds[0]
        try:
            _check_fd_kind(fd, _MEMFD, f"SEND_FDS for segment {name}")
            if msg.segment_handle == INVALID_HANDLE:
                raise AppSocketError(f"segment {name} announced with the invalid handle ~0")
            seg = Segment.map_fd(fd, name=name, handle=msg.segment_handle)
            if seg.size != msg.segment_size:
                seg.close()
                raise AppSocketError(
                    f"segment {name}: {seg.size} bytes mapped, {msg.segment_size} announced"
                )
        except BaseException:
            os.close(fd)
            raise
        old = self.segments.get(msg.segment_handle)
        if old is not None:
            # VPP reuses a handle only once the old segment is gone on its side; sessions of
            # ours may still hold views of it, so retire it rather than unmap under them.
            self.retired_segments.append(old)
        old_fd = self._segment_fds.pop(msg.segment_handle, None)
        if old_fd is not None:
            self.fds.append(old_fd)  # closed with the worker
        self._segment_fds[msg.segment_handle] = fd
        self.segments[msg.segment_handle] = seg

    def _del_segment(self, ev: Event) -> None:
        handle = ev.msg.segment_handle
        seg = self.segments.pop(handle, None)
        fd = self._segment_fds.pop(handle, None)
        if fd is not None:
            os.close(fd)  # the mapping keeps its own reference to the memfd
        if seg is not None:
            if seg is self._event_mq().segment:
                self.retired_segments.append(seg)  # our mq lives there: never unmap it early
            else:
                try:
                    seg.close()
                except LocalError:
                    self.retired_segments.append(seg)  # views of it live on: unmap at close

    def _release_segments(self, cleanup: _Cleanup) -> None:
        """Unmap every segment and close every fd this worker received (every step is run,
        failures are collected in ``cleanup``)."""
        for seg in [*self.segments.values(), *self.retired_segments]:
            cleanup(seg.close)
        self.segments, self.retired_segments = {}, []
        _close_all([*self.fds, *self._segment_fds.values()])
        self.fds, self._segment_fds = [], {}
        self._ready, self._backlog, self._poll_error = [], [], None


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class _Cleanup:
    """Runs release steps, each even if an earlier one failed, and then reports the failures
    as one `VclError` (`done`).  An interrupt (a `BaseException` that is not an `Exception`)
    is re-raised as itself, after the remaining steps."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def __call__(self, step: Any) -> None:
        try:
            step()
        except BaseException as e:
            self.errors.append(e)

    def done(self, what: str) -> None:
        errors, self.errors = self.errors, []
        if errors:
            error = _combined(errors, what)
            del errors
            try:
                raise error
            finally:
                del error  # no reference cycle through this frame


def _combined(errors: list[BaseException], what: str) -> BaseException:
    """The one exception that reports ``errors``: an interrupt as itself, a lone `VclError` as
    itself, else a `VclError` listing them all (the first as its cause)."""
    first = next((e for e in errors if not isinstance(e, Exception)), errors[0])
    if not isinstance(first, Exception) or (len(errors) == 1 and isinstance(first, VclError)):
        return first
    text = "; ".join(
        str(e.strerror) if isinstance(e, VclError) else f"{type(e).__name__}: {e}" for e in errors
    )
    code = first.errno if isinstance(first, VclError) else errno.EIO
    combined = VclError(f"{what}: {text}", code)
    combined.__cause__ = first
    return combined


def _check_fd_kind(fd: int, kind: str, what: str) -> None:
    """Raise `AppSocketError` unless the ``fd`` VPP sent is ``kind``: a memfd (a regular file:
    VPP's segments are memfds, or hugetlbfs files on old kernels) or an eventfd."""
    if kind == _MEMFD:
        try:
            ok = stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            ok = False
        seen = "" if ok else describe_fd(fd)
    else:  # without /proc an eventfd is only "an anonymous inode": accept that
        seen = describe_fd(fd)
        ok = seen in ("anon_inode:[eventfd]", "an anonymous inode")
    if not ok:
        raise AppSocketError(f"{what}: expected {kind}, received fd {fd}, {seen}")


def _check_fd_kinds(fds: dict[SessionFdFlag, list[int]], what: str) -> None:
    """`_check_fd_kind` for every fd of a reply, by its role."""
    for flag, numbers in fds.items():
        for fd in numbers:
            _check_fd_kind(fd, _FD_KINDS[flag], f"{what}: {flag.name} fd")
