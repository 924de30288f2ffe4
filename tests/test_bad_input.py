"""Bad input from the app socket and from shared memory: a clear pyvcl error every time,
never a hang, a crash or a leaked descriptor.  No VPP needed (tests/fake_vpp.py)."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from pyvcl.app import App, Worker
from pyvcl.errors import (
    AppSocketError,
    SessionLayerError,
    SharedMemoryError,
    Timeout,
    VclError,
    VppDisconnected,
    VppUnreachable,
)
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


def _announce(w: Worker, seg_fd: int | None, **fields: object) -> None:
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
