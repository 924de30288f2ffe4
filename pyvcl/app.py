"""An attached application: the app socket, the segments VPP mapped for us, and the queues.

`App.attach` follows VCL's ``vcl_sapi_attach`` (protocol.md 7.1): connect the namespace's app
socket, send ATTACH, receive the reply and its fds, map the vpp-mq segment and the app's first
segment, attach the app worker's mq and every VPP worker mq.  `App.poll` then delivers the
session events VPP queues for us, handling segment add/del itself (7.13).  Closing the app (or
the process dying) detaches it: VPP frees everything bound to the socket.  `AppWorker` is an extra
app worker (7.11) with its own socket, mq and segments; it polls and maps segments the same way.

An `App` belongs to the process that attached: a forked child must attach anew (8.5).
"""

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

from .api import live_trace
from .api.messages import (
    AttachOptions,
    AttachReply,
    CertKeyReply,
    WorkerAddDelReply,
    assign_fds,
    encode_attach,
    encode_cert_key_add,
    encode_cert_key_del,
    encode_worker_add_del,
)
from .api.sapi import DEFAULT_TIMEOUT, SapiSocket, encode_frame
from .errors import (
    AppSocketError,
    LocalError,
    SessionLayerError,
    SharedMemoryError,
    Timeout,
    VclError,
    VppDisconnected,
    session_error,
)
from .mq.events import Event
from .mq.queue import MessageQueue
from .segment import Segment, describe_fd
from .vppversion import check_peer_version
from .wire import DEFAULT_VERSION
from .wire.abi import check_live_layouts
from .wire.enums import SapiMsgType, SessionError, SessionEvent, SessionFdFlag
from .wire.segment import FIFO_SEGMENT_HEADER
from .wire.session import CTRL_PAYLOADS, SEGMENT_NAME_LEN

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


