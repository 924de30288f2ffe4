"""Bad input from the app socket and from shared memory: a clear pyvcl error every time,
never a hang, a crash or a leaked descriptor.  No VPP needed (tests/fake_vpp.py)."""

from __future__ import annotations

import errno
import mmap
import os
import socket
from collections.abc import Iterator
from contextlib import closing, nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pyvcl.api.messages import FD_ORDER
from pyvcl.app import App, AppWorker
from pyvcl.errors import (
    AppSocketError,
    LocalError,
    SessionLayerError,
    SharedMemoryError,
    Timeout,
    VclError,
    VppDisconnected,
    VppUnreachable,
)
from pyvcl.mq.events import Event
from pyvcl.mq.queue import MessageQueue
from pyvcl.shmview import describe_mq
from pyvcl.wire.enums import SapiMsgType, SessionError, SessionEvent, SessionFdFlag
from pyvcl.wire.session import SEGMENT_NAME_LEN

from .fake_vpp import (
    CLOSE,
    SILENT,
    Send,
    app_mq_segment,
    attach_reply,
    fake_vpp,
    send_fds_frame,
    vpp_like_segments,
    worker_reply,
)


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True)
def no_fd_leaks() -> Iterator[None]:
    before = open_fds()
    yield
    leaked = open_fds() - before
    assert not leaked, {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in leaked}


def attach(path: Path, **kw: object) -> App:
    return App.attach(path, timeout=1.0, name="badinput", **kw)  # type: ignore[arg-type]


def test_nothing_at_the_path(tmp_path: Path) -> None:
    with pytest.raises(VppUnreachable) as e:
        attach(tmp_path / "absent.sock")
    assert e.value.errno == errno.ENOENT and "absent.sock" in str(e.value)


def test_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    p = tmp_path / "plain"
    p.write_text("hi")
    with pytest.raises(VppUnreachable):
        attach(p)


def test_a_stream_socket_is_not_vpp(tmp_path: Path) -> None:
    with (
        fake_vpp(tmp_path, [], kind=socket.SOCK_STREAM) as fake,
        pytest.raises(VppUnreachable) as e,
    ):
        attach(fake.path)
    assert "not a VPP app socket" in str(e.value)


@pytest.mark.parametrize(
    ("script", "error", "text"),
    [
        ([CLOSE], VppDisconnected, "closed"),
        ([SILENT], Timeout, "did not answer"),
        ([Send(b"\x02" * 100)], AppSocketError, "100 bytes"),
        ([Send(b"\x02" * 300)], AppSocketError, "every message must be 209"),
        (
            [Send(bytes([SapiMsgType.SEND_FDS]) + bytes(208))],
            AppSocketError,
            "expected ATTACH_REPLY",
        ),
        ([Send(attach_reply(retval=SessionError.APP_ATTACHED))], SessionLayerError, "APP_ATTACHED"),
        ([Send(attach_reply())], AppSocketError, "2 fds but 0"),
    ],
    ids=["eof", "silent", "short", "oversized", "wrong-type", "refused", "fds-missing"],
)
def test_bad_replies(tmp_path: Path, script: list[object], error: type, text: str) -> None:
    with fake_vpp(tmp_path, script) as fake, pytest.raises(error, match=text) as e:
        attach(fake.path)
    assert isinstance(e.value, VclError) and isinstance(e.value, OSError)
    assert len(fake.received[0]) == 209  # what we sent was one whole frame


def test_refusal_errno_is_what_a_socket_user_expects(tmp_path: Path) -> None:
    script = [Send(attach_reply(retval=SessionError.APP_ATTACHED))]
    with fake_vpp(tmp_path, script) as fake, pytest.raises(SessionLayerError) as e:
        attach(fake.path)
    assert e.value.errno == errno.EISCONN and e.value.code == SessionError.APP_ATTACHED


