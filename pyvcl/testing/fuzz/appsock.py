"""Targets behind the app socket: `App.attach` against a scripted VPP whose reply, fds and
segments are mutated (``attach``), and the session worker fed mutated events (``worker``).

`FakeVpp` answers one connection on a SEQPACKET socket in a temporary directory: it reads the
ATTACH request and sends the (possibly mutated, possibly truncated) reply frame with the fds
the mutation leaves, then waits until it is closed.  The segments are real memfds formatted
as VPP formats them (a VPP worker mq segment and the app's first segment with its mq and two
fifos), so `App.attach` maps what it would map from VPP.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...api.sapi import encode_frame
from ...app import App
from ...errors import WouldBlock
from ...fifo import Fifo
from ...mq.events import encode_ctrl, encode_io
from ...mq.queue import MessageQueue
from ...segment import Segment
from ...session.worker import SessionWorker
from ...wire.enums import SapiMsgType, SessionEvent, SessionFdFlag
from ...wire.sapi import APP_SAPI_ATTACH_REPLY_MSG, APP_SAPI_MSG, SAPI_MSG_SIZE, SAPI_PAYLOAD_OFFSET
from ...wire.session import SEGMENT_NAME_LEN
from ..vppshm import FSH_OFFSET, alloc_fifo, alloc_mq, format_segment, session_rings
from .mutate import FieldRef, Layout, Mutation, fields_of
from .targets import (
    SHORT,
    PathErrors,
    Target,
    Template,
    _attempt,
    _sizes,
    fifo_fields,
    mq_fields,
    segment_fields,
)

SEGMENT_SIZE = 1 << 17
APP_SEGMENT_HANDLE = 0x100000000  # what VPP hands out for an app's first segment
VPP_QUEUE_ITEMS = 16
APP_QUEUE_ITEMS = 16
SERVE_TIMEOUT = 5.0  # the fake gives up on a client that never connects or never closes
FRAME, VPPSEG, APPSEG, ADDSEG, META = "frame", "vppseg", "appseg", "addseg", "meta"
ADDED_SEGMENT_HANDLE = 0x100000001  # a second segment VPP announces (CTRL_APP_ADD_SEGMENT)
ADDED_SEGMENT_SIZE = 1 << 16
# meta: [0:2] how many frame bytes to send, [2] how many fds to send (of vpp seg, app seg,
# eventfd, then duplicates), [3] bit 0: the app asks for eventfd mode
META_FIELDS = [
    FieldRef(META, "meta.frame_bytes", 0, 2),
    FieldRef(META, "meta.fds_sent", 2, 1),
    FieldRef(META, "meta.flags", 3, 1),
]


class FakeVpp:
    """One scripted app-socket connection (see the module docstring)."""

    def __init__(
        self,
        directory: str,
        frame: bytes,
        fds: list[int],
        then: Sequence[tuple[bytes, list[int]]] = (),
    ) -> None:
        self.path = Path(directory) / "app.sock"
        self.frame, self.fds, self.then = frame, fds, then
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(str(self.path))
        self.listener.listen(1)
        self.listener.settimeout(SERVE_TIMEOUT)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="fuzz-fake-vpp", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(SERVE_TIMEOUT)
                conn.recv(SAPI_MSG_SIZE)  # the ATTACH request
                anc = []
                if self.fds:
                    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", self.fds))]
                conn.sendmsg([self.frame], anc)
                for data, fds in self.then:  # e.g. SEND_FDS before an ADD_SEGMENT event
                    rights = array.array("i", fds)
                    conn.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
                self.done.wait(SERVE_TIMEOUT)

    def close(self) -> None:
        self.done.set()
        self.listener.close()
        self.thread.join(SERVE_TIMEOUT)


def _memfd(data: bytes | bytearray) -> int:
    fd = os.memfd_create("fuzz-seg", os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd


@contextlib.contextmanager
def attached(spaces: dict[str, bytearray]) -> Iterator[App | None]:
    """Serve the mutated spaces to `App.attach`; the app (None when attach raised a pyvcl
    error), detached and every fd closed on exit."""
    from ...errors import VclError

    meta = spaces[META]
    fds = [_memfd(spaces[VPPSEG]), _memfd(spaces[APPSEG])]
    use_eventfd = bool(meta[3] & 1)
    if use_eventfd:
        fds.append(os.eventfd(0, os.EFD_CLOEXEC))
    sent = fds[: meta[2]] + fds[: max(0, meta[2] - len(fds))]
    frame = bytes(spaces[FRAME][: int.from_bytes(meta[0:2], "little")])
    then = []
    if ADDSEG in spaces:
        fds.append(_memfd(spaces[ADDSEG]))
        then.append((encode_frame(SapiMsgType.SEND_FDS), fds[-1:]))
    app: App | None = None
    with tempfile.TemporaryDirectory(prefix="pyvcl-fuzz-") as d:
        fake = FakeVpp(d, frame, sent, then)
        try:
            try:
                app = App.attach(fake.path, timeout=1.0, use_mq_eventfd=use_eventfd)
            except VclError:
                PathErrors.count += 1
            try:
                yield app
            finally:
                if app is not None:
                    app.close()
        finally:
            fake.close()
            for fd in fds:
                os.close(fd)


def _app_segment() -> tuple[bytes, int, list[int]]:
    """The app's first segment: its worker mq and two fifos; (bytes, mq offset, fifos)."""
    buf = bytearray(SEGMENT_SIZE)
    format_segment(buf, n_mqs=1)
    seg = Segment(buf, name="fuzz-app")
    try:
        mq = alloc_mq(seg, APP_QUEUE_ITEMS, session_rings(APP_QUEUE_ITEMS, app=True))
        fifos = [alloc_fifo(seg), alloc_fifo(seg)]
        Fifo(seg, fifos[0]).enqueue(b"hello from vpp")
        return bytes(buf), mq, fifos
    finally:
        seg.close()


