"""The declaration layer: one construct `Struct` per C struct, plus what the hot path needs.

A `Decl` wraps the construct declaration of one C type and derives from it, once, at import:
the byte offset and size of every leaf field (nested structs flattened as ``outer.inner``),
a `struct.Struct` per field, and one `struct.Struct` for the whole record.  Construct is for
the cold path (decode, inspector, building test fixtures); the derived codecs are what the fifo,
queue and message code use per operation.  Nothing outside ``pyvcl.wire`` writes a layout
number: everything else asks a `Decl` for an offset or a codec.

Only fixed-size little-endian building blocks are allowed (ints, byte strings, arrays of ints,
padding, nested structs), which is all VPP's shared structs need.  Natural alignment of
non-packed C structs is spelled out with explicit `cs.Padding`, so the declaration reads like
the layout it describes.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from dataclasses import dataclass
from typing import Any

import construct as cs

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


class Decl:
    """A C struct declared once with construct, with derived fast accessors.

    ``c_name`` is the C type name (``svm_fifo_shared_t``), ``struct`` the construct declaration,
    ``size`` its sizeof, ``fields`` the flattened leaf fields in declaration order and ``codec``
    a `struct.Struct` over all of them (arrays and byte strings each as one ``bytes`` value), so
    ``decl.unpack(buf, off)`` returns a named tuple in one C call.
    """

    def __init__(self, c_name: str, declaration: cs.Construct, doc: str = "") -> None:
        self.c_name = c_name
        self.struct = declaration
        self.doc = doc
        self.fields: dict[str, Field] = {}
        fmt_parts: list[str] = []
        size = _walk(declaration, "", 0, self.fields, fmt_parts)
        self.size = size
        declared = declaration.sizeof()
        if declared != size:  # pragma: no cover - a declaration bug, caught at import
            raise AssertionError(f"{c_name}: walked {size} bytes, construct says {declared}")
        self.codec = struct.Struct("<" + "".join(fmt_parts))
        if self.codec.size != size:  # pragma: no cover
            raise AssertionError(f"{c_name}: codec is {self.codec.size} bytes, not {size}")
        names = [n.replace(".", "_") for n in self.fields]
        self.Tuple: Any = namedtuple(c_name.removesuffix("_t"), names, rename=True)  # type: ignore[misc]

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
        """Encode a record; fields not given are zero."""
        return bytes(self.struct.build(_fill_defaults(self.struct, values)))

    # -- hot path: struct -----------------------------------------------------------------
    def unpack(self, buf: Any, offset: int = 0) -> Any:
        return self.Tuple._make(self.codec.unpack_from(buf, offset))

    def pack_into(self, buf: Any, offset: int, *values: Any) -> None:
        self.codec.pack_into(buf, offset, *values)


def _walk(c: Any, prefix: str, base: int, out: dict[str, Field], fmts: list[str]) -> int:
    """Flatten ``c`` into ``out``; return its size.  ``fmts`` collects the whole-record format."""
    if isinstance(c, cs.Struct):
        offset = 0
        for sub in c.subcons:
            name = sub.name
            inner = sub.subcon if isinstance(sub, cs.Renamed) else sub
            if name is None:  # padding
                n = inner.sizeof()
                fmts.append(f"{n}x")
                offset += n
                continue
            offset += _walk(inner, f"{prefix}.{name}" if prefix else name, base + offset, out, fmts)
        return offset
    if isinstance(c, cs.FormatField):
        if c.fmtstr not in _SCALAR_FORMATS:
            raise TypeError(f"{prefix}: unsupported format {c.fmtstr!r}")
        return _leaf(out, fmts, prefix, base, _SCALAR_FORMATS[c.fmtstr])
    if isinstance(c, cs.Bytes):
        return _leaf(out, fmts, prefix, base, f"{c.length}s")
    if isinstance(c, cs.Array):
        if not isinstance(c.subcon, cs.FormatField) or c.subcon.fmtstr not in _SCALAR_FORMATS:
            raise TypeError(f"{prefix}: arrays must be of plain integers")
        item = _SCALAR_FORMATS[c.subcon.fmtstr]
        return _leaf(out, fmts, prefix, base, f"{c.count}{item}", whole="s")
    if isinstance(c, cs.Subconstruct):
        # Adapters/Renamed wrappers around a simple field: the layout is the inner one's.
        return _walk(c.subcon, prefix, base, out, fmts)
    raise TypeError(f"{prefix}: unsupported construct {type(c).__name__}")


def _leaf(
    out: dict[str, Field], fmts: list[str], name: str, offset: int, fmt: str, whole: str = ""
) -> int:
    codec = struct.Struct("<" + fmt)
    out[name] = Field(name, offset, codec.size, fmt, codec)
    # Arrays appear as one bytes value in the whole-record codec so field i <-> tuple item i.
    fmts.append(f"{codec.size}s" if whole else fmt)
    return codec.size


def _fill_defaults(c: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Complete a value dict for `construct.build`: missing ints -> 0, bytes -> zeros."""
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
u8 = cs.Int8ul
u16 = cs.Int16ul
u32 = cs.Int32ul
u64 = cs.Int64ul
i32 = cs.Int32sl
uword = cs.Int64ul  # x86_64 / aarch64: 8 bytes
fs_sptr_t = cs.Int64ul  # offset from the fifo segment header; 0 = NULL
session_handle_t = cs.Int64ul
pointer = cs.Int64ul  # a pointer in another process: meaningful only as zero / non-zero


def array(n: int, of: Any) -> Any:
    return cs.Array(n, of)


def pad(n: int) -> Any:
    return cs.Padding(n)
