"""Shared-memory segments: mapping a memfd VPP sent us and resolving offsets inside it.

Every offset VPP hands out (fifo, mq, chunk, ext-config) is relative to the segment's fifo
segment header ("fsh"), which sits ``ssvm.opaque[0]`` bytes into the mapping (protocol.md 3.1).
A segment is memory another process writes, so `Segment.at` checks every offset and length
against the mapping before anything is read: a bad value raises `SharedMemoryError`, never a
read outside the mapping.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

from .errors import SharedMemoryError
from .wire.segment import FIFO_SEGMENT_HEADER, FIFO_SEGMENT_SLICE, SSVM_SHARED_HEADER

_SSVM = SSVM_SHARED_HEADER
_FSH = FIFO_SEGMENT_HEADER
_SLICE = FIFO_SEGMENT_SLICE
_OPAQUE0 = _SSVM.offset("opaque")
_SSVM_SIZE = _SSVM["ssvm_size"]
_PAGE = mmap.PAGESIZE


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
        that many bytes shared read-write.  The fd stays open and owned by the caller."""
        try:
            file_size = os.fstat(fd).st_size
        except OSError as e:
            raise SharedMemoryError(f"segment {name!r}: fd {fd} is not usable: {e}") from e
        if file_size < _PAGE:
            raise SharedMemoryError(f"segment {name!r}: memfd is only {file_size} bytes")
        with mmap.mmap(fd, _PAGE, mmap.MAP_SHARED, mmap.PROT_READ) as first:
            ssvm_size = int(_SSVM_SIZE.get(first))
        if not _PAGE <= ssvm_size <= file_size:
            raise SharedMemoryError(
                f"segment {name!r}: ssvm_size {ssvm_size} does not fit the {file_size}-byte memfd"
            )
        mm = mmap.mmap(fd, ssvm_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            return cls(mm, name=name or _memfd_name(fd), handle=handle)
        except BaseException:
            mm.close()
            raise

    def close(self) -> None:
        """Release the mapping (idempotent).  Views handed out must be released first."""
        if self._atomics is not None:
            self._atomics.close()
            self._atomics = None
        self.view.release()
        if isinstance(self.buf, mmap.mmap) and not self.buf.closed:
            self.buf.close()

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


def _memfd_name(fd: int) -> str:
    """The name a memfd was created with ("memfd:seg-2-2-4 (deleted)" -> "seg-2-2-4")."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""
    name = target.removeprefix("/memfd:").removesuffix(" (deleted)")
    return name
