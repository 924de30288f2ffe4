"""Turning decoded structures into JSON-able values and readable indented text."""

from __future__ import annotations

import enum
from typing import Any

# Keys whose integer values read better in hex (offsets, handles, flags).
_HEX_HINTS = (
    "offset",
    "handle",
    "mq",
    "address",
    "flags",
    "fifo",
    "chunk",
    "index_raw",
    "ext_config",
)


def to_jsonable(value: Any) -> Any:
    if isinstance(value, enum.Flag):
        return {
            "value": int(value.value),
            "names": [str(m.name) for m in type(value) if m in value and m.value],
        }
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        text = b.split(b"\0", 1)[0]
        if text and all(32 <= c < 127 for c in text) and not any(b[len(text) :]):
            return text.decode()
        return b.hex()
    return value


def render(value: Any, indent: int = 0, key: str = "") -> str:
    pad = "  " * indent
    if isinstance(value, dict):
        if _is_flag(value):
            return f"{value['value']:#x} ({'|'.join(map(str, value['names'])) or '0'})"
        lines = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v and not _is_flag(v):
                lines.append(f"{pad}{k}:")
                lines.append(render(v, indent + 1, str(k)))
            else:
                lines.append(f"{pad}{k}: {render(v, 0, str(k))}")
        return "\n".join(lines)
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            return pad + ", ".join(render(v, 0, key) for v in value)
        out = []
        for i, v in enumerate(value):
            out.append(f"{pad}- [{i}]")
            out.append(render(v, indent + 1, key))
        return "\n".join(out)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and any(h in key for h in _HEX_HINTS) and value > 9:
        return f"{value:#x}"
    return str(value)


def _is_flag(v: Any) -> bool:
    """A flag value as `to_jsonable` writes it: ``{"value": int, "names": [...]}``."""
    return (
        isinstance(v, dict)
        and set(v) == {"names", "value"}
        and isinstance(v["value"], int)
        and isinstance(v["names"], list)
    )