def _segments_reply(tmp_path: Path, **overrides: int) -> tuple[list[Send], list[int]]:
    vfd, voff, afd, aoff = vpp_like_segments()
    fields = {"app_mq": aoff, "vpp_ctrl_mq": voff, "segment_handle": 1 << 32}
    fields.update(overrides)
    return [Send(attach_reply(**fields), [vfd, afd])], [vfd, afd]


def test_a_well_formed_fake_attaches(tmp_path: Path) -> None:
    """The fixture itself is sane: with good offsets the attach succeeds and nothing leaks."""
    script, fds = _segments_reply(tmp_path)
    with fake_vpp(tmp_path, script) as fake, attach(fake.path, use_mq_eventfd=False) as app:
        assert app.app_mq is not None and app.ctrl_mq.offset == app.reply.vpp_ctrl_mq  # type: ignore[union-attr]
        assert app.poll(0) == []
    for fd in fds:
        os.close(fd)


@pytest.mark.parametrize(
    "overrides",
    [{"app_mq": 1 << 40}, {"app_mq": 8}, {"vpp_ctrl_mq": 3 << 30}, {"vpp_ctrl_mq_thread": 7}],
    ids=["app-mq-beyond", "app-mq-in-header", "ctrl-mq-beyond", "no-such-thread"],
)
def test_offsets_outside_the_segments(tmp_path: Path, overrides: dict[str, int]) -> None:
    script, fds = _segments_reply(tmp_path, **overrides)
    with fake_vpp(tmp_path, script) as fake, pytest.raises((SharedMemoryError, AppSocketError)):
        attach(fake.path, use_mq_eventfd=False)
    for fd in fds:
        os.close(fd)


def test_segment_larger_than_its_memfd(tmp_path: Path) -> None:
    vfd, voff, afd, aoff = vpp_like_segments()
    os.ftruncate(afd, 8192)  # the ssvm header now claims more than the file holds
    script = [Send(attach_reply(app_mq=aoff, vpp_ctrl_mq=voff), [vfd, afd])]
    with fake_vpp(tmp_path, script) as fake, pytest.raises(SharedMemoryError, match="ssvm_size"):
        attach(fake.path, use_mq_eventfd=False)
    os.close(vfd)
    os.close(afd)


def test_eventfd_promised_but_absent(tmp_path: Path) -> None:
    script, fds = _segments_reply(tmp_path)
    with fake_vpp(tmp_path, script) as fake, pytest.raises(AppSocketError, match="eventfd"):
        attach(fake.path, use_mq_eventfd=True)
    for fd in fds:
        os.close(fd)


# -- an extra worker's APP_ADD_SEGMENT: its fd comes on the worker's own socket ---------------

SEG_HANDLE = 5 << 32


def _worker_fakes(
    tmp_path: Path, fd_steps: list[Send]
) -> tuple[list[object], list[list[object]], list[int]]:
    """Scripts for the app's socket and for one worker's, whose reply is followed by
    ``fd_steps`` (what VPP would send for APP_ADD_SEGMENT); and the fds the test must close."""
    app_script, app_fds = _segments_reply(tmp_path)
    wfd, woff = app_mq_segment()
    reply = worker_reply(app_event_queue_address=woff, segment_handle=3 << 32)
    worker_script: list[object] = [Send(reply, [wfd]), *fd_steps, SILENT]
    fds = app_fds + [wfd] + [fd for step in fd_steps for fd in step.fds]
    return [*app_script, SILENT], [worker_script], fds


def _announce(w: AppWorker, seg_fd: int | None, **fields: object) -> None:
    """Queue APP_ADD_SEGMENT on the worker's mq, as VPP does after sending the fd."""
    values: dict[str, object] = {
        "fd_flags": int(SessionFdFlag.MEMFD_SEGMENT),
        "segment_size": os.fstat(seg_fd).st_size if seg_fd is not None else 1 << 20,
        "segment_name": b"fake-wrk-seg".ljust(SEGMENT_NAME_LEN, b"\0"),
        "segment_handle": SEG_HANDLE,
    }
    values.update(fields)
    assert w.mq is not None
    w.mq.send_ctrl(SessionEvent.CTRL_APP_ADD_SEGMENT, **values)


