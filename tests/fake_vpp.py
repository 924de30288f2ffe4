"""A scripted stand-in for VPP's app socket, for testing how pyvcl handles bad input.

`FakeVpp` listens on a SEQPACKET socket in a temp dir and answers one connection with a
script: a list of replies (frames, fds, raw bytes, or "close").  ``worker_scripts`` answer the
connections that follow, one script each (an app's extra workers connect anew, 7.11).
`vpp_like_segments` builds memfds formatted like VPP's (ssvm header, fifo segment header, one
message queue), so a reply can carry real, mappable segments whose offsets the test controls.
"""

from __future__ import annotations

import array
import contextlib
import mmap
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyvcl.api.sapi import encode_frame
from pyvcl.wire.enums import SapiMsgType, SessionFdFlag
from pyvcl.wire.sapi import (
    APP_SAPI_ATTACH_REPLY_MSG,
    APP_SAPI_WORKER_ADD_DEL_REPLY_MSG,
    SAPI_MSG_SIZE,
)

from .mq_fixtures import alloc_mq, app_mq_rings, vpp_mq_rings
from .segment_fixtures import make_segment


@dataclass
class Send:
    """One message the fake sends: raw bytes (any length) and fds."""

    data: bytes
    fds: list[int] = field(default_factory=list)


CLOSE = "close"
SILENT = "silent"
Script = list[Any]  # Send | CLOSE | SILENT


class FakeVpp:
    def __init__(
        self,
        directory: Path,
        script: Script,
        kind: int = socket.SOCK_SEQPACKET,
        worker_scripts: Sequence[Script] = (),
    ) -> None:
        self.path = directory / "fake.sock"
        self.scripts = [script, *worker_scripts]
        self.received: list[bytes] = []
        self.listener = socket.socket(socket.AF_UNIX, kind)
        self.listener.bind(str(self.path))
        self.listener.listen(len(self.scripts))
        self.done = threading.Event()
        self.conn_threads: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        for script in self.scripts:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn, script), daemon=True)
            self.conn_threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket, script: Script) -> None:
        with conn:
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                self.received.append(conn.recv(4096))
            for step in script:
                if step == CLOSE:
                    break
                if step == SILENT:
                    self.done.wait(10)
                    break
                anc = []
                if step.fds:
                    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", step.fds))]
                conn.sendmsg([step.data], anc)
            self.done.wait(0.2)  # let the client read before the socket closes

    def close(self) -> None:
        self.done.set()
        self.listener.close()
        self.thread.join(5)
        for t in self.conn_threads:
            t.join(5)


@contextlib.contextmanager
def fake_vpp(directory: Path, script: Script, **kw: Any) -> Iterator[FakeVpp]:
    fake = FakeVpp(directory, script, **kw)
    try:
        yield fake
    finally:
        fake.close()


def memfd_segment(size: int, build: Callable[[Any], int]) -> tuple[int, int]:
    """A memfd of ``size`` bytes formatted by ``build(segment) -> mq offset``."""
    seg = make_segment(size, n_mqs=1)
    mq_off = build(seg)
    fd = os.memfd_create("fake-seg", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    with mmap.mmap(fd, size) as mm:
        mm[:] = bytes(seg.buf)
    seg.close()
    return fd, mq_off


def vpp_like_segments(evt_queue_size: int = 64) -> tuple[int, int, int, int]:
    """(vpp-mq segment fd, its mq offset, app segment fd, app mq offset)."""
    vfd, voff = memfd_segment(1 << 20, lambda s: alloc_mq(s, 64, vpp_mq_rings(64)))
    afd, aoff = memfd_segment(
        1 << 20, lambda s: alloc_mq(s, evt_queue_size, app_mq_rings(evt_queue_size))
    )
    return vfd, voff, afd, aoff


def attach_reply(**fields: Any) -> bytes:
    values = {"fd_flags": int(SessionFdFlag.VPP_MQ_SEGMENT | SessionFdFlag.MEMFD_SEGMENT)}
    values.update(fields)
    values.setdefault("n_fds", bin(values["fd_flags"]).count("1"))
    frame = encode_frame(SapiMsgType.ATTACH_REPLY, APP_SAPI_ATTACH_REPLY_MSG.build(**values))
    assert len(frame) == SAPI_MSG_SIZE
    return frame


def app_mq_segment(evt_queue_size: int = 64) -> tuple[int, int]:
    """(segment fd, its app mq offset): a worker's first segment."""
    return memfd_segment(
        1 << 20, lambda s: alloc_mq(s, evt_queue_size, app_mq_rings(evt_queue_size))
    )


def worker_reply(**fields: Any) -> bytes:
    values = {"fd_flags": int(SessionFdFlag.MEMFD_SEGMENT), "is_add": 1, "wrk_index": 1}
    values.update(fields)
    values.setdefault("n_fds", bin(values["fd_flags"]).count("1"))
    frame = encode_frame(
        SapiMsgType.ADD_DEL_WORKER_REPLY, APP_SAPI_WORKER_ADD_DEL_REPLY_MSG.build(**values)
    )
    assert len(frame) == SAPI_MSG_SIZE
    return frame


def send_fds_frame() -> bytes:
    """SEND_FDS: a type byte and an all-zero payload; the fds ride along."""
    return encode_frame(SapiMsgType.SEND_FDS)
