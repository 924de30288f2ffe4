"""Structure-aware mutations: whole fields of the declared wire structs set to values that
break assumptions, plus a few random byte flips.

A target describes what it builds as *spaces* (named byte buffers: a segment mapping, an
attach-reply frame, a snapshot's ``.bin``) and the fields in them (`FieldRef`, taken from the
`pyvcl.wire` declarations, so every offset comes from the one declaration layer).  A
`Mutation` is a short list of `Write`s into those spaces; it is a pure function of
``(target, seed, index)`` and serialises to JSON, so a finding can be replayed and minimised.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from ...wire._decl import Decl

JSON_SPACE = "json"
"""The space of edits to a JSON document: ``Write.field`` is the dotted key path and
``Write.data`` the JSON text of the new value."""


@dataclass(frozen=True)
class FieldRef:
    """A field of ``size`` bytes at ``offset`` in ``space`` (``name`` says which, for humans)."""

    space: str
    name: str
    offset: int
    size: int
    scalar: bool = True


@dataclass(frozen=True)
class Write:
    """Put ``data`` at ``offset`` in ``space``; ``field`` names what it overwrites."""

    space: str
    offset: int
    data: bytes
    field: str

    def to_json(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "offset": self.offset,
            "data": self.data.hex(),
            "field": self.field,
        }

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Write:
        return cls(
            entry["space"], int(entry["offset"]), bytes.fromhex(entry["data"]), entry["field"]
        )

    def describe(self) -> str:
        if self.space == JSON_SPACE:
            return f"json {self.field} = {self.data.decode()}"
        if len(self.data) in (1, 2, 4, 8):
            value = f"{int.from_bytes(self.data, 'little'):#x}"
        else:
            value = self.data.hex()
        return f"{self.space}+{self.offset:#x} {self.field} = {value}"


@dataclass
class Mutation:
    writes: list[Write] = field(default_factory=list)

    def to_json(self) -> list[dict[str, Any]]:
        return [w.to_json() for w in self.writes]

    @classmethod
    def from_json(cls, entries: list[dict[str, Any]]) -> Mutation:
        return cls([Write.from_json(e) for e in entries])

    def apply(self, spaces: dict[str, Any]) -> None:
        """Write into the byte buffers of ``spaces`` (JSON edits are the target's business)."""
        for w in self.writes:
            if w.space == JSON_SPACE or w.space not in spaces:
                continue
            buf = spaces[w.space]
            end = min(len(buf), w.offset + len(w.data))
            if 0 <= w.offset < end:
                buf[w.offset : end] = w.data[: end - w.offset]

    def json_edits(self) -> list[tuple[str, Any]]:
        return [(w.field, json.loads(w.data)) for w in self.writes if w.space == JSON_SPACE]


_ARRAY_FMT = re.compile(r"^(\d+)([BHIQbhiq])$")
_SCALAR_SIZE = {"B": 1, "H": 2, "I": 4, "Q": 8, "b": 1, "h": 2, "i": 4, "q": 8}


def fields_of(decl: Decl, space: str, base: int, prefix: str = "") -> list[FieldRef]:
    """Every leaf of ``decl`` at ``base`` in ``space``; arrays of integers element by element."""
    out = []
    label = prefix or decl.c_name
    for f in decl.fields.values():
        name = f"{label}.{f.name}"
        m = _ARRAY_FMT.match(f.fmt)
        if m:
            step = _SCALAR_SIZE[m.group(2)]
            out += [
                FieldRef(space, f"{name}[{i}]", base + f.offset + i * step, step)
                for i in range(int(m.group(1)))
            ]
        else:
            out.append(FieldRef(space, name, base + f.offset, f.size, f.is_scalar))
    return out


@dataclass
class Layout:
    """What a target offers to mutate: its fields, the byte ranges worth random flips, and the
    sizes that make interesting values (the mapping's, the header offset)."""

    fields: list[FieldRef]
    flip_ranges: list[tuple[str, int, int]]  # (space, start, end)
    sizes: list[int]
    json_fields: list[tuple[str, Any]] = field(default_factory=list)  # (dotted path, value)
    _groups: list[list[FieldRef]] = field(default_factory=list, repr=False)

    def groups(self) -> list[list[FieldRef]]:
        """The fields by struct instance (name up to its last dot): a write first picks one
        of these, so a queue's eight-field mutex is not drowned out by its ring slots' many
        payload fields."""
        if not self._groups:
            by_name: dict[str, list[FieldRef]] = {}
            for f in self.fields:
                by_name.setdefault(f.name.rsplit(".", 1)[0], []).append(f)
            self._groups = list(by_name.values())
        return self._groups


def _interesting(
    rng: random.Random, size: int, current: int, others: list[int], sizes: list[int]
) -> int:
    bits = 8 * size
    top = (1 << bits) - 1
    picks = [0, 1, top, top - 1, 1 << (bits - 1), (1 << (bits - 1)) - 1]
    if bits > 32:
        picks += [1 << 31, (1 << 32) - 1, 1 << 32]
    if bits >= 32:
        picks += [1 << 31, (1 << 31) - 1]
    picks += [current + 1, current - 1, current + 4, current + 8, current * 2, current ^ 1]
    for s in sizes:
        picks += [s, s - 1, s + 1, s + 8, s >> 1]
    if others:
        picks.append(rng.choice(others))
    if rng.random() < 0.15:
        return rng.getrandbits(bits)
    return rng.choice(picks) & top


def generate(rng: random.Random, layout: Layout, base: dict[str, Any]) -> Mutation:
    """One to three field writes (sometimes a JSON edit), sometimes a few random byte flips."""
    writes = []
    scalars = [f for f in layout.fields if f.scalar]
    n = rng.choice((1, 1, 1, 2, 2, 3))
    for _ in range(n):
        if layout.json_fields and rng.random() < 0.2:
            path, current = rng.choice(layout.json_fields)
            value = _json_value(rng, current, layout.sizes)
            writes.append(Write(JSON_SPACE, 0, json.dumps(value).encode(), path))
            continue
        f = rng.choice(rng.choice(layout.groups()))
        if f.scalar:
            current = int.from_bytes(base[f.space][f.offset : f.offset + f.size], "little")
            peers = rng.sample(scalars, min(3, len(scalars)))
            others = [
                int.from_bytes(base[p.space][p.offset : p.offset + p.size], "little") for p in peers
            ]
            value = _interesting(rng, f.size, current, others, layout.sizes)
            data = value.to_bytes(f.size, "little")
        else:
            data = rng.choice(
                (bytes(f.size), b"\xff" * f.size, rng.randbytes(f.size), b"\x01" * f.size)
            )
        writes.append(Write(f.space, f.offset, data, f.name))
    if layout.flip_ranges and rng.random() < 0.15:
        space, start, end = rng.choice(layout.flip_ranges)
        for _ in range(rng.randint(1, 4)):
            off = rng.randrange(start, end)
            writes.append(Write(space, off, bytes([rng.getrandbits(8)]), "flip"))
    return Mutation(writes)


def _json_value(rng: random.Random, current: Any, sizes: list[int]) -> Any:
    if isinstance(current, bool) or not isinstance(current, int):
        return rng.choice((None, "x", -1, 0, [], {}, 1 << 64))
    return rng.choice((0, -1, 1, current + 1, current - 1, 1 << 40, -(1 << 31), *sizes, None, "0"))


def summary(mutation: Mutation) -> list[str]:
    return [w.describe() for w in mutation.writes]