def test_worker_maps_and_unmaps_an_added_segment(tmp_path: Path) -> None:
    seg_fd, _ = app_mq_segment()
    app_script, worker_scripts, fds = _worker_fakes(tmp_path, [Send(send_fds_frame(), [seg_fd])])
    with (
        fake_vpp(tmp_path, app_script, worker_scripts=worker_scripts) as fake,
        closing(attach(fake.path, use_mq_eventfd=False)) as app,  # no APP_DETACH: none answers
        app.add_worker(timeout=1.0) as w,
    ):
        _announce(w, seg_fd)
        (ev,) = w.poll(1.0)
        assert ev.type == SessionEvent.CTRL_APP_ADD_SEGMENT
        seg = w.segments[SEG_HANDLE]
        assert seg.name == "fake-wrk-seg" and SEG_HANDLE not in app.segments
        assert w.mq is not None
        mapped = open_fds()
        w.mq.send_ctrl(SessionEvent.CTRL_APP_DEL_SEGMENT, segment_handle=SEG_HANDLE)
        assert [e.type for e in w.poll(1.0)] == [SessionEvent.CTRL_APP_DEL_SEGMENT]
        assert SEG_HANDLE not in w.segments and seg.closed
        assert len(mapped - open_fds()) == 2  # the received fd and mmap's dup of it
        # Deleting the segment that holds the worker's mq retires it: still mapped until close.
        w.mq.send_ctrl(SessionEvent.CTRL_APP_DEL_SEGMENT, segment_handle=3 << 32)
        assert [e.type for e in w.poll(1.0)] == [SessionEvent.CTRL_APP_DEL_SEGMENT]
        assert w.segment is not None and not w.segment.closed and w.poll(0) == []
    for fd in fds:
        os.close(fd)


@pytest.mark.parametrize(
    ("n_fds", "fields", "text"),
    [
        (None, {}, "no SEND_FDS"),
        (0, {}, "carried 0 fds, not 1"),
        (2, {}, "carried 2 fds, not 1"),
        (1, {"segment_size": 4096}, "4096 announced"),
        (1, {"segment_handle": 2**64 - 1}, "invalid handle"),
        (None, {"fd_flags": 0}, "without an fd"),
    ],
    ids=["no-frame", "fds-missing", "fds-extra", "wrong-size", "handle-~0", "no-fd-flag"],
)
def test_worker_bad_added_segment(
    tmp_path: Path, n_fds: int | None, fields: dict[str, int], text: str
) -> None:
    """A worker is as strict as worker 0: a clear AppSocketError, every received fd closed."""
    seg_fds = [app_mq_segment()[0] for _ in range(n_fds or 0)]
    steps = [] if n_fds is None else [Send(send_fds_frame(), seg_fds)]
    app_script, worker_scripts, fds = _worker_fakes(tmp_path, steps)
    with (
        fake_vpp(tmp_path, app_script, worker_scripts=worker_scripts) as fake,
        closing(attach(fake.path, use_mq_eventfd=False)) as app,  # no APP_DETACH: none answers
        app.add_worker(timeout=1.0) as w,
    ):
        _announce(w, seg_fds[0] if seg_fds else None, **fields)
        with pytest.raises(AppSocketError, match=text):
            w.poll(1.0)
        assert SEG_HANDLE not in w.segments
    for fd in fds:
        os.close(fd)


