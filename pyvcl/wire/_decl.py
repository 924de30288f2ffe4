"""The declaration layer: one construct `Struct` per C struct, plus what the hot path needs.

A `Decl` wraps the construct declaration of one C type and derives from it, once, at import:
the byte offset and size of every leaf field (nested structs flattened as ``outer.inner``),
a `struct.Struct` per field, and one `struct.Struct` for the whole record.  Construct is for
the cold path (decode, inspector, test fixtures); the derived codecs are what the fifo, queue
and message code use per operation (`Decl.build` too: it packs with them, and leaves anything
unusual -- and every error -- to construct).  Nothing outside ``pyvcl.wire`` writes a layout
number: everything else asks a `Decl` for an offset or a codec.

Declarations are written with construct's vocabulary (``Struct("head" / u32, pad(4), ...)``,
``Bytes(16)``, ``array(7, u8)``) but importing construct and building its objects for some sixty
structs is most of what importing pyvcl would cost, so the building blocks here record the
construct expression and `Decl.struct` builds the real construct object on first use (the
inspector, decoders, `Decl.parse`).  It then walks that object again and checks that it gives
exactly the layout derived at import, so construct stays the reference.

Only fixed-size little-endian building blocks are allowed (ints, byte strings, arrays of ints,
padding, nested structs), which is all VPP's shared structs need.  Natural alignment of
non-packed C structs is spelled out with explicit padding (`pad`), so the declaration reads
like the layout it describes.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import ModuleType

# construct's integer fields keep their `struct` format string ("<I", "<q", ...); these are the
# only scalar types our declarations use.
_SCALAR_FORMATS = {
    "<B": "B",
    "<H": "H",
    "<I": "I",
    "<L": "I",
    "<Q": "Q",
    "<b": "b",
    "<h": "h",
    "<i": "i",
    "<l": "i",
    "<q": "q",
}


def _construct() -> Any:
    """The construct module, imported on first use (it takes longer to import than pyvcl)."""
    import construct

    return construct


# ---------------------------------------------------------------------------------------------
# Construct expressions, recorded.  Each stands for the construct object of the same name and
# builds it (once) on demand; `"name" / block` works as in construct.


class Spec:
    """A recorded construct building block of fixed ``size``; `construct` builds the object."""

    size: int

    def __init__(self) -> None:
        self._built: Any = None

    def __rtruediv__(self, name: str) -> Named:
        return Named(name, self)

    def sizeof(self) -> int:
        return self.size

    def construct(self) -> Any:
        """The construct object this stands for (built once, then shared like construct's)."""
        if self._built is None:
            self._built = self._make(_construct())
        return self._built

    def _make(self, cs: ModuleType) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class Scalar(Spec):
    """A construct integer field, e.g. ``Scalar("Int32ul", "<I")`` for ``cs.Int32ul``."""

    def __init__(self, construct_name: str, fmtstr: str) -> None:
        super().__init__()
        self.construct_name = construct_name
        self.fmtstr = fmtstr
        self.size = struct.calcsize(fmtstr)

    def __repr__(self) -> str:
        return self.construct_name

    def _make(self, cs: ModuleType) -> Any:
        return getattr(cs, self.construct_name)


class Named(Spec):
    """``name / subcon`` (construct's `Renamed`)."""

    def __init__(self, name: str, subcon: Spec) -> None:
        super().__init__()
        if not isinstance(subcon, Spec):
            raise TypeError(f"{name}: not a pyvcl.wire building block: {subcon!r}")
        self.name = name
        self.subcon = subcon
        self.size = subcon.size

    def __repr__(self) -> str:
        return f"{self.name!r} / {self.subcon!r}"

    def _make(self, cs: ModuleType) -> Any:
        return self.name / self.subcon.construct()


class Bytes(Spec):
    """``construct.Bytes(length)``: a fixed-length byte string."""

    def __init__(self, length: int) -> None:
        super().__init__()
        self.length = self.size = length

    def __repr__(self) -> str:
        return f"Bytes({self.length})"

    def _make(self, cs: ModuleType) -> Any:
        return cs.Bytes(self.length)


class Padding(Spec):
    """``construct.Padding(length)``: zero bytes, no value."""

    def __init__(self, length: int) -> None:
        super().__init__()
        self.length = self.size = length

    def __repr__(self) -> str:
        return f"Padding({self.length})"

    def _make(self, cs: ModuleType) -> Any:
        return cs.Padding(self.length)


class Array(Spec):
    """``construct.Array(count, subcon)``."""

    def __init__(self, count: int, subcon: Spec) -> None:
        super().__init__()
        if not isinstance(subcon, Spec):
            raise TypeError(f"Array of {subcon!r}: not a pyvcl.wire building block")
        self.count = count
        self.subcon = subcon
        self.size = count * subcon.size

    def __repr__(self) -> str:
        return f"Array({self.count}, {self.subcon!r})"

    def _make(self, cs: ModuleType) -> Any:
        return cs.Array(self.count, self.subcon.construct())


class Struct(Spec):
    """``construct.Struct(*subcons)``: fields in order, no implicit alignment."""

    def __init__(self, *subcons: Spec) -> None:
        super().__init__()
        for sub in subcons:
            if not isinstance(sub, Spec):
                raise TypeError(f"Struct member {sub!r}: not a pyvcl.wire building block")
        self.subcons = subcons
        self.size = sum(sub.size for sub in subcons)

    def __repr__(self) -> str:
        return f"Struct({', '.join(map(repr, self.subcons))})"

    def _make(self, cs: ModuleType) -> Any:
        return cs.Struct(*(sub.construct() for sub in self.subcons))


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One leaf field: where it is and how to read or write it without construct."""

    name: str
    offset: int
    size: int
    fmt: str  # struct format of the field alone, without byte order ("I", "16s", "11Q")
    codec: struct.Struct

    @property
    def is_scalar(self) -> bool:
        return self.fmt in ("B", "H", "I", "Q", "b", "h", "i", "q")

    def get(self, buf: Any, base: int = 0) -> Any:
        """Read the field from a record at ``base`` in ``buf`` (scalar -> int, else tuple/bytes)."""
        values = self.codec.unpack_from(buf, base + self.offset)
        return values[0] if len(values) == 1 else values

    def put(self, buf: Any, base: int, value: Any) -> None:
        if isinstance(value, (tuple, list)):
            self.codec.pack_into(buf, base + self.offset, *value)
        else:
            self.codec.pack_into(buf, base + self.offset, value)


# How `Decl.build` packs a field without construct: kind, field, bytes/array length.
_SCALAR, _BYTES, _ARRAY = 0, 1, 2
_Plan = dict[str, Any]  # field name -> (kind, Field, length), or a nested struct's _Plan


class _UseConstruct(Exception):
    """A value the fast builder leaves to construct (which builds it or raises its error)."""


class Decl:
    """A C struct declared once with construct, with derived fast accessors.

    ``c_name`` is the C type name (``svm_fifo_shared_t``), ``struct`` the construct declaration
    (built on first use), ``size`` its sizeof, ``fields`` the flattened leaf fields in
    declaration order and ``codec`` a `struct.Struct` over all of them (arrays and byte strings
    each as one ``bytes`` value), so ``decl.unpack(buf, off)`` returns a named tuple in one C
    call.  ``declaration`` is a `Struct` of this module's building blocks, or a construct object.
    """

    def __init__(self, c_name: str, declaration: Any, doc: str = "") -> None:
        self.c_name = c_name
        self.doc = doc
        self.fields: dict[str, Field] = {}
        self._plan: _Plan = {}
        fmt_parts: list[str] = []
        if isinstance(declaration, Spec):
            self._spec: Spec | None = declaration
        else:  # a construct object: the reference already, nothing to check later
            self._spec = None
            self.__dict__["struct"] = declaration
        size = _walk(declaration, "", 0, self.fields, fmt_parts, self._plan)
        self.size = size
        declared = declaration.sizeof()
        if declared != size:  # pragma: no cover - a declaration bug, caught at import
            raise AssertionError(f"{c_name}: walked {size} bytes, construct says {declared}")
        self.codec = struct.Struct("<" + "".join(fmt_parts))
        if self.codec.size != size:  # pragma: no cover
            raise AssertionError(f"{c_name}: codec is {self.codec.size} bytes, not {size}")

    @cached_property
    def Tuple(self) -> Any:
        """The named tuple `unpack` returns (fields named ``outer_inner``), made on first use."""
        names = [n.replace(".", "_") for n in self.fields]
        return namedtuple(self.c_name.removesuffix("_t"), names, rename=True)

    @cached_property
    def struct(self) -> Any:
        """The construct declaration, built on first use and checked against the layout."""
        assert self._spec is not None  # otherwise set in __init__
        built = self._spec.construct()
        fields: dict[str, Field] = {}
        fmt_parts: list[str] = []
        size = _walk(built, "", 0, fields, fmt_parts, {})
        if (
            size != self.size
            or built.sizeof() != self.size
            or [(f.name, f.offset, f.fmt) for f in fields.values()]
            != [(f.name, f.offset, f.fmt) for f in self.fields.values()]
            or "<" + "".join(fmt_parts) != self.codec.format
        ):  # pragma: no cover - a bug in the building blocks, not in a declaration
            raise AssertionError(f"{self.c_name}: construct's layout differs from the derived one")
        return built

    def __repr__(self) -> str:
        return f"<Decl {self.c_name} size={self.size} fields={len(self.fields)}>"

    def __getitem__(self, name: str) -> Field:
        return self.fields[name]

    def offset(self, name: str) -> int:
        return self.fields[name].offset

    # -- cold path: construct -------------------------------------------------------------
    def parse(self, data: bytes | bytearray | memoryview) -> Any:
        """Decode ``data`` (at least ``size`` bytes) into a construct Container."""
        return self.struct.parse(bytes(data[: self.size]))

    def build(self, **values: Any) -> bytes:
        """Encode a record; fields not given are zero.

        Plain values (ints, bytes of the field's length, lists of ints, dicts for nested
        structs) are packed with the derived codecs; anything else goes to construct, which
        gives the same bytes for what it accepts and raises its own error for what it does not.
        """
        buf = bytearray(self.size)
        try:
            _pack(self._plan, values, buf)
        except _UseConstruct:
            return bytes(self.struct.build(_fill_defaults(self.struct, values)))
        return bytes(buf)

    # -- hot path: struct -----------------------------------------------------------------
    def unpack(self, buf: Any, offset: int = 0) -> Any:
        return self.Tuple._make(self.codec.unpack_from(buf, offset))

    def pack_into(self, buf: Any, offset: int, *values: Any) -> None:
        self.codec.pack_into(buf, offset, *values)


def _view(c: Any) -> tuple[str, Any]:
    """What ``c`` (a building block or a construct object) is, for `_walk`."""
    if isinstance(c, Spec):
        if isinstance(c, Struct):
            subs = [(s.name, s.subcon) if isinstance(s, Named) else (None, s) for s in c.subcons]
            return "struct", subs
        if isinstance(c, Scalar):
            return "scalar", c.fmtstr
        if isinstance(c, Bytes):
            return "bytes", c.length
        if isinstance(c, Array):
            return "array", (c.count, c.subcon)
        if isinstance(c, Named):
            return "wrapped", c.subcon
        return "unsupported", type(c).__name__
    cs = _construct()
    if isinstance(c, cs.Struct):
        return "struct", [(s.name, s.subcon if isinstance(s, cs.Renamed) else s) for s in c.subcons]
    if isinstance(c, cs.FormatField):
        return "scalar", c.fmtstr
    if isinstance(c, cs.Bytes):
        return "bytes", c.length
    if isinstance(c, cs.Array):
        return "array", (c.count, c.subcon)
    if isinstance(c, cs.Subconstruct):
        # Adapters/Renamed wrappers around a simple field: the layout is the inner one's.
        return "wrapped", c.subcon
    return "unsupported", type(c).__name__


def _walk(
    c: Any, prefix: str, base: int, out: dict[str, Field], fmts: list[str], plan: _Plan
) -> int:
    """Flatten ``c`` into ``out``; return its size.  ``fmts`` collects the whole-record format,
    ``plan`` (for the struct ``c`` is, or holds) what `Decl.build` needs."""
    kind, info = _view(c)
    if kind == "struct":
        offset = 0
        for name, inner in info:
            if name is None:  # padding
                n = inner.sizeof()
                fmts.append(f"{n}x")
                offset += n
                continue
            full = f"{prefix}.{name}" if prefix else name
            sub_plan: _Plan = {}
            offset += _walk(inner, full, base + offset, out, fmts, sub_plan)
            plan[name] = sub_plan.pop("") if "" in sub_plan else sub_plan
        return offset
    if kind == "scalar":
        if info not in _SCALAR_FORMATS:
            raise TypeError(f"{prefix}: unsupported format {info!r}")
        return _leaf(out, fmts, plan, prefix, base, _SCALAR_FORMATS[info], _SCALAR, 1)
    if kind == "bytes":
        return _leaf(out, fmts, plan, prefix, base, f"{info}s", _BYTES, info)
    if kind == "array":
        count, item = info
        item_kind, item_fmt = _view(item)
        if item_kind != "scalar" or item_fmt not in _SCALAR_FORMATS:
            raise TypeError(f"{prefix}: arrays must be of plain integers")
        fmt = f"{count}{_SCALAR_FORMATS[item_fmt]}"
        return _leaf(out, fmts, plan, prefix, base, fmt, _ARRAY, count)
    if kind == "wrapped":
        return _walk(info, prefix, base, out, fmts, plan)
    raise TypeError(f"{prefix}: unsupported construct {info}")


def _leaf(
    out: dict[str, Field],
    fmts: list[str],
    plan: _Plan,
    name: str,
    offset: int,
    fmt: str,
    kind: int,
    n: int,
) -> int:
    codec = struct.Struct("<" + fmt)
    field = out[name] = Field(name, offset, codec.size, fmt, codec)
    plan[""] = (kind, field, n)
    # Arrays appear as one bytes value in the whole-record codec so field i <-> tuple item i.
    fmts.append(f"{codec.size}s" if kind == _ARRAY else fmt)
    return codec.size


def _pack(plan: _Plan, values: dict[str, Any], buf: bytearray) -> None:
    """`Decl.build` without construct: pack ``values`` into the zeroed ``buf``, or raise
    `_UseConstruct` for anything construct might treat differently (it then decides)."""
    for name, value in values.items():
        entry = plan.get(name)
        if entry is None:
            raise _UseConstruct  # unknown field (construct's path raises KeyError)
        if value is None:
            continue
        if isinstance(entry, dict):
            if not isinstance(value, dict):
                raise _UseConstruct
            _pack(entry, value, buf)
            continue
        kind, field, n = entry
        try:
            if kind == _SCALAR:
                field.codec.pack_into(buf, field.offset, value)
            elif kind == _BYTES:
                if type(value) not in (bytes, bytearray) or len(value) != n:
                    raise _UseConstruct
                field.codec.pack_into(buf, field.offset, value)
            else:
                if not isinstance(value, (list, tuple)) or len(value) != n:
                    raise _UseConstruct
                field.codec.pack_into(buf, field.offset, *value)
        except (struct.error, TypeError, ValueError, OverflowError):
            raise _UseConstruct from None


def _fill_defaults(c: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Complete a value dict for `construct.build`: missing ints -> 0, bytes -> zeros."""
    cs = _construct()
    result: dict[str, Any] = {}
    for sub in c.subcons:
        if sub.name is None:
            continue
        inner = sub.subcon if isinstance(sub, cs.Renamed) else sub
        given = values.get(sub.name)
        if isinstance(inner, cs.Struct):
            result[sub.name] = _fill_defaults(inner, dict(given or {}))
        elif given is not None:
            result[sub.name] = given
        elif isinstance(inner, cs.Bytes):
            result[sub.name] = bytes(inner.length)
        elif isinstance(inner, cs.Array):
            result[sub.name] = [0] * inner.count
        else:
            result[sub.name] = 0
    unknown = set(values) - {s.name for s in c.subcons if s.name}
    if unknown:
        raise KeyError(f"unknown field(s) {sorted(unknown)}")
    return result


# ---------------------------------------------------------------------------------------------
# Building blocks named after the C types they stand for, so declarations read like headers.
u8 = Scalar("Int8ul", "<B")
u16 = Scalar("Int16ul", "<H")
u32 = Scalar("Int32ul", "<I")
u64 = Scalar("Int64ul", "<Q")
i32 = Scalar("Int32sl", "<i")
uword = u64  # x86_64 / aarch64: 8 bytes
fs_sptr_t = u64  # offset from the fifo segment header; 0 = NULL
session_handle_t = u64
pointer = u64  # a pointer in another process: meaningful only as zero / non-zero


def array(n: int, of: Spec) -> Array:
    return Array(n, of)


def pad(n: int) -> Padding:
    return Padding(n)