class App(_WorkerBase):
    """Worker 0 of an attached app.  Create with `App.attach`; use as a context manager."""

    def __init__(self, sapi: SapiSocket, options: AttachOptions) -> None:
        super().__init__(sapi)
        self.options = options
        self.reply: AttachReply | None = None
        self.vpp_version = DEFAULT_VERSION  # the VPP release spoken to (pyvcl.vppversion)
        self.vpp_segment: Segment | None = None
        self.app_mq: MessageQueue | None = None
        self.vpp_mqs: list[MessageQueue] = []
        self.mq_eventfd: int | None = None
        self.vpp_mq_eventfds: list[int] = []

    # -- attach ---------------------------------------------------------------------------------
    @classmethod
    def attach(
        cls,
        app_socket: str | os.PathLike[str] | None = None,
        options: AttachOptions | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        vpp_version: str | None = None,
        **option_values: Any,
    ) -> App:
        """Attach to VPP.  ``app_socket`` defaults to the namespace socket under /run/vpp;
        ``option_values`` override fields of ``options`` (see `AttachOptions`).
        ``vpp_version`` (else ``$PYVCL_VPP_VERSION``) is the VPP release to expect: a VPP
        that shows another one is refused before anything is sent (`pyvcl.vppversion`)."""
        opts = options or AttachOptions()
        for key, value in option_values.items():
            if not hasattr(opts, key):
                raise TypeError(f"unknown attach option {key!r}")
            setattr(opts, key, value)
        payload = encode_attach(opts)  # validates before we touch the network
        check_live_layouts()  # before anything of VPP's is mapped
        path = app_socket if app_socket is not None else default_app_socket(opts.namespace_id)
        sapi = SapiSocket.connect(path, timeout)
        app = cls(sapi, opts)
        # Tracing (PYVCL_TRACE) wraps this app's own socket and queue objects, and only then:
        # an untraced app runs the same code as ever (pyvcl.api.live_trace).
        tracer = live_trace.active()
        if tracer is not None:
            tracer.watch_sapi(sapi)
        try:
            app.vpp_version = check_peer_version(sapi.fileno(), vpp_version)
            sapi.send(SapiMsgType.ATTACH, payload)
            msg = sapi.recv_expect(SapiMsgType.ATTACH_REPLY)
            app.fds.extend(msg.fds)
            reply = AttachReply.decode(msg.payload)
            if reply.retval:
                raise session_error("VPP refused the attach", reply.retval)
            app._setup(reply, assign_fds(reply.fd_flags, reply.n_fds, msg.fds))
            if tracer is not None:
                assert app.app_mq is not None
                tracer.watch_queue(app.app_mq, "app")
                for i, mq in enumerate(app.vpp_mqs):
                    tracer.watch_queue(mq, f"vpp{i}")
        except BaseException:
            with contextlib.suppress(Exception):  # it releases everything; the cause matters
                app.close()
            raise
        return app

    def _setup(self, reply: AttachReply, fds: dict[SessionFdFlag, list[int]]) -> None:
        self.reply = reply
        if reply.segment_handle == INVALID_HANDLE:
            raise AppSocketError("attach reply names no first segment (handle ~0)")
        if SessionFdFlag.VPP_MQ_SEGMENT not in fds or SessionFdFlag.MEMFD_SEGMENT not in fds:
            raise AppSocketError(f"attach reply lacks segment fds (flags {reply.fd_flags!r})")
        if self.options.use_mq_eventfd and SessionFdFlag.MQ_EVENTFD not in fds:
            raise AppSocketError("asked for an mq eventfd but the attach reply has none")
        _check_fd_kinds(fds, "attach reply")
        self.vpp_segment = Segment.map_fd(fds[SessionFdFlag.VPP_MQ_SEGMENT][0], name="vpp-mq-seg")
        first = Segment.map_fd(fds[SessionFdFlag.MEMFD_SEGMENT][0], handle=reply.segment_handle)
        self.segments[reply.segment_handle] = first
        if SessionFdFlag.MQ_EVENTFD in fds:
            self.mq_eventfd = fds[SessionFdFlag.MQ_EVENTFD][0]
            os.set_blocking(self.mq_eventfd, False)
        self.vpp_mq_eventfds = fds.get(SessionFdFlag.VPP_MQ_EVENTFD, [])
        self.app_mq = MessageQueue(first, reply.app_mq, eventfd=self.mq_eventfd)
        self.vpp_mqs = self._discover_vpp_mqs()
        if not 0 <= reply.vpp_ctrl_mq_thread < len(self.vpp_mqs):
            raise AppSocketError(
                f"ctrl mq thread {reply.vpp_ctrl_mq_thread} but {len(self.vpp_mqs)} VPP mqs"
            )
        if self.vpp_mqs[reply.vpp_ctrl_mq_thread].offset != reply.vpp_ctrl_mq:
            raise AppSocketError(
                f"vpp_ctrl_mq {reply.vpp_ctrl_mq:#x} is not where thread "
                f"{reply.vpp_ctrl_mq_thread}'s mq is"
            )

    def _discover_vpp_mqs(self) -> list[MessageQueue]:
        """VPP's per-thread mqs, equally spaced after the header (fifo_segment_msg_qs_discover)."""
        seg = self.vpp_segment
        assert seg is not None
        h = seg.fifo_header()
        n = int(h.n_mqs)
        if n == 0:
            raise AppSocketError("the vpp-mq segment holds no message queues")
        if self.vpp_mq_eventfds and len(self.vpp_mq_eventfds) != n:
            raise AppSocketError(f"{len(self.vpp_mq_eventfds)} VPP mq eventfds for {n} mqs")
        stride = (int(h.n_reserved_bytes) - int(h.start_byte_index)) // n
        mqs = []
        for i in range(n):
            evfd = self.vpp_mq_eventfds[i] if self.vpp_mq_eventfds else None
            mqs.append(MessageQueue(seg, int(h.start_byte_index) + i * stride, eventfd=evfd))
        return mqs

    # -- properties -------------------------------------------------------------------------
    @property
    def app_index(self) -> int:
        return self._reply.app_index

    @property
    def api_client_handle(self) -> int:
        return self._reply.api_client_handle

    @property
    def ctrl_mq(self) -> MessageQueue:
        return self.vpp_mqs[self._reply.vpp_ctrl_mq_thread]

    @property
    def _reply(self) -> AttachReply:
        self._check_usable()
        assert self.reply is not None
        return self.reply

    def _check_usable(self) -> None:
        if self.closed:
            raise LocalError("this app is detached", errno.EBADF)
        if _ForkCount.n != self._forks:
            raise LocalError(
                "an App cannot be used from a forked child; attach again in the child",
                errno.EBADF,
            )

    # -- events ---------------------------------------------------------------------------------
    def send_ctrl(self, event_type: int, mq: MessageQueue | None = None, **fields: Any) -> None:
        """Queue a control event on ``mq`` (default: the ctrl mq)."""
        self._check_usable()
        (mq or self.ctrl_mq).send_ctrl(event_type, **fields)

    def _event_mq(self) -> MessageQueue:
        self._check_usable()
        assert self.app_mq is not None
        return self.app_mq

    # -- workers and certificates --------------------------------------------------------------
    def add_cert_key(self, cert: bytes, key: bytes, context: int = 0) -> int:
        """Upload a PEM certificate and key; returns the ckpair index for TLS configs."""
        self._check_usable()
        header, blob = encode_cert_key_add(context, cert, key)
        self.sapi.send_pair(encode_frame(SapiMsgType.ADD_DEL_CERT_KEY, header), blob)
        reply = CertKeyReply.decode(
            self.sapi.recv_expect(SapiMsgType.ADD_DEL_CERT_KEY_REPLY).payload
        )
        if reply.retval:
            raise session_error("VPP refused the certificate/key", reply.retval)
        return reply.index

    def del_cert_key(self, index: int, context: int = 0) -> None:
        self._check_usable()
        self.sapi.send(SapiMsgType.ADD_DEL_CERT_KEY, encode_cert_key_del(context, index))
        reply = CertKeyReply.decode(
            self.sapi.recv_expect(SapiMsgType.ADD_DEL_CERT_KEY_REPLY).payload
        )
        if reply.retval:
            raise session_error(f"VPP refused to delete ckpair {index}", reply.retval)

    def add_worker(self, timeout: float = DEFAULT_TIMEOUT) -> AppWorker:
        """Register another app worker over a new app socket connection (protocol.md 7.11)."""
        self._check_usable()
        return AppWorker.add(self, timeout)

    # -- teardown -------------------------------------------------------------------------------
    def detach(self) -> None:
        """Tell VPP we leave (APP_DETACH), then release everything (`close`), even if the
        goodbye fails.  Idempotent."""
        if self.closed:
            return
        try:
            if os.getpid() == self.pid and self.reply is not None and self.vpp_mqs:
                with contextlib.suppress(VclError, OSError):
                    self.sync_with_vpp(DETACH_SYNC_TIMEOUT)
                    self.send_ctrl(
                        SessionEvent.CTRL_APP_DETACH, client_index=self.api_client_handle
                    )
        finally:
            self.close()

    def sync_with_vpp(self, timeout: float) -> bool:
        """Wait until VPP has handled everything we queued on its mqs; True if it did.

        VPP v26.06 frees the app as soon as its socket closes, and a message of ours it
        handles afterwards (an ACCEPTED_REPLY, say) can crash it
        (session_mq_accepted_reply_handler dereferences the freed app worker).  VPP handles
        each mq's events in order, so an UNLISTEN of a handle that cannot exist, answered by
        an UNLISTEN_REPLY, marks the point where all earlier messages were handled.  Events
        that arrive meanwhile are consumed (this is for teardown).

        With worker threads the main thread's mq is left out: VPP then polls it outside the
        worker barrier, and a control request there (where C VCL never sends one: its ctrl mq
        is a worker's) corrupts the main thread's event list, and VPP dies with SIGSEGV in
        session_queue_node_fn.  Nothing of ours needs ordering there: with workers, every
        session an app holds, TCP or cut-through, lives on a worker (ct_session_connect)."""
        probes = self._sync_probe_mqs()
        contexts = {SYNC_CONTEXT + i for i in probes}
        deadline = time.monotonic() + timeout
        for i in probes:
            # Waits (within the timeout) for a lock VPP holds a moment or a full queue: a
            # probe given up at once left the detach unsynced whenever VPP was busy.
            self.vpp_mqs[i].send_ctrl(
                SessionEvent.CTRL_UNLISTEN,
                client_index=self.api_client_handle,
                context=SYNC_CONTEXT + i,
                handle=INVALID_HANDLE,
                timeout=max(0.0, deadline - time.monotonic()),
            )
        while contexts:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for ev in self.poll(remaining):
                if ev.type == SessionEvent.CTRL_UNLISTEN_REPLY:
                    contexts.discard(ev.msg.context)
        return True

    def _sync_probe_mqs(self) -> list[int]:
        """Indices of the VPP mqs `sync_with_vpp` probes: all but the main thread's, unless
        the main thread's is the ctrl mq (VPP without workers)."""
        main_is_ctrl = self._reply.vpp_ctrl_mq_thread == 0
        return [i for i in range(len(self.vpp_mqs)) if i != 0 or main_is_ctrl]

    def close(self) -> None:
        """Release the socket, mappings and fds without messaging VPP (closing the socket
        detaches us anyway).  Idempotent.

        Every one is released even if releasing another fails; then one `VclError` reports
        what failed (a `LocalError` EBUSY for a segment whose views are still alive: it stays
        mapped until they are released)."""
        if self.closed:
            return
        self.closed = True
        cleanup = _Cleanup()
        for mq in [self.app_mq, *self.vpp_mqs]:
            if mq is not None:
                cleanup(mq.close)
        self.app_mq, self.vpp_mqs = None, []
        if self.vpp_segment is not None:
            cleanup(self.vpp_segment.close)
            self.vpp_segment = None
        self._release_segments(cleanup)
        cleanup(self.sapi.close)
        tracer = live_trace.active()
        if tracer is not None:
            tracer.record("note", what="app closed")
            tracer.flush()
        cleanup.done(f"closing {self!r}")

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __repr__(self) -> str:
        state = "detached" if self.closed else f"app_index={self.reply and self.reply.app_index}"
        return f"<App {self.options.app_name()!r} {state} via {self.sapi.path}>"