def test_poll_closed_never_waits_and_reads_only_a_hang_up() -> None:
    """The app socket keeps a receive timeout; asking whether VPP closed it must neither wait
    for that timeout (another thread may have taken the pending frame) nor call a timed-out
    check a close.  A frame pending is not a close; VPP's close is, frames pending or not."""
    import time

    from pyvcl.api.sapi import SapiSocket

    ours, vpps = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sapi = SapiSocket(ours, "test", timeout=5.0)
    ours.settimeout(5.0)
    with closing(sapi), closing(vpps):
        start = time.monotonic()
        assert not sapi.poll_closed()
        assert time.monotonic() - start < 1.0
        vpps.send(b"x")
        assert not sapi.poll_closed()
        vpps.close()
        assert sapi.poll_closed()  # a frame still pending
        ours.recv(16)
        assert sapi.poll_closed()
    assert sapi.poll_closed()  # our own end closed: no ValueError from poll


# -- events VPP should never send, and releasing everything when something fails --------------


def memfd_mappings() -> list[str]:
    """The lines of /proc/self/maps that map a memfd (every segment mapping is one)."""
    with open("/proc/self/maps") as f:
        return [line for line in f if "/memfd:" in line]


@pytest.fixture
def fake_app(tmp_path: Path) -> Iterator[App]:
    """An App attached to a fake VPP that answers nothing more (condvar-mode app mq)."""
    script, fds = _segments_reply(tmp_path)
    with fake_vpp(tmp_path, [*script, SILENT]) as fake:
        app = attach(fake.path, use_mq_eventfd=False)
        try:
            yield app
        finally:
            app.close()
            for fd in fds:
                os.close(fd)


def _event(event_type: int, session_index: int | None = None, ring: int = 0) -> Event:
    return Event(event_type, ring, session_index)


def _write_io_slot_type(mq: MessageQueue, event_type: int) -> None:
    """Rewrite the type byte of the newest IO event of ``mq`` in shared memory, as a peer could:
    a control event type in an IO ring slot."""
    ring = describe_mq(mq.segment, mq.offset)["rings"][0]
    elt = (ring["tail"] - 1) % ring["nitems"]
    mq.segment.view[mq.segment.at(ring["data_fsh_offset"] + elt * ring["elsize"], 1)] = event_type


