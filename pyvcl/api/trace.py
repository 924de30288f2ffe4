"""Recorded app-socket exchanges and live traces: load a trace file, decode it message by message.

A recorded trace (``shared/vpp-v26.06/traces/``) is one JSON object whose ``events`` each have
``dir`` ("app->vpp" / "vpp->app"), ``len``, ``hex`` (the frame), ``fds`` (the descriptor
numbers the process received with it) and optionally ``mmaps`` (how those fds were then
mapped).  A live trace (`pyvcl.api.live_trace`, docs/traces.md) is JSON Lines: a header, then
one record per line; its ``sapi`` records are such events with ``seq``, ``t`` and ``kind``
added, beside ``mq``, ``core`` and ``note`` records.  `load_trace` gives the app-socket frames
of either; `pyvcl.api.timeline.load_timeline` every record of a live trace.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AppSocketError, RecordingError, VclError
from ..recording import field as json_field
from ..recording import int_field, integer, need, read_json, typed
from ..wire.enums import SapiMsgType, SessionEvent
from ..wire.sapi import PAYLOADS, SAPI_MSG_SIZE, SAPI_PAYLOAD_OFFSET
from .messages import (
    AttachReply,
    CertKeyReply,
    WorkerAddDelReply,
    assign_fds,
    decode_attach,
)

DIRECTIONS = ("app->vpp", "vpp->app")
FD_MAX = (1 << 31) - 1  # a descriptor number is a non-negative C int


@dataclass
class TraceMessage:
    """One app-socket frame (``kind`` "sapi") or message-queue message ("mq").  ``t``, the
    queue, ring, raw bytes and the session named are those of live traces."""

    index: int
    direction: str
    type: int
    fields: dict[str, Any]
    fds: list[int] = field(default_factory=list)
    fd_roles: dict[str, list[int]] = field(default_factory=dict)
    mmaps: list[dict[str, Any]] = field(default_factory=list)
    t: float | None = None
    kind: str = "sapi"
    queue: str | None = None
    ring: int | None = None
    raw: bytes = b""
    session: dict[str, int] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        names: type[enum.IntEnum] = SessionEvent if self.kind == "mq" else SapiMsgType
        try:
            return names(self.type).name
        except ValueError:
            return f"UNKNOWN_{self.type}"


def decode_frame(
    frame: bytes, fds: list[int] | None = None
) -> tuple[int, dict[str, Any], dict[str, list[int]]]:
    """Decode one 209-byte frame: (type, fields, fds by role)."""
    if len(frame) != SAPI_MSG_SIZE:
        raise AppSocketError(f"frame of {len(frame)} bytes; sapi frames are {SAPI_MSG_SIZE}")
    msg_type = frame[0]
    payload = frame[SAPI_PAYLOAD_OFFSET:]
    fds = fds or []
    roles: dict[str, list[int]] = {}
    fields: dict[str, Any]
    if msg_type == SapiMsgType.ATTACH:
        a = decode_attach(payload)
        fields = {"name": a.name, "flags": a.flags}
        fields.update((k, v) for k, v in a.options.items() if k != "FLAGS")
    elif msg_type == SapiMsgType.ATTACH_REPLY:
        r = AttachReply.decode(payload)
        fields = dict(vars(r))
        roles = {str(k.name): v for k, v in assign_fds(r.fd_flags, r.n_fds, fds).items()}
    elif msg_type == SapiMsgType.ADD_DEL_WORKER_REPLY:
        w = WorkerAddDelReply.decode(payload)
        fields = dict(vars(w))
        roles = {str(k.name): v for k, v in assign_fds(w.fd_flags, w.n_fds, fds).items()}
    elif msg_type == SapiMsgType.ADD_DEL_CERT_KEY_REPLY:
        fields = dict(vars(CertKeyReply.decode(payload)))
    elif msg_type == SapiMsgType.SEND_FDS:
        if len(fds) != 1:
            raise AppSocketError(f"SEND_FDS carries {len(fds)} fds; it must carry exactly one")
        fields = {}
        roles = {"SEGMENT": fds}
    elif msg_type in PAYLOADS:
        fields = dict(PAYLOADS[msg_type].unpack(payload)._asdict())
    else:
        raise AppSocketError(f"unknown app socket message type {msg_type}")
    return msg_type, fields, roles


def load_trace(path: str | Path) -> list[TraceMessage]:
    """The messages of a trace file, decoded.  A file that is not a well-formed trace raises
    `RecordingError` naming the file and what is wrong; an unreadable one the usual `OSError`."""
    from .timeline import is_live_trace, load_timeline

    if is_live_trace(path):
        return [r for r in load_timeline(path).records if isinstance(r, TraceMessage)]
    try:
        return _messages(read_json(path))
    except RecordingError as e:
        raise e.at(path) from None


def _messages(data: Any) -> list[TraceMessage]:
    doc = typed(data, dict, "the document")
    need("events" in doc, "not an app-socket trace: no 'events' list")
    events = json_field(doc, "events", "the document", list)
    return [_message(i, typed(ev, dict, f"event {i}")) for i, ev in enumerate(events)]


def _message(i: int, ev: dict[str, Any], where: str = "") -> TraceMessage:
    """One app-socket frame (``where`` names it in errors: "event 3", "line 5")."""
    where = where or f"event {i}"
    direction = json_field(ev, "dir", where, str)
    need(direction in DIRECTIONS, f"{where}: 'dir' is {direction!r}, not one of {DIRECTIONS}")
    text = json_field(ev, "hex", where, str)
    try:
        frame = bytes.fromhex(text)
    except ValueError:
        raise RecordingError(f"{where}: 'hex' is not a string of hex byte pairs") from None
    length = int_field(ev, "len", where, default=len(frame))
    need(length == len(frame), f"{where}: 'len' is {length} but 'hex' holds {len(frame)} bytes")
    fds = [
        integer(fd, f"{where}: fds[{k}]", 0, FD_MAX)
        for k, fd in enumerate(json_field(ev, "fds", where, list, default=[]))
    ]
    mmaps = [
        _mmap(typed(mm, dict, f"{where}: mmaps[{k}]"), f"{where}: mmaps[{k}]", len(fds))
        for k, mm in enumerate(json_field(ev, "mmaps", where, list, default=[]))
    ]
    try:
        msg_type, fields, roles = decode_frame(frame, fds)
    except VclError as e:
        raise RecordingError(f"{where}: {e.strerror}") from e
    return TraceMessage(i, direction, msg_type, fields, fds, roles, mmaps)


def _mmap(mm: dict[str, Any], where: str, n_fds: int) -> dict[str, Any]:
    """One ``mmaps`` entry: which received fd (``fd_index``) was mapped how."""
    need(n_fds, f"{where}: an mmap of a message that carried no fds")
    return {
        "fd_index": int_field(mm, "fd_index", where, 0, n_fds - 1),
        "length": int_field(mm, "length", where),
        "offset": int_field(mm, "offset", where, default=0),
        "prot": json_field(mm, "prot", where, str, default=""),
        "flags": json_field(mm, "flags", where, str, default=""),
    }


def format_trace(messages: list[TraceMessage]) -> str:
    """Human-readable rendering, one block per message."""
    lines: list[str] = []
    for m in messages:
        lines.append(f"#{m.index} {m.direction:9} {m.type_name}")
        for k, v in m.fields.items():
            lines.append(f"    {k:26} {_fmt(k, v)}")
        for role, fds in m.fd_roles.items():
            lines.append(f"    fd {role:23} {', '.join(map(str, fds))}")
        for mm in m.mmaps:
            role = _role_of(m, mm.get("fd_index", -1))
            lines.append(
                f"    mmap fd#{mm.get('fd_index')} ({role}) {mm.get('length')} bytes "
                f"{mm.get('flags', '')} {mm.get('prot', '')}"
            )
    return "\n".join(lines)


def _role_of(m: TraceMessage, fd_index: int) -> str:
    if not 0 <= fd_index < len(m.fds):
        return "?"
    fd = m.fds[fd_index]
    return next((role for role, fds in m.fd_roles.items() if fd in fds), "?")


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, enum.Flag):
        names = "|".join(str(m.name) for m in type(value) if m in value and m.value)
        return f"{value.value:#x} ({names or 0})"
    if isinstance(value, enum.Enum):
        return f"{value.value} ({value.name})"
    if isinstance(value, int) and any(s in key for s in ("mq", "handle", "address", "FLAGS")):
        return f"{value:#x}"
    return repr(value) if isinstance(value, str) else str(value)