def _vpp_segment() -> tuple[bytes, int]:
    buf = bytearray(SEGMENT_SIZE)
    format_segment(buf, n_mqs=1)
    seg = Segment(buf, name="fuzz-vpp")
    try:
        mq = alloc_mq(seg, VPP_QUEUE_ITEMS, session_rings(VPP_QUEUE_ITEMS, app=False))
        return bytes(buf), mq
    finally:
        seg.close()


def _reply_frame(app_mq: int, vpp_mq: int) -> bytes:
    flags = SessionFdFlag.VPP_MQ_SEGMENT | SessionFdFlag.MEMFD_SEGMENT
    payload = APP_SAPI_ATTACH_REPLY_MSG.build(
        app_index=1,
        app_mq=app_mq,
        vpp_ctrl_mq=vpp_mq,
        segment_handle=APP_SEGMENT_HANDLE,
        api_client_handle=0x100,
        n_fds=2,
        fd_flags=int(flags),
    )
    return encode_frame(SapiMsgType.ATTACH_REPLY, payload)


def _frame_fields() -> list[FieldRef]:
    return fields_of(APP_SAPI_MSG, FRAME, 0)[:1] + fields_of(
        APP_SAPI_ATTACH_REPLY_MSG, FRAME, SAPI_PAYLOAD_OFFSET
    )


class AttachTarget(Target):
    """The attach reply, its fds and both segments' headers and queues."""

    name = "attach"

    def build_template(self) -> Template:
        app_seg, app_mq, fifos = _app_segment()
        vpp_seg, vpp_mq = _vpp_segment()
        frame = _reply_frame(app_mq, vpp_mq)
        meta = SAPI_MSG_SIZE.to_bytes(2, "little") + bytes((2, 0))
        fields = _frame_fields() + META_FIELDS
        fields += segment_fields(vpp_seg, VPPSEG) + mq_fields(
            vpp_seg, VPPSEG, FSH_OFFSET + vpp_mq, "vppmq"
        )
        fields += segment_fields(app_seg, APPSEG) + mq_fields(
            app_seg, APPSEG, FSH_OFFSET + app_mq, "appmq"
        )
        flips = [(FRAME, 0, SAPI_MSG_SIZE)]
        spaces = {FRAME: frame, VPPSEG: vpp_seg, APPSEG: app_seg, META: meta}
        sizes = [*_sizes(SEGMENT_SIZE), SAPI_MSG_SIZE]
        return Template(spaces, Layout(fields, flips, sizes), {"fifos": fifos})

    def run(self, mutation: Mutation) -> None:
        with attached(self.mutated(mutation)) as app:
            if app is not None:
                _attempt(lambda: app.poll(0))
                _attempt(lambda: app.poll(SHORT))
                _attempt(lambda: app.send_ctrl(SessionEvent.CTRL_APP_DETACH, context=1))


