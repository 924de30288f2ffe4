"""Mapping a segment memfd safely: sealed against shrinking (a shrunk memfd turns the next
access into SIGBUS, which kills the interpreter), a rejected header or an fd that is no memfd
leaves nothing mapped, and a segment still in use says so instead of leaking.  No VPP needed."""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from pyvcl.errors import LocalError, SharedMemoryError
from pyvcl.segment import Segment, seal_shrink
from pyvcl.wire.segment import SSVM_SHARED_HEADER

from .segment_fixtures import make_segment

SIZE = 1 << 20


def segment_memfd(flags: int = os.MFD_ALLOW_SEALING, size: int = SIZE) -> int:
    """A memfd holding a fresh fifo segment, created the way VPP creates one (regular pages:
    ``MFD_ALLOW_SEALING``; hugetlb memfds have no flag) but without VPP's own seal."""
    seg = make_segment(size)
    fd = os.memfd_create("seal-test", flags | os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    os.pwrite(fd, bytes(seg.buf), 0)
    seg.close()
    return fd


@pytest.fixture
def memfd() -> Iterator[int]:
    fd = segment_memfd()
    yield fd
    os.close(fd)


def test_map_fd_seals_the_memfd_against_shrinking(memfd: int) -> None:
    assert not fcntl.fcntl(memfd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK
    seg = Segment.map_fd(memfd)
    try:
        assert seg.shrink_sealed is True
        seals = fcntl.fcntl(memfd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_SHRINK
        assert not seals & (fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        with pytest.raises(PermissionError):
            os.ftruncate(memfd, SIZE // 2)
        # Another process (the peer that sent it) cannot shrink it either.
        child = subprocess.run(
            [sys.executable, "-c", f"import os; os.ftruncate({memfd}, 4096)"],
            pass_fds=[memfd],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert child.returncode == 1 and "PermissionError" in child.stderr, child.stderr
        assert os.fstat(memfd).st_size == SIZE
        assert bytes(seg.view[-16:]) == bytes(16)  # the last page is still there to touch
        os.ftruncate(memfd, 2 * SIZE)  # growing is not restricted
    finally:
        seg.close()


def test_sealing_twice_and_an_already_sealed_memfd(memfd: int) -> None:
    """VPP's memfds already carry F_SEAL_SHRINK (clib_mem_vm_create_fd): adding it again is
    harmless, and so is a memfd whose seals are themselves sealed (F_SEAL_SEAL)."""
    assert seal_shrink(memfd) and seal_shrink(memfd)
    fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL)
    seg = Segment.map_fd(memfd)
    assert seg.shrink_sealed is True
    seg.close()


def test_an_unsealable_memfd_is_mapped_with_a_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    """Without MFD_ALLOW_SEALING (VPP's hugetlb segments) the seal cannot be added: map anyway,
    as C VCL does, and say so in a debug line."""
    fd = segment_memfd(flags=0)
    try:
        with caplog.at_level(logging.DEBUG, logger="pyvcl.segment"):
            seg = Segment.map_fd(fd)
        assert seg.shrink_sealed is False
        assert "cannot be sealed against shrinking" in caplog.text
        assert "SIGBUS" in caplog.text
        seg.close()
    finally:
        os.close(fd)


_SIGBUS_CHILD = """
import os, sys
sys.path.insert(0, {root!r})
from pyvcl.segment import Segment
from tests.test_segment_seal import segment_memfd
fd = segment_memfd(flags={flags})
seg = Segment.map_fd(fd)
try:
    os.ftruncate(fd, 4096)  # what a hostile or buggy peer could do
except PermissionError:
    print("refused")
print(seg.view[-1])  # the last page: SIGBUS if the memfd shrank
"""


@pytest.mark.parametrize("sealable", [True, False], ids=["allow-sealing", "no-sealing"])
def test_a_shrunk_memfd_kills_only_without_the_seal(sealable: bool) -> None:
    """In a child (it may die): with the seal the shrink is refused and the access works;
    without it (an unsealable memfd) the same access is SIGBUS -- the residual risk."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = _SIGBUS_CHILD.format(root=root, flags=os.MFD_ALLOW_SEALING if sealable else 0)
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    if sealable:
        assert child.returncode == 0, child.stderr
        assert child.stdout.split() == ["refused", "0"]
    else:
        assert child.returncode == -signal.SIGBUS, (child.returncode, child.stderr)


def _maps_of(fd: int) -> list[str]:
    ino = os.fstat(fd).st_ino
    with open("/proc/self/maps") as f:
        return [line for line in f if line.split()[4] == str(ino) and "/memfd:" in line]


def _fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_a_rejected_header_leaves_nothing_mapped(memfd: int) -> None:
    """SharedMemoryError, not the BufferError of closing an mmap a live view still holds, and
    neither the mapping nor mmap's duplicate of the fd survives (checked while the exception
    and its traceback are alive)."""
    opaque = SSVM_SHARED_HEADER.offset("opaque")
    os.pwrite(memfd, bytes(8), opaque)  # no fifo segment header
    fds = _fds()
    with pytest.raises(SharedMemoryError, match="no fifo segment header") as e:
        Segment.map_fd(memfd)
    assert e.value.__traceback__ is not None
    assert _maps_of(memfd) == [] and _fds() == fds


@pytest.mark.parametrize("kind", ["directory", "pipe", "socket"])
def test_an_fd_that_is_no_memfd(kind: str) -> None:
    """A SharedMemoryError naming what the fd is (a bare OSError from mmap before)."""
    if kind == "directory":
        fds = [os.open("/", os.O_RDONLY | os.O_DIRECTORY)]
    elif kind == "pipe":
        fds = list(os.pipe())
    else:
        import socket

        a, b = socket.socketpair()
        fds = [a.detach(), b.detach()]
    try:
        with pytest.raises(SharedMemoryError, match="not a memfd"):
            Segment.map_fd(fds[0])
    finally:
        for fd in fds:
            os.close(fd)


def test_close_of_a_segment_still_in_use(memfd: int) -> None:
    """A live view keeps the mapping (Python cannot unmap under it): LocalError EBUSY, and a
    later close succeeds once the view is gone."""
    seg = Segment.map_fd(memfd)
    view = seg.view[:8]
    with pytest.raises(LocalError, match="still in use") as e:
        seg.close()
    assert e.value.errno == errno.EBUSY and not seg.closed and _maps_of(memfd)
    view.release()
    seg.close()
    assert seg.closed and _maps_of(memfd) == []


def test_a_segment_too_small_for_its_header_releases_its_view() -> None:
    """The constructor releases its view when it rejects the buffer: the caller can close."""
    buf = mmap.mmap(-1, mmap.PAGESIZE)
    with pytest.raises(SharedMemoryError, match="no fifo segment header") as e:
        Segment(buf)
    assert e.value.__traceback__ is not None  # the half-made Segment is still referenced
    buf.close()