class AppWorker(_WorkerBase):
    """An additional app worker: its own app socket connection, first segment and mq.

    VPP posts this worker's events to `mq` and sends the fds of its new segments over its own
    socket, so `poll`/`wait_for` are the ones to use: like `App.poll` they map the segments that
    APP_ADD_SEGMENT announces into `segments` and unmap them on APP_DEL_SEGMENT.  Control
    messages still go to the app's VPP mqs (`App.send_ctrl` with this worker's
    ``api_client_handle`` and ``wrk_index``)."""

    def __init__(self, app: App, sapi: SapiSocket) -> None:
        super().__init__(sapi)
        self.app = app
        self.pid = app.pid
        self.reply: WorkerAddDelReply | None = None
        self.segment: Segment | None = None
        self.mq: MessageQueue | None = None

    @classmethod
    def add(cls, app: App, timeout: float) -> AppWorker:
        sapi = SapiSocket.connect(app.sapi.path, timeout)
        worker = cls(app, sapi)
        tracer = live_trace.active()
        if tracer is not None:
            tracer.watch_sapi(sapi)
        try:
            sapi.send(SapiMsgType.ADD_DEL_WORKER, encode_worker_add_del(app.app_index, 0, True))
            msg = sapi.recv_expect(SapiMsgType.ADD_DEL_WORKER_REPLY)
            worker.fds.extend(msg.fds)
            reply = WorkerAddDelReply.decode(msg.payload)
            if reply.retval:
                raise session_error("VPP refused the new worker", reply.retval)
            worker.reply = reply
            fds = assign_fds(reply.fd_flags, reply.n_fds, msg.fds)
            if reply.segment_handle == INVALID_HANDLE:
                raise AppSocketError("worker reply names no first segment (handle ~0)")
            if SessionFdFlag.MEMFD_SEGMENT not in fds:
                raise AppSocketError("worker reply lacks its segment fd")
            if app.options.use_mq_eventfd and SessionFdFlag.MQ_EVENTFD not in fds:
                raise AppSocketError("asked for an mq eventfd but the worker reply has none")
            _check_fd_kinds(fds, "worker reply")
            worker.segment = Segment.map_fd(
                fds[SessionFdFlag.MEMFD_SEGMENT][0], handle=reply.segment_handle
            )
            worker.segments[reply.segment_handle] = worker.segment
            evfd = fds.get(SessionFdFlag.MQ_EVENTFD, [None])[0]
            if evfd is not None:
                os.set_blocking(evfd, False)
            worker.mq = MessageQueue(worker.segment, reply.app_event_queue_address, eventfd=evfd)
            if tracer is not None:
                tracer.watch_queue(worker.mq, f"wrk{reply.wrk_index}")
        except BaseException:
            with contextlib.suppress(Exception):  # it releases everything; the cause matters
                worker.close(notify=False)
            raise
        return worker

    @property
    def wrk_index(self) -> int:
        assert self.reply is not None
        return self.reply.wrk_index

    @property
    def api_client_handle(self) -> int:
        assert self.reply is not None
        return self.reply.api_client_handle

    def _check_usable(self) -> None:
        if self.closed:
            raise LocalError("this worker is closed", errno.EBADF)
        self.app._check_usable()

    def _event_mq(self) -> MessageQueue:
        self._check_usable()
        assert self.mq is not None
        return self.mq

    def close(self, notify: bool = True) -> None:
        """Delete the worker: ADD_DEL_WORKER(is_add=0) (VPP sends no reply) and close.  In a
        forked child it only releases the child's copies.  Like `App.close`, it releases
        everything even if a step fails, then raises one `VclError`."""
        if self.closed:
            return
        self.closed = True
        cleanup = _Cleanup()
        if notify and self.reply is not None and not self.app.closed and os.getpid() == self.pid:
            with contextlib.suppress(VclError, OSError):
                self.sapi.send(
                    SapiMsgType.ADD_DEL_WORKER,
                    encode_worker_add_del(self.app.app_index, self.reply.wrk_index, False),
                )
        if self.mq is not None:
            cleanup(self.mq.close)
        self.mq = None
        if self.segment is not None:
            cleanup(self.segment.close)  # also in segments unless setup failed before that
        self.segment = None
        self._release_segments(cleanup)
        cleanup(self.sapi.close)
        cleanup.done(f"closing {self!r}")

    def __enter__(self) -> AppWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"wrk_index={self.reply and self.reply.wrk_index}"
        return f"<AppWorker of app {self.app.options.app_name()!r} {state} via {self.sapi.path}>"


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


__all__ = ["App", "AppWorker", "AttachOptions", "SessionError", "SessionLayerError"]
