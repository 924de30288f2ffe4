"""Exchanges bound to one word: a function of no argument, for per-call paths.

A ctypes call spends most of its time converting arguments: on the project's 2-vCPU x86-64
machine a call of the stub backend's ``xchg32(address, value)`` costs about 170 ns, the same
instruction behind a function of no argument about 55 ns.  A send exchanges its tx fifo's
``has_event`` on every call, so `bound_xchg32` makes such a function per word: a few bytes of
x86-64 with the address and the value as immediates.

The code goes into arenas mapped twice from one memfd: writable (where stubs are written) and
executable (where they are called), so no mapping is ever writable and executable at once.
Each stub gets a cache line of its own and is written before anything can call it, and stubs
are kept per (address, value) -- a process binds one per fifo header it uses -- for the life
of the process.  Where this does not apply (another machine, the libatomic backend chosen, the
kernel refusing the mappings), `bound_xchg32` returns None and callers use the backend's
two-argument function.

The address is not checked here: the caller checks it (`AtomicRegion.bound_xchg32`) and must
not call the function once the memory may be unmapped.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
from collections.abc import Callable

from .backends import _MACHINE

_STUB = 64  # bytes per stub: a cache line of its own
_ARENA = 1 << 16
_MOVABS_RDI = bytes.fromhex("48bf")  # movabs rdi, imm64
_MOV_EAX = bytes.fromhex("b8")  # mov eax, imm32
_XCHG_RET = bytes.fromhex("8707 c3")  # xchg [rdi], eax (implicitly locked: a full barrier); ret

_lock = threading.Lock()
_bound: dict[tuple[int, int], Callable[[], int]] = {}
_arena: tuple[mmap.mmap, int] | None = None  # (writable view, executable address)
_used = _ARENA  # bytes of the current arena handed out (full: make another)
_refused: str | None = None  # why arenas cannot be made here, once known


def _libc_mmap() -> Callable[..., int | None]:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.mmap
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                   ctypes.c_long]  # fmt: skip
    fn.restype = ctypes.c_void_p
    return fn


def _new_arena() -> tuple[mmap.mmap, int]:
    fd = os.memfd_create("pyvcl-bound-atomics", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, _ARENA)
        writable = mmap.mmap(fd, _ARENA)
        p = _libc_mmap()(None, _ARENA, mmap.PROT_READ | mmap.PROT_EXEC, mmap.MAP_SHARED, fd, 0)
        if p is None or p == (1 << 64) - 1:
            writable.close()
            raise OSError(ctypes.get_errno(), "executable mapping of the stub arena refused")
        return writable, int(p)  # (both stay mapped for the life of the process)
    finally:
        os.close(fd)


def _forget_arena_in_child() -> None:
    # The arena's memfd is shared with the parent: a forked child writing new stubs where the
    # parent writes its next ones would overwrite the parent's code.  The stubs bound so far
    # stay valid (neither process writes below its offset again); new ones go elsewhere.
    global _arena, _used, _lock
    _arena, _used, _lock = None, _ARENA, threading.Lock()


os.register_at_fork(after_in_child=_forget_arena_in_child)


def bound_xchg32(address: int, value: int) -> Callable[[], int] | None:
    """A function of no argument exchanging the (4-byte aligned) 32-bit word at ``address``
    with ``value`` and returning the old value, sequentially consistent; None where stubs are
    not available (the caller then uses the backend's ``xchg32``)."""
    global _arena, _used, _refused
    from . import backend_name  # (the backend is chosen when the package is imported)

    if _MACHINE != "x86_64" or backend_name() != "stub-x86_64" or _refused is not None:
        return None
    key = (address, value & 0xFFFFFFFF)
    with _lock:
        fn = _bound.get(key)
        if fn is not None:
            return fn
        if _used + _STUB > _ARENA:
            try:
                _arena = _new_arena()
            except (OSError, AttributeError) as e:  # (AttributeError: no memfd_create)
                _refused = str(e) or type(e).__name__
                return None
            _used = 0
        assert _arena is not None
        writable, code = _arena
        stub = (
            _MOVABS_RDI
            + address.to_bytes(8, "little")
            + _MOV_EAX
            + key[1].to_bytes(4, "little")
            + _XCHG_RET
        )
        writable[_used : _used + len(stub)] = stub
        fn = ctypes.PYFUNCTYPE(ctypes.c_uint32)(code + _used)
        _used += _STUB
        _bound[key] = fn
        return fn
