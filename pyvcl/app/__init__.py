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
import time
from typing import Any

from ..api import live_trace
from ..api.messages import (
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
from ..api.sapi import DEFAULT_TIMEOUT, SapiSocket, encode_frame
from ..errors import (
    AppSocketError,
    LocalError,
    SessionLayerError,
    VclError,
    session_error,
)
from ..interrupts import guard_sigint_at_attach
from ..mq.queue import MessageQueue
from ..segment import Segment
from ..vppversion import check_peer_version
from ..wire import DEFAULT_VERSION
from ..wire.abi import check_live_layouts
from ..wire.enums import SapiMsgType, SessionError, SessionEvent, SessionFdFlag
from .base import (
    DEFAULT_RUNTIME_DIR,
    DETACH_SYNC_TIMEOUT,
    INVALID_HANDLE,
    SYNC_CONTEXT,
    _check_fd_kinds,
    _Cleanup,
    _ForkCount,
    _WorkerBase,
    default_app_socket,
)


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
        self.said_goodbye = False  # APP_DETACH sent (`detach`)

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
        guard_sigint_at_attach()  # Ctrl-C must not stop a change of shared memory halfway
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
    def detach(self, release: bool = True) -> None:
        """Tell VPP we leave (APP_DETACH), then release everything (`close`), even if the
        goodbye fails.  Idempotent.  The goodbye is said once, within about three times
        `DETACH_SYNC_TIMEOUT` (twice against a VPP that does not answer), and not at all once
        VPP closed the app socket (it is gone).

        After the APP_DETACH we wait for VPP to close the app socket, which it does once it
        has detached us.  Closing first would leave the message queued: VPP detaches the app
        at the close anyway, then handles the stale APP_DETACH, whose client index the next
        app to attach may have been given already (VPP reuses them), and detaches *that* app.
        With ``session { use-private-rx-mqs }`` an idle VPP thread handles such a message on
        a timer tick (100 ms; 500 ms on the main thread of a VPP with workers), late enough
        for an app attached right after to be hit every time; the wait takes that long there.

        ``release=False`` says the goodbye only: the mappings and fds stay until `close` or
        the process's end (at interpreter exit, where other threads may still look at them:
        `pyvcl.interpose.leave`)."""
        if self.closed:
            return
        try:
            if (
                not self.said_goodbye
                and os.getpid() == self.pid
                and self.reply is not None
                and self.vpp_mqs
                and not self.sapi.poll_closed()
            ):
                self.said_goodbye = True
                with contextlib.suppress(VclError, OSError):
                    answering = self.sync_with_vpp(DETACH_SYNC_TIMEOUT)
                    self.send_ctrl(
                        SessionEvent.CTRL_APP_DETACH,
                        client_index=self.api_client_handle,
                        timeout=DETACH_SYNC_TIMEOUT,
                    )
                    if answering:  # (a VPP that left the probes unanswered would not close)
                        self.sapi.poll_closed(DETACH_SYNC_TIMEOUT)
        finally:
            if release:
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


__all__ = [
    "DEFAULT_RUNTIME_DIR",
    "SYNC_CONTEXT",
    "App",
    "AppWorker",
    "AttachOptions",
    "SessionError",
    "SessionLayerError",
    "default_app_socket",
]
