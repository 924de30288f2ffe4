"""Shared-memory segments: mapping a memfd VPP sent us and resolving offsets inside it.

Every offset VPP hands out (fifo, mq, chunk, ext-config) is relative to the segment's fifo
segment header ("fsh"), which sits ``ssvm.opaque[0]`` bytes into the mapping (protocol.md 3.1).
A segment is memory another process writes, so `Segment.at` checks every offset and length
against the mapping before anything is read: a bad value raises `SharedMemoryError`, never a
read outside the mapping.

A segment is also a file another process can shrink under the mapping, and touching a page past
the end of a shrunk memfd is SIGBUS, which kills the interpreter.  `Segment.map_fd` therefore
seals the memfd against shrinking (``F_SEAL_SHRINK``) before it checks the size; VPP creates its
segments sealable and seals them so itself.  A memfd that cannot be sealed (hugetlb memfds are
created without ``MFD_ALLOW_SEALING``) is mapped anyway, as C VCL maps every segment, with a
debug log line saying so (docs/robustness.md).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import stat
from typing import Any

from .errors import LocalError, SharedMemoryError
from .wire.segment import FIFO_SEGMENT_HEADER, FIFO_SEGMENT_SLICE, SSVM_SHARED_HEADER

_SSVM = SSVM_SHARED_HEADER
_FSH = FIFO_SEGMENT_HEADER
_SLICE = FIFO_SEGMENT_SLICE
_OPAQUE0 = _SSVM.offset("opaque")
_SSVM_SIZE = _SSVM["ssvm_size"]
_PAGE = mmap.PAGESIZE
# Linux (Python 3.8+ has them on Linux; elsewhere nothing can be sealed).
_F_ADD_SEALS = getattr(fcntl, "F_ADD_SEALS", None)
_F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", None)
_F_SEAL_SHRINK = getattr(fcntl, "F_SEAL_SHRINK", 0x2)

log = logging.getLogger(__name__)


class Segment:
    """One mapped segment.  ``buf`` is the whole mapping (an mmap, or a bytearray in tests).

    ``fsh`` is the mapping offset of the fifo segment header; `at` turns an fsh-relative offset
    into a checked mapping offset.  ``handle`` is VPP's segment handle (None for the
    vpp-mq segment, which has none), ``name`` the memfd/segment name when known.
    """

    def __init__(self, buf: Any, *, name: str = "", handle: int | None = None) -> None:
        self.buf = buf
        self.view = memoryview(buf)
        self.size = len(self.view)
        self.name = name
        self.handle = handle
        self._atomics: Any = None
        # Whether the memfd is sealed against shrinking (set by map_fd; None: not from an fd).
        self.shrink_sealed: bool | None = None
        try:
            self._check_header()
        except BaseException:
            self.view.release()  # or the caller could not close the mmap it passed
            raise

    def _check_header(self) -> None:
        name = self.name
        if self.size < _SSVM.size:
            raise SharedMemoryError(f"segment {name!r}: {self.size} bytes, smaller than a header")
        fsh: int = int(_SSVM["opaque"].get(self.view)[0])
        if fsh == 0:
            raise SharedMemoryError(f"segment {name!r} has no fifo segment header (opaque[0]=0)")
        if fsh % 64 or fsh + _FSH.size > self.size:
            raise SharedMemoryError(f"segment {name!r}: fifo header offset {fsh} is invalid")
        self.fsh = fsh
        self.n_slices: int = int(_FSH["n_slices"].get(self.view, fsh))
        if self.fsh + _FSH.size + self.n_slices * _SLICE.size > self.size:
            raise SharedMemoryError(f"segment {name!r}: {self.n_slices} slices do not fit")

    # -- mapping --------------------------------------------------------------------------------
    @classmethod
    def map_fd(cls, fd: int, *, name: str = "", handle: int | None = None) -> Segment:
        """Map a segment memfd as VCL does: read ``ssvm_size`` from the first page, then map
        that many bytes shared read-write.  The fd stays open and owned by the caller.

        First the memfd is sealed against shrinking (`seal_shrink`), so the size checked here
        stays true for the life of the mapping.  Anything wrong raises `SharedMemoryError`,
        with nothing left mapped."""
        name = name or _memfd_name(fd)
        label = name or f"fd {fd}"
        try:
            sealed = seal_shrink(fd)
            st = os.fstat(fd)
        except OSError as e:
            raise SharedMemoryError(f"segment {label!r}: fd {fd} is not usable: {e}") from e
        if not stat.S_ISREG(st.st_mode):
            raise SharedMemoryError(f"segment {label!r}: fd {fd} is {describe_fd(fd)}, not a memfd")
        if not sealed:
            log.debug(
                "segment %r: memfd cannot be sealed against shrinking (no MFD_ALLOW_SEALING, "
                "e.g. hugetlb); mapped anyway, as VCL does: a process that shrinks it can make "
                "the next access SIGBUS",
                label,
            )
        file_size = st.st_size
        if file_size < _PAGE:
            raise SharedMemoryError(f"segment {label!r}: memfd is only {file_size} bytes")
        try:
            with mmap.mmap(fd, _PAGE, mmap.MAP_SHARED, mmap.PROT_READ) as first:
                ssvm_size = int(_SSVM_SIZE.get(first))
            if not _PAGE <= ssvm_size <= file_size:
                raise SharedMemoryError(
                    f"segment {label!r}: ssvm_size {ssvm_size} does not fit the "
                    f"{file_size}-byte memfd"
                )
            mm = mmap.mmap(fd, ssvm_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            if isinstance(e, SharedMemoryError):
                raise
            raise SharedMemoryError(f"segment {label!r}: cannot map fd {fd}: {e}") from e
        try:
            seg = cls(mm, name=name, handle=handle)
        except BaseException:
            mm.close()  # the failed Segment released its view
            raise
        seg.shrink_sealed = sealed
        return seg

    def close(self) -> None:
        """Release the mapping (idempotent).

        Views of the mapping that are still alive (a `Fifo.peek` result, a numpy array over
        ``buf``) keep it mapped: then `LocalError` (EBUSY) is raised and the mapping stays until
        they are released and garbage collected.  Everything else is released either way."""
        if self._atomics is not None:
            self._atomics.close()
            self._atomics = None
        busy = ""  # (a message, not the exception: no reference cycle through this frame)
        try:
            self.view.release()
        except BufferError as e:  # someone exported the view itself
            busy = str(e)
        if isinstance(self.buf, mmap.mmap) and not self.buf.closed:
            try:
                self.buf.close()
            except BufferError as e:
                busy = str(e)
        if busy:
            raise LocalError(
                f"segment {self.name!r} is still in use by views of it; it stays mapped until "
                f"they are released ({busy})",
                errno.EBUSY,
            )

    @property
    def closed(self) -> bool:
        return isinstance(self.buf, mmap.mmap) and self.buf.closed

    @property
    def atomics(self) -> Any:
        """An `AtomicRegion` over the whole mapping (created on first use)."""
        if self._atomics is None:
            from .atomics import AtomicRegion

            self._atomics = AtomicRegion(self.buf)
        return self._atomics

    # -- offsets ----------------------------------------------------------------------------------
    def at(self, offset: int, length: int, what: str = "object") -> int:
        """Mapping offset of ``length`` bytes at fsh-relative ``offset``, checked.

        Offset 0 is the header itself and never a valid object (``fs_sptr_t`` NULL).
        """
        if offset <= 0 or length < 0 or self.fsh + offset + length > self.size:
            raise SharedMemoryError(
                f"segment {self.name!r}: {what} at offset {offset:#x} (+{length}) is outside "
                f"the {self.size - self.fsh}-byte segment"
            )
        return self.fsh + offset

    def offset_of(self, mapping_offset: int) -> int:
        """The fsh-relative offset of a mapping offset (inverse of `at`)."""
        return mapping_offset - self.fsh

    def slice_at(self, index: int) -> int:
        """Mapping offset of ``fifo_segment_slice_t`` number ``index``, checked."""
        if not 0 <= index < self.n_slices:
            raise SharedMemoryError(
                f"segment {self.name!r}: slice {index} does not exist ({self.n_slices} slices)"
            )
        return self.fsh + _FSH.size + index * _SLICE.size

    # -- decoding (cold path) -------------------------------------------------------------------
    def ssvm_header(self) -> Any:
        return _SSVM.unpack(self.view, 0)

    def fifo_header(self) -> Any:
        return _FSH.unpack(self.view, self.fsh)

    def slice(self, index: int) -> Any:
        return _SLICE.unpack(self.view, self.slice_at(index))

    def free_bytes(self) -> int:
        """Bytes the bump allocator can still hand out (max_byte_index - byte_index)."""
        h = self.fifo_header()
        return max(0, int(h.max_byte_index) - int(h.byte_index))

    def __repr__(self) -> str:
        return f"<Segment {self.name!r} handle={self.handle} size={self.size}>"


def seal_shrink(fd: int) -> bool:
    """Seal the memfd ``fd`` against shrinking (``F_SEAL_SHRINK``); True if it is sealed so.

    One ``fcntl(F_ADD_SEALS)``, which succeeds on every memfd created with
    ``MFD_ALLOW_SEALING`` (all of VPP's regular-page segments; VPP has already added this seal
    itself).  If the kernel refuses -- a memfd without ``MFD_ALLOW_SEALING`` carries
    ``F_SEAL_SEAL`` (EPERM), a file that is no memfd has no seals (EINVAL) --
    ``F_GET_SEALS`` says whether the seal is there anyway.  Growing is not restricted."""
    if _F_ADD_SEALS is None or _F_GET_SEALS is None:
        return False
    try:
        fcntl.fcntl(fd, _F_ADD_SEALS, _F_SEAL_SHRINK)
        return True
    except OSError as e:
        if e.errno == errno.EBADF:
            raise
    try:
        return bool(fcntl.fcntl(fd, _F_GET_SEALS) & _F_SEAL_SHRINK)
    except OSError:
        return False


def describe_fd(fd: int) -> str:
    """What kind of file ``fd`` is, for error messages: ``/proc/self/fd``'s name for it
    ("anon_inode:[eventfd]", "socket:[1234]", "/memfd:seg (deleted)"), else its file type."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        return f"unusable ({e.strerror})"
    kinds = [
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISFIFO, "a pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ]
    return next((text for test, text in kinds if test(mode)), "an anonymous inode")


def _memfd_name(fd: int) -> str:
    """The name a memfd was created with ("memfd:seg-2-2-4 (deleted)" -> "seg-2-2-4")."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""
    name = target.removeprefix("/memfd:").removesuffix(" (deleted)")
    return name