class WorkerTarget(Target):
    """A well-formed attach, then the session worker handling mutated events: BOUND and
    ACCEPTED for a listener, CONNECTED for a connect, RX and DISCONNECTED, whose fifo offsets,
    handles and queue addresses point into the app segment."""

    name = "worker"

    def build_template(self) -> Template:
        app_seg, app_mq, fifos = _app_segment()
        vpp_seg, vpp_mq = _vpp_segment()
        buf = bytearray(app_seg)
        seg = Segment(buf, name="fuzz-app")
        try:
            mq = MessageQueue(seg, app_mq)
            rx, tx = fifos
            common = dict(segment_handle=APP_SEGMENT_HANDLE, server_rx_fifo=rx, server_tx_fifo=tx)
            mq.send(
                encode_ctrl(
                    SessionEvent.CTRL_APP_ADD_SEGMENT,
                    fd_flags=int(SessionFdFlag.MEMFD_SEGMENT),
                    segment_size=ADDED_SEGMENT_SIZE,
                    segment_name=b"fuzz-added".ljust(SEGMENT_NAME_LEN, b"\0"),
                    segment_handle=ADDED_SEGMENT_HANDLE,
                )
            )
            mq.send(encode_ctrl(SessionEvent.CTRL_BOUND, context=0, handle=0x10, vpp_evt_q=vpp_mq))
            mq.send(
                encode_ctrl(
                    SessionEvent.CTRL_ACCEPTED,
                    listener_handle=0x10,
                    handle=0x20,
                    vpp_event_queue_address=vpp_mq,
                    **common,
                )
            )
            mq.send(
                encode_ctrl(
                    SessionEvent.CTRL_CONNECTED,
                    context=1,
                    handle=0x30,
                    vpp_event_queue_address=vpp_mq,
                    **common,
                )
            )
            mq.send(encode_io(SessionEvent.IO_RX, 1))
            mq.send(encode_ctrl(SessionEvent.CTRL_DISCONNECTED, handle=0x30))
            mq.send(
                encode_ctrl(SessionEvent.CTRL_APP_DEL_SEGMENT, segment_handle=ADDED_SEGMENT_HANDLE)
            )
            app_seg = bytes(buf)
        finally:
            seg.close()
        frame = _reply_frame(app_mq, vpp_mq)
        meta = SAPI_MSG_SIZE.to_bytes(2, "little") + bytes((2, 0))
        fields = mq_fields(app_seg, APPSEG, FSH_OFFSET + app_mq, "appmq")
        fields = [
            f for f in fields if ".slot[" in f.name or ".msg[" in f.name or f.name.endswith("size")
        ]
        for i, f in enumerate(fifos):
            fields += fifo_fields(app_seg, APPSEG, FSH_OFFSET, f, f"fifo[{i}]")
        added = bytearray(ADDED_SEGMENT_SIZE)
        format_segment(added)
        fields += segment_fields(added, ADDSEG)
        spaces = {FRAME: frame, VPPSEG: vpp_seg, APPSEG: app_seg, ADDSEG: bytes(added), META: meta}
        sizes = [
            *_sizes(SEGMENT_SIZE),
            ADDED_SEGMENT_SIZE,
            APP_SEGMENT_HANDLE,
            fifos[0],
            fifos[1],
            app_mq,
            vpp_mq,
        ]
        return Template(spaces, Layout(fields, [], sizes), {})

    def run(self, mutation: Mutation) -> None:
        with attached(self.mutated(mutation)) as app:
            if app is not None:  # None: a mutated queue size that attach already refused
                _attempt(lambda: self._sessions(app))

    @staticmethod
    def _sessions(app: App) -> None:
        worker = SessionWorker(app)
        layer = worker.layer
        listener, client = layer.new_session(), layer.new_session()
        worker.execute(layer.listen(listener, "127.0.0.1", 80))
        worker.execute(layer.connect(client, "127.0.0.1", 81))
        worker.pump()
        accepted, actions = layer.accept(listener)
        worker.execute(actions)
        buf = bytearray(64)
        for s in (client, accepted):
            if s is None:
                continue
            for path in (
                lambda s=s: worker.fifos(s),
                lambda s=s: worker.readiness(s),
                lambda s=s: _recv_if_any(worker, s, buf),
                lambda s=s: worker.send(s, b"x" * 100, SHORT),
                lambda s=s: worker.close(s),
            ):
                _attempt(path)
        worker.pump()


def _recv_if_any(worker: SessionWorker, s: Any, buf: bytearray) -> None:
    """A non-blocking read; finding no data is not an error of the input."""
    with contextlib.suppress(WouldBlock):
        worker.recv_into(s, buf, 0)
