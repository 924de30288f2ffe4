"""Recordings (app-socket traces, shared-memory snapshots) as untrusted input.

A recording is a file anyone can edit, so its loaders (`pyvcl.api.trace.load_trace`,
`pyvcl.snapshot.Snapshot.load`) check the JSON structure and every number, offset and length
before using it.  These helpers do the checking; whatever is wrong becomes one
`RecordingError` that says where (``event 3: 'hex' ...``), and the loader adds the file.
"""

from __future__ import annotations

import json
import reprlib
from pathlib import Path
from typing import Any

from .errors import RecordingError

U64_MAX = (1 << 64) - 1
_REQUIRED: Any = object()
_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer"}
_show = reprlib.Repr()
_show.maxstring = _show.maxother = 40
_show.maxlist = _show.maxdict = 4


def read_json(path: str | Path) -> Any:
    """The JSON document in ``path``.  Unreadable files raise the usual `OSError`
    (`FileNotFoundError`...); text that is not UTF-8 JSON raises `RecordingError`."""
    p = Path(path)
    try:
        return json.loads(p.read_bytes())
    except UnicodeDecodeError as e:
        raise RecordingError(f"not UTF-8 text ({e.reason} at byte {e.start})", p) from None
    except json.JSONDecodeError as e:
        raise RecordingError(f"not valid JSON: {e}", p) from None
    except RecursionError:
        raise RecordingError("not valid JSON: nested too deeply", p) from None


def need(cond: object, message: str) -> None:
    if not cond:
        raise RecordingError(message)


def typed(value: Any, kind: type, what: str) -> Any:
    """``value`` if it is a ``kind`` (JSON object, list, string or integer; never a bool for an
    integer), else `RecordingError`."""
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise RecordingError(f"{what} is {_show.repr(value)}, expected {_TYPE_NAMES[kind]}")


def integer(value: Any, what: str, lo: int = 0, hi: int = U64_MAX) -> int:
    """An integer in ``lo..hi``."""
    n: int = typed(value, int, what)
    if not lo <= n <= hi:
        raise RecordingError(f"{what} is {n}, outside {lo}..{hi}")
    return n


def field(doc: dict[str, Any], key: str, where: str, kind: type, default: Any = _REQUIRED) -> Any:
    """``doc[key]`` checked to be a ``kind``; ``default`` when absent (or null), else required."""
    value = doc.get(key)
    if value is None:
        if default is _REQUIRED:
            raise RecordingError(f"{where}: {key!r} is missing")
        return default
    return typed(value, kind, f"{where}: {key!r}")


def int_field(
    doc: dict[str, Any],
    key: str,
    where: str,
    lo: int = 0,
    hi: int = U64_MAX,
    default: Any = _REQUIRED,
) -> Any:
    """``doc[key]`` as an integer in ``lo..hi`` (``default`` when absent, if given)."""
    value = doc.get(key)
    if value is None and default is not _REQUIRED:
        return default
    if value is None:
        raise RecordingError(f"{where}: {key!r} is missing")
    return integer(value, f"{where}: {key!r}", lo, hi)


def shallow(value: Any, what: str, depth: int = 8) -> Any:
    """``value`` if no more than ``depth`` lists/objects deep (free-form descriptive data
    that is shown as it is)."""
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            need(d < depth, f"{what} is nested more than {depth} deep")
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return value