def test_a_bad_event_loses_no_other_event(fake_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """A control event without its message (a control type in an IO slot) in the middle of a
    batch: the events before it are delivered, then a SharedMemoryError for it, then the
    events after it (their segment events acted on) -- never an AttributeError, nothing lost."""
    assert fake_app.app_mq is not None
    batch = [
        _event(SessionEvent.IO_RX, 7),
        _event(SessionEvent.CTRL_APP_ADD_SEGMENT),  # in ring 0: no msg
        _event(SessionEvent.IO_TX, 8),
    ]
    del_seg = fake_app.app_mq.segment  # a DEL_SEGMENT after the bad event is still acted on
    batch.append(Event(SessionEvent.CTRL_APP_DEL_SEGMENT, 1, msg=_DelSeg(1 << 32)))
    batches = [batch]
    monkeypatch.setattr(fake_app.app_mq, "drain", lambda: batches.pop(0) if batches else [])
    assert fake_app.poll(0) == batch[:1]
    with pytest.raises(SharedMemoryError, match="APP_ADD_SEGMENT event without its payload"):
        fake_app.poll(0)
    assert fake_app.poll(0) == batch[2:]
    assert del_seg in fake_app.retired_segments  # the mq's segment: retired, not unmapped
    assert fake_app.poll(0) == []


def test_a_bad_first_event_raises_at_once(fake_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    assert fake_app.app_mq is not None
    batch = [_event(SessionEvent.CTRL_ACCEPTED), _event(SessionEvent.IO_RX, 3)]
    batches = [batch]
    monkeypatch.setattr(fake_app.app_mq, "drain", lambda: batches.pop(0) if batches else [])
    with pytest.raises(SharedMemoryError, match="ACCEPTED event without its payload"):
        fake_app.poll(0)
    assert fake_app.poll(0) == batch[1:]


class _DelSeg(NamedTuple):
    segment_handle: int


@pytest.mark.parametrize(
    "fault",
    ["ctrl-type-in-io-slot", "drain-raises-shared-memory-error", "drain-raises-anything"],
)
def test_detach_releases_everything_whatever_poll_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """detach polls (to sync with VPP) before it closes: whatever that poll raises, every fd
    and mapping is released."""
    fds_before, maps_before = open_fds(), memfd_mappings()
    script, fds = _segments_reply(tmp_path)
    with fake_vpp(tmp_path, [*script, SILENT]) as fake:
        app = attach(fake.path, use_mq_eventfd=False)
        assert app.app_mq is not None and len(memfd_mappings()) > len(maps_before)
        if fault == "ctrl-type-in-io-slot":
            app.app_mq.send_io(SessionEvent.IO_RX, 1)
            _write_io_slot_type(app.app_mq, SessionEvent.CTRL_APP_ADD_SEGMENT)
            with pytest.raises(SharedMemoryError):
                app.poll(0)
            app.app_mq.send_io(SessionEvent.IO_RX, 2)  # and one more for detach's poll
            _write_io_slot_type(app.app_mq, SessionEvent.CTRL_APP_ADD_SEGMENT)
            app.detach()
        else:
            error = SharedMemoryError("bad") if "shared" in fault else RuntimeError("bug")

            def drain() -> list[Event]:
                raise error

            monkeypatch.setattr(app.app_mq, "drain", drain)
            with pytest.raises(type(error)) if fault == "drain-raises-anything" else nullcontext():
                app.detach()
        assert app.closed
    for fd in fds:
        os.close(fd)
    assert open_fds() == fds_before and memfd_mappings() == maps_before


def test_close_releases_everything_when_a_segment_is_in_use(fake_app: App) -> None:
    """A view of a segment still alive keeps that mapping (Python cannot unmap it), but close
    releases everything else and reports one pyvcl error; once the view goes, so does it."""
    assert fake_app.vpp_segment is not None
    view = fake_app.vpp_segment.view[0:8]  # e.g. a Fifo.peek result kept too long
    sock = fake_app.sapi.sock
    with pytest.raises(LocalError, match="still in use") as e:
        fake_app.close()
    assert e.value.errno == errno.EBUSY
    assert fake_app.closed and sock.fileno() == -1 and not fake_app.fds
    view.release()  # then the mapping goes with the last reference (no_fd_leaks checks)
    del e


@pytest.mark.parametrize(
    "bad",
    ["opaque0", "fsh-misaligned", "fsh-beyond"],
)
def test_a_rejected_segment_header_leaves_nothing_mapped(tmp_path: Path, bad: str) -> None:
    """SharedMemoryError (not BufferError from closing an mmap a view still holds), and no
    fd or mapping left behind even while the exception (and its traceback) is alive."""
    from pyvcl.wire.segment import SSVM_SHARED_HEADER

    vfd, voff, afd, aoff = vpp_like_segments()
    with mmap.mmap(afd, 3 * mmap.PAGESIZE) as m:
        opaque = SSVM_SHARED_HEADER.offset("opaque")
        if bad == "opaque0":
            m[opaque : opaque + 8] = bytes(8)
        elif bad == "fsh-misaligned":
            m[opaque : opaque + 8] = (8192 + 8).to_bytes(8, "little")
        else:
            m[opaque : opaque + 8] = (1 << 20).to_bytes(8, "little")
    fds_before, maps_before = open_fds(), memfd_mappings()
    script = [Send(attach_reply(app_mq=aoff, vpp_ctrl_mq=voff, segment_handle=1 << 32), [vfd, afd])]
    with fake_vpp(tmp_path, script) as fake, pytest.raises(SharedMemoryError) as e:
        attach(fake.path, use_mq_eventfd=False)
    assert e.value.__traceback__ is not None  # still alive, with every frame it went through
    assert open_fds() == fds_before and memfd_mappings() == maps_before
    os.close(vfd)
    os.close(afd)


def _pipe() -> tuple[int, list[int]]:
    r, w = os.pipe()
    return r, [r, w]


def _socket() -> tuple[int, list[int]]:
    a, b = socket.socketpair()
    fa, fb = a.detach(), b.detach()
    return fa, [fa, fb]


def _directory() -> tuple[int, list[int]]:
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    return fd, [fd]


def _eventfd() -> tuple[int, list[int]]:
    fd = os.eventfd(0)
    return fd, [fd]


def _memfd() -> tuple[int, list[int]]:
    fd, _ = app_mq_segment()
    return fd, [fd]


@pytest.mark.parametrize(
    ("flag", "make", "received"),
    [
        (SessionFdFlag.MEMFD_SEGMENT, _pipe, "pipe:"),
        (SessionFdFlag.MEMFD_SEGMENT, _eventfd, "anon_inode:[eventfd]"),
        (SessionFdFlag.VPP_MQ_SEGMENT, _directory, "/"),
        (SessionFdFlag.MQ_EVENTFD, _socket, "socket:"),
        (SessionFdFlag.MQ_EVENTFD, _memfd, "/memfd:"),
        (SessionFdFlag.VPP_MQ_EVENTFD, _pipe, "pipe:"),
    ],
    ids=["pipe-as-segment", "eventfd-as-segment", "dir-as-vpp-segment", "socket-as-eventfd",
         "memfd-as-eventfd", "pipe-as-vpp-eventfd"],
)  # fmt: skip
def test_an_fd_of_the_wrong_kind(
    tmp_path: Path, flag: SessionFdFlag, make: Any, received: str
) -> None:
    """An fd that is not the memfd or eventfd its role needs: an AppSocketError that says what
    was expected and what came (not a bare OSError, or an eventfd that fails later)."""
    vfd, voff, afd, aoff = vpp_like_segments()
    wrong, to_close = make()
    by_role = {SessionFdFlag.VPP_MQ_SEGMENT: vfd, SessionFdFlag.MEMFD_SEGMENT: afd}
    flags = SessionFdFlag.VPP_MQ_SEGMENT | SessionFdFlag.MEMFD_SEGMENT
    if flag in (SessionFdFlag.MQ_EVENTFD, SessionFdFlag.VPP_MQ_EVENTFD):
        flags |= flag
    by_role[flag] = wrong
    sent = [by_role[f] for f in FD_ORDER if f & flags]
    reply = attach_reply(app_mq=aoff, vpp_ctrl_mq=voff, segment_handle=1 << 32, fd_flags=int(flags))
    kind = "an eventfd" if "EVENTFD" in str(flag.name) else "a memfd"
    with (
        fake_vpp(tmp_path, [Send(reply, sent)]) as fake,
        pytest.raises(AppSocketError, match=f"{flag.name} fd: expected {kind}, received") as e,
    ):
        attach(fake.path, use_mq_eventfd=flag == SessionFdFlag.MQ_EVENTFD)
    assert received in str(e.value)
    for fd in {vfd, afd, *to_close}:
        os.close(fd)


def test_worker_segment_fd_of_the_wrong_kind(tmp_path: Path) -> None:
    """SEND_FDS with an eventfd where a segment memfd belongs: AppSocketError, fd closed."""
    evfd = os.eventfd(0)
    app_script, worker_scripts, fds = _worker_fakes(tmp_path, [Send(send_fds_frame(), [evfd])])
    with (
        fake_vpp(tmp_path, app_script, worker_scripts=worker_scripts) as fake,
        closing(attach(fake.path, use_mq_eventfd=False)) as app,
        app.add_worker(timeout=1.0) as w,
    ):
        _announce(w, None)
        with pytest.raises(AppSocketError, match=r"expected a memfd, received .*eventfd"):
            w.poll(1.0)
        assert SEG_HANDLE not in w.segments
    for fd in fds:
        os.close(fd)
