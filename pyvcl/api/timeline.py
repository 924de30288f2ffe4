"""Loading a live trace (`pyvcl.api.live_trace`): the header, then every record in order.

A trace is a file anyone can edit, so every record is checked as `pyvcl.recording` checks
recordings: a malformed one raises `RecordingError` naming the file and the line.  The last
line may be cut short (the process died mid-write): it is dropped and ``truncated`` set.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RecordingError, VclError
from ..recording import field as json_field
from ..recording import int_field, need, shallow, typed
from ..wire.enums import MqRing
from .live_trace import FORMAT, KINDS, VERSION, decode_message, session_of
from .trace import DIRECTIONS, TraceMessage, _message

CORE_CALLS = ("init", "handle_event", "new_session", "listen", "connect", "accept", "shutdown",
              "close")  # fmt: skip
_HEAD_MAX = 1 << 20  # a header line longer than this (argv and all) is not ours
_N_RINGS = len(MqRing)


@dataclass
class CoreCall:
    """A call of the session core and its outcome (written by `pyvcl.session.replay`)."""

    index: int
    t: float
    call: str
    args: dict[str, Any] = field(default_factory=dict)
    event: int | None = None  # seq of the mq record of the event handled
    ring: int | None = None  # (or the event itself, if it was not drained by a traced queue)
    raw: bytes | None = None
    actions: list[Any] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    result: int | None = None
    error: str | None = None

    kind = "core"


@dataclass
class Note:
    """A remark: the app closed, a send that failed (``of``: the record it was about)."""

    index: int
    t: float
    fields: dict[str, Any]

    kind = "note"


Record = TraceMessage | CoreCall | Note


@dataclass
class Timeline:
    header: dict[str, Any]
    records: list[Record]
    truncated: bool = False


def is_live_trace(path: str | Path) -> bool:
    """Whether ``path`` starts with a live trace's header line (unreadable: False)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(_HEAD_MAX)
        head = json.loads(first)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(head, dict) and head.get("format") == FORMAT


def load_timeline(path: str | Path) -> Timeline:
    """Every record of a live trace.  `RecordingError` (naming the file and line) for a file
    that is not one; the usual `OSError` for an unreadable one."""
    try:
        data = Path(path).read_bytes()
        return parse_timeline(data)
    except RecordingError as e:
        raise e.at(path) from None


def parse_timeline(data: bytes) -> Timeline:
    lines = data.split(b"\n")
    truncated = False
    if lines and lines[-1] == b"":
        lines.pop()
    elif len(lines) > 1:
        try:
            json.loads(lines[-1])
        except ValueError:
            lines.pop()  # cut short: the process died writing it
            truncated = True
    need(lines, "empty file: not a trace")
    header = typed(_json(lines[0], "line 1"), dict, "line 1")
    need(header.get("format") == FORMAT, f"line 1: not a {FORMAT} header")
    version = int_field(header, "version", "line 1")
    need(version <= VERSION, f"line 1: trace version {version}; this pyvcl reads {VERSION}")
    shallow(header, "line 1")
    records: list[Record] = []
    for n, raw in enumerate(lines[1:], start=2):
        where = f"line {n}"
        rec = typed(_json(raw, where), dict, where)
        records.append(_record(len(records), rec, where, records))
    return Timeline(header, records, truncated)


def _json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw)
    except UnicodeDecodeError as e:
        raise RecordingError(f"{where}: not UTF-8 text ({e.reason})") from None
    except ValueError as e:
        raise RecordingError(f"{where}: not valid JSON: {e}") from None
    except RecursionError:
        raise RecordingError(f"{where}: not valid JSON: nested too deeply") from None


def _record(i: int, rec: dict[str, Any], where: str, before: list[Record]) -> Record:
    seq = int_field(rec, "seq", where)
    need(seq == i, f"{where}: 'seq' is {seq}, expected {i} (records are written in order)")
    value = rec.get("t")
    need(
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0,
        f"{where}: 't' is {value!r}, expected seconds (a number >= 0)",
    )
    t = float(value)  # type: ignore[arg-type]
    kind = json_field(rec, "kind", where, str)
    need(kind in KINDS, f"{where}: 'kind' is {kind!r}, not one of {KINDS}")
    if kind == "sapi":
        msg = _message(seq, rec, where)
        msg.t, msg.raw = t, bytes.fromhex(rec["hex"])
        return msg
    if kind == "mq":
        return _mq(seq, t, rec, where)
    if kind == "core":
        return _core(seq, t, rec, where, before)
    return Note(seq, t, shallow(rec, where))


def _hex(rec: dict[str, Any], where: str) -> bytes:
    text = json_field(rec, "hex", where, str)
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise RecordingError(f"{where}: 'hex' is not a string of hex byte pairs") from None


def _mq(seq: int, t: float, rec: dict[str, Any], where: str) -> TraceMessage:
    direction = json_field(rec, "dir", where, str)
    need(direction in DIRECTIONS, f"{where}: 'dir' is {direction!r}, not one of {DIRECTIONS}")
    queue = json_field(rec, "queue", where, str)
    ring = int_field(rec, "ring", where, 0, _N_RINGS - 1)
    raw = _hex(rec, where)
    need(raw, f"{where}: an empty message")
    length = int_field(rec, "len", where, default=len(raw))
    need(length == len(raw), f"{where}: 'len' is {length} but 'hex' holds {len(raw)} bytes")
    try:
        ev = decode_message(ring, raw)
    except VclError as e:
        raise RecordingError(f"{where}: {e.strerror}") from None
    return TraceMessage(
        seq, direction, ev.type, ev.fields(), t=t, kind="mq", queue=queue, ring=ring, raw=raw,
        session=session_of(direction, ev),
    )  # fmt: skip


def _core(seq: int, t: float, rec: dict[str, Any], where: str, before: list[Record]) -> CoreCall:
    call = json_field(rec, "call", where, str)
    need(call in CORE_CALLS, f"{where}: 'call' is {call!r}, not one of {CORE_CALLS}")
    c = CoreCall(seq, t, call)
    c.args = shallow(json_field(rec, "args", where, dict, default={}), f"{where}: 'args'")
    if call == "init":
        int_field(c.args, "client_index", f"{where}: 'args'")
    if call == "handle_event":
        ref = rec.get("event")
        if ref is None:
            c.ring = int_field(rec, "ring", where, 0, _N_RINGS - 1)
            c.raw = _hex(rec, where)
            try:
                decode_message(c.ring, c.raw)
            except VclError as e:
                raise RecordingError(f"{where}: {e.strerror}") from None
        else:
            c.event = int_field(rec, "event", where, 0, seq - 1 if seq else 0)
            target = before[c.event] if c.event < len(before) else None
            need(
                isinstance(target, TraceMessage)
                and target.kind == "mq"
                and target.direction == "vpp->app",
                f"{where}: 'event' {c.event} is not a VPP->app mq record before it",
            )
    c.actions = shallow(json_field(rec, "actions", where, list, default=[]), f"{where}: actions")
    states = shallow(json_field(rec, "states", where, dict, default={}), f"{where}: states")
    c.states = {str(k): str(v) for k, v in states.items()}
    result = rec.get("result")
    c.result = None if result is None else int_field(rec, "result", where)
    error = rec.get("error")
    c.error = None if error is None else json_field(rec, "error", where, str)
    return c
