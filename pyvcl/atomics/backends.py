"""The atomic-operation backends of `pyvcl.atomics`: gcc's libatomic through ctypes, or a few
bytes of hand-assembled machine code per operation mapped executable (the "stub"), and the
choice between them (`_select`).  Every primitive takes an absolute address; `AtomicRegion`
does the bounds and alignment checks."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import threading
from collections.abc import Callable
from typing import NamedTuple, NoReturn

from pyvcl.errors import VclError
from pyvcl.wire.abi import MACHINE

_ACQUIRE, _RELEASE, _SEQ_CST = 2, 3, 5  # C11 memory_order values, as libatomic takes them
_V = ctypes.c_void_p  # the cheapest ctypes argument converter for any int that fits a register
_MACHINE = MACHINE


class _Ops(NamedTuple):
    """One backend: each primitive takes an absolute address."""

    name: str
    load32: Callable[[int], int]
    load64: Callable[[int], int]
    store32: Callable[[int, int], object]
    store64: Callable[[int, int], object]
    cas32: Callable[[int, int, int], int]
    cas64: Callable[[int, int, int], int]
    xchg32: Callable[[int, int], int]
    fetch_add32: Callable[[int, int], int]
    fetch_add64: Callable[[int, int], int]
    fetch_sub32: Callable[[int, int], int]
    fetch_sub64: Callable[[int, int], int]
    fetch_or32: Callable[[int, int], int]
    fetch_and32: Callable[[int, int], int]
    error: str | None = None
    #: Add 1 to the 32-bit word at the first address, then to the one at the second; return
    #: the second's old value (an svm queue's publish: ring cursize, then queue cursize).  One
    #: call where the backend has it (the x86-64 stub), two fetch_add32 calls elsewhere.
    fetch_inc_pair32: Callable[[int, int], int] | None = None
    #: Subtract 1 from the 32-bit word at the first address, then from the one at the second;
    #: return both old values as ``first | second << 32`` (an svm queue consumer's free: queue
    #: cursize, then ring cursize).
    fetch_dec_pair32: Callable[[int, int], int] | None = None


def _with_pairs(ops: _Ops) -> _Ops:
    """`ops` with the pair operations made of two fetch_add32/fetch_sub32 calls where the
    backend has none of its own."""
    add, sub = ops.fetch_add32, ops.fetch_sub32

    def fetch_inc_pair32(first: int, second: int) -> int:
        add(first, 1)
        return add(second, 1)

    def fetch_dec_pair32(first: int, second: int) -> int:
        return sub(first, 1) | sub(second, 1) << 32

    return ops._replace(
        fetch_inc_pair32=ops.fetch_inc_pair32 or fetch_inc_pair32,
        fetch_dec_pair32=ops.fetch_dec_pair32 or fetch_dec_pair32,
    )


# ---------------------------------------------------------------------------------------------
# Backend 1: libatomic


def _libatomic_ops() -> _Ops:
    try:
        lib = ctypes.PyDLL("libatomic.so.1")  # PyDLL: these never block, keep the GIL
    except OSError:
        path = ctypes.util.find_library("atomic")
        if path is None:
            raise
        lib = ctypes.PyDLL(path)

    def fn(name: str, nargs: int, restype: type | None) -> Callable[..., int]:
        f = lib[name]
        f.argtypes = [_V] * nargs
        f.restype = restype
        return f

    u32, u64 = ctypes.c_uint32, ctypes.c_uint64
    ld4, ld8 = fn("__atomic_load_4", 2, u32), fn("__atomic_load_8", 2, u64)
    st4, st8 = fn("__atomic_store_4", 3, None), fn("__atomic_store_8", 3, None)
    xchg4 = fn("__atomic_exchange_4", 3, u32)
    add4, add8 = fn("__atomic_fetch_add_4", 3, u32), fn("__atomic_fetch_add_8", 3, u64)
    sub4, sub8 = fn("__atomic_fetch_sub_4", 3, u32), fn("__atomic_fetch_sub_8", 3, u64)
    or4, and4 = fn("__atomic_fetch_or_4", 3, u32), fn("__atomic_fetch_and_4", 3, u32)

    def make_cas(
        width: int, scratch_type: type[ctypes.c_uint32] | type[ctypes.c_uint64]
    ) -> Callable[[int, int, int], int]:
        cx = fn(f"__atomic_compare_exchange_{width}", 5, ctypes.c_bool)
        local = threading.local()

        def cas(a: int, expected: int, new: int) -> int:
            # The expected value is passed (and the seen value returned) through memory.
            scratch: ctypes.c_uint32 | ctypes.c_uint64
            try:
                scratch, scratch_addr = local.s
            except AttributeError:
                scratch = scratch_type()
                scratch_addr = ctypes.addressof(scratch)
                local.s = (scratch, scratch_addr)
            scratch.value = expected
            cx(a, scratch_addr, new, _SEQ_CST, _ACQUIRE)
            return scratch.value

        return cas

    return _with_pairs(
        _Ops(
            "libatomic",
            lambda a: ld4(a, _ACQUIRE),
            lambda a: ld8(a, _ACQUIRE),
            lambda a, v: st4(a, v, _RELEASE),
            lambda a, v: st8(a, v, _RELEASE),
            make_cas(4, ctypes.c_uint32),
            make_cas(8, ctypes.c_uint64),
            lambda a, v: xchg4(a, v, _SEQ_CST),
            lambda a, v: add4(a, v, _SEQ_CST),
            lambda a, v: add8(a, v, _SEQ_CST),
            lambda a, v: sub4(a, v, _SEQ_CST),
            lambda a, v: sub8(a, v, _SEQ_CST),
            lambda a, v: or4(a, v, _SEQ_CST),
            lambda a, v: and4(a, v, _SEQ_CST),
        )
    )


# ---------------------------------------------------------------------------------------------
# Backend 2: machine-code stubs.  Arguments: address, value/expected, new; result = old value.

# x86-64 System V: rdi, rsi, rdx in; rax out.  A plain mov is already an acquire load / release
# store under x86-TSO; every lock-prefixed instruction (and xchg, implicitly locked) is a full
# barrier, which is what seq_cst read-modify-writes need.
_X86_64: dict[str, bytes] = {
    "load32": bytes.fromhex("8b07 c3"),  # mov eax, [rdi]; ret
    "load64": bytes.fromhex("488b07 c3"),  # mov rax, [rdi]; ret
    "store32": bytes.fromhex("8937 c3"),  # mov [rdi], esi; ret
    "store64": bytes.fromhex("488937 c3"),  # mov [rdi], rsi; ret
    "cas32": bytes.fromhex(
        "89f0"  # mov eax, esi
        "f00fb117"  # lock cmpxchg [rdi], edx   ; eax = value seen either way
        "c3"  # ret
    ),
    "cas64": bytes.fromhex(
        "4889f0"  # mov rax, rsi
        "f0480fb117"  # lock cmpxchg [rdi], rdx
        "c3"  # ret
    ),
    "xchg32": bytes.fromhex("89f0 8707 c3"),  # mov eax, esi; xchg [rdi], eax; ret
    "fetch_add32": bytes.fromhex("89f0 f00fc107 c3"),  # mov eax, esi; lock xadd [rdi], eax; ret
    "fetch_inc_pair32": bytes.fromhex(
        "b801000000"  # mov eax, 1
        "f00fc107"  # lock xadd [rdi], eax
        "b801000000"  # mov eax, 1
        "f00fc106"  # lock xadd [rsi], eax   ; eax = the second word's old value
        "c3"  # ret
    ),
    "fetch_dec_pair32": bytes.fromhex(
        "b8ffffffff"  # mov eax, -1
        "f00fc107"  # lock xadd [rdi], eax   ; zero-extends into rax
        "baffffffff"  # mov edx, -1
        "f00fc116"  # lock xadd [rsi], edx
        "48c1e220"  # shl rdx, 32
        "4809d0"  # or rax, rdx
        "c3"  # ret
    ),
    "fetch_add64": bytes.fromhex("4889f0 f0480fc107 c3"),  # mov rax, rsi; lock xadd [rdi], rax
    "fetch_sub32": bytes.fromhex(
        "89f0"  # mov eax, esi
        "f7d8"  # neg eax
        "f00fc107"  # lock xadd [rdi], eax
        "c3"  # ret
    ),
    "fetch_sub64": bytes.fromhex(
        "4889f0"  # mov rax, rsi
        "48f7d8"  # neg rax
        "f0480fc107"  # lock xadd [rdi], rax
        "c3"  # ret
    ),
    "fetch_or32": bytes.fromhex(
        "8b07"  # mov eax, [rdi]
        "89c1"  # 1: mov ecx, eax
        "09f1"  # or ecx, esi
        "f00fb10f"  # lock cmpxchg [rdi], ecx   ; on failure eax = current value
        "75f6"  # jne 1b
        "c3"  # ret
    ),
    "fetch_and32": bytes.fromhex(
        "8b07"  # mov eax, [rdi]
        "89c1"  # 1: mov ecx, eax
        "21f1"  # and ecx, esi
        "f00fb10f"  # lock cmpxchg [rdi], ecx
        "75f6"  # jne 1b
        "c3"  # ret
    ),
}


def _a64(*words: int) -> bytes:
    return struct.pack(f"<{len(words)}I", *words)


def _a64_rmw(op: int, x: bool) -> bytes:
    """``old = *x0; *x0 = op(old, x1)`` in an ldaxr/stlxr loop (ARMv8.0, no LSE needed)."""
    sf = 0x40000000 if x else 0  # 64-bit forms of ldaxr/stlxr
    return _a64(
        0xAA0003E3,  # mov   x3, x0
        0x885FFC60 | sf,  # 1: ldaxr w0|x0, [x3]
        op,  # <op>  w5|x5, w0|x0, w1|x1
        0x8804FC65 | sf,  # stlxr w4, w5|x5, [x3]
        0x35FFFFA4,  # cbnz  w4, 1b
        0xD65F03C0,  # ret
    )


def _a64_cas(x: bool) -> bytes:
    sf = 0x40000000 if x else 0
    sf_cmp = 0x80000000 if x else 0
    return _a64(
        0xAA0003E3,  # mov   x3, x0
        0x885FFC60 | sf,  # 1: ldaxr w0|x0, [x3]
        0x6B01001F | sf_cmp,  # cmp   w0|x0, w1|x1
        0x54000081,  # b.ne  2f
        0x8804FC62 | sf,  # stlxr w4, w2|x2, [x3]
        0x35FFFF84,  # cbnz  w4, 1b
        0xD65F03C0,  # ret
        0xD5033F5F,  # 2: clrex
        0xD65F03C0,  # ret
    )


# AAPCS64: x0, x1, x2 in; x0 out.  ldar/stlr are acquire/release; an ldaxr/stlxr loop is what
# gcc emits for a seq_cst read-modify-write without LSE.
_AARCH64: dict[str, bytes] = {
    "load32": _a64(0x88DFFC00, 0xD65F03C0),  # ldar w0, [x0]; ret
    "load64": _a64(0xC8DFFC00, 0xD65F03C0),  # ldar x0, [x0]; ret
    "store32": _a64(0x889FFC01, 0xD65F03C0),  # stlr w1, [x0]; ret
    "store64": _a64(0xC89FFC01, 0xD65F03C0),  # stlr x1, [x0]; ret
    "cas32": _a64_cas(False),
    "cas64": _a64_cas(True),
    "xchg32": _a64(
        0xAA0003E3,  # mov   x3, x0
        0x885FFC60,  # 1: ldaxr w0, [x3]
        0x8804FC61,  # stlxr w4, w1, [x3]
        0x35FFFFC4,  # cbnz  w4, 1b
        0xD65F03C0,  # ret
    ),
    "fetch_add32": _a64_rmw(0x0B010005, False),  # add w5, w0, w1
    "fetch_add64": _a64_rmw(0x8B010005, True),  # add x5, x0, x1
    "fetch_sub32": _a64_rmw(0x4B010005, False),  # sub w5, w0, w1
    "fetch_sub64": _a64_rmw(0xCB010005, True),  # sub x5, x0, x1
    "fetch_or32": _a64_rmw(0x2A010005, False),  # orr w5, w0, w1
    "fetch_and32": _a64_rmw(0x0A010005, False),  # and w5, w0, w1
}

_STUBS = {"x86_64": _X86_64, "aarch64": _AARCH64}
_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4
_MAP_PRIVATE, _MAP_ANONYMOUS = 0x02, 0x20
_MFD_CLOEXEC, _MFD_EXEC = 0x0001, 0x0010


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _map_executable(code: bytes) -> int:
    """Map `code` read+exec and return its address; the mapping lives as long as the process."""
    libc = _libc()
    mmap_, mprotect, munmap = libc.mmap, libc.mprotect, libc.munmap
    mmap_.argtypes = [_V, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    mmap_.restype = _V
    mprotect.argtypes = [_V, ctypes.c_size_t, ctypes.c_int]
    munmap.argtypes = [_V, ctypes.c_size_t]
    size = (len(code) + 4095) & ~4095
    failed = (1 << 64) - 1
    # Never writable and executable at once: write, then flip to read+exec.  The kernel syncs
    # the instruction cache when an executable mapping of the page is installed (arm64).
    p = mmap_(None, size, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
    if p is None or p == failed:
        raise OSError(ctypes.get_errno(), "mmap of the atomics stub page failed")
    ctypes.memmove(p, code, len(code))
    if mprotect(p, size, _PROT_READ | _PROT_EXEC) == 0:
        return int(p)
    first = f"mprotect(PROT_EXEC): {os.strerror(ctypes.get_errno())}"
    munmap(p, size)
    # W^X policies (PaX MPROTECT, prctl MDWE) refuse making written memory executable but allow
    # mapping a file read+exec from the start.
    try:
        try:
            fd = os.memfd_create("pyvcl-atomics", _MFD_CLOEXEC | _MFD_EXEC)
        except OSError:  # kernels before 6.3 reject MFD_EXEC
            fd = os.memfd_create("pyvcl-atomics", _MFD_CLOEXEC)
        try:
            os.write(fd, code.ljust(size, b"\0"))
            p = mmap_(None, size, _PROT_READ | _PROT_EXEC, _MAP_PRIVATE, fd, 0)
        finally:
            os.close(fd)
        if p is None or p == failed:
            raise OSError(ctypes.get_errno(), "mmap(PROT_EXEC) of a memfd")
    except OSError as e:
        raise OSError(errno.EACCES, f"executable memory refused: {first}; {e}") from e
    return int(p)


def _stub_ops() -> _Ops:
    table = _STUBS.get(_MACHINE)
    if table is None:
        raise OSError(errno.ENOSYS, f"no machine-code stubs for {_MACHINE!r}")
    offsets: dict[str, int] = {}
    code = b""
    for op, body in table.items():
        offsets[op] = len(code)
        code += body.ljust((len(body) + 15) & ~15, b"\0")
    base = _map_executable(code)
    u32, u64 = ctypes.c_uint32, ctypes.c_uint64

    def fn(op: str, restype: type | None) -> Callable[..., int]:
        nargs = 3 if op.startswith("cas") else 1 if op.startswith("load") else 2
        # PYFUNCTYPE: keep the GIL, releasing it would cost more than the instruction.
        return ctypes.PYFUNCTYPE(restype, *[_V] * nargs)(base + offsets[op])

    def width(op: str) -> type:
        return u64 if op.endswith("64") or op == "fetch_dec_pair32" else u32

    f = {op: fn(op, None if op.startswith("store") else width(op)) for op in table}
    ops = [f"stub-{_MACHINE}", *(f[op] for op in _Ops._fields[1:14]), None]
    pairs = [f.get("fetch_inc_pair32"), f.get("fetch_dec_pair32")]
    return _with_pairs(_Ops._make([*ops, *pairs]))


# ---------------------------------------------------------------------------------------------
# Selection


def _unavailable(why: str) -> _Ops:
    def fail(*_: int) -> NoReturn:
        raise VclError(why, errno.ENOSYS)

    return _Ops._make(["unavailable", *[fail] * 13, why, fail, fail])


def _select() -> _Ops:
    choice = os.environ.get("PYVCL_ATOMICS", "")
    if choice not in ("", "libatomic", "stub"):
        return _unavailable(f"PYVCL_ATOMICS={choice!r}: expected 'libatomic' or 'stub'")
    reasons = []
    order: tuple[tuple[str, Callable[[], _Ops]], ...] = (
        ("libatomic", _libatomic_ops),
        ("stub", _stub_ops),
    )
    if _MACHINE == "x86_64":
        # The stub first where its bytes are proven (x86-64): a ctypes call into it costs about
        # half of libatomic's CAS, which passes the expected value through memory.
        order = order[::-1]
    for name, make in order:
        if choice in ("", name):
            try:
                return make()
            except (OSError, AttributeError) as e:
                reasons.append(f"{name}: {e}")
    return _unavailable(
        "no atomic operations backend: "
        + "; ".join(reasons)
        + ". Install libatomic1 (Debian/Ubuntu: apt-get install libatomic1; Fedora/RHEL: "
        "dnf install libatomic; Alpine: apk add libatomic).  Without it pyvcl needs x86-64 or "
        "aarch64 and permission to map executable memory"
    )
