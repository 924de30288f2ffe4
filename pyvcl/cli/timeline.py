"""A live trace as a timeline: one line per frame, message, core call or note (``pyvcl decode``).

Sessions are shown as the app numbers them (``s3``).  Messages that name VPP's handle or
VPP's session index are tied to the app's index by the messages that carry both (BOUND,
CONNECTED, ACCEPTED_REPLY, LISTEN/CONNECT/UNLISTEN): `session_ties`.  VPP reuses a handle
after CLEANUP, so in a long trace a reused handle is tied to the last session that had it.
"""

from __future__ import annotations

import datetime
import shlex
from typing import Any

from ..api.timeline import CoreCall, Note, Record, Timeline
from ..api.trace import TraceMessage
from ..wire.addr import ip_from_wire, port_from_wire
from ..wire.enums import CleanupType, SessionEvent
from .render import to_jsonable

_VPP_INDEX_MASK = 0xFFFFFFFF  # a handle's low 32 bits are VPP's session index
_SUMMARY_ITEMS = 6
_HEX_KEYS = ("handle", "fifo", "address", "mq", "evt_q", "segment")
_QUIET_KEYS = {"client_index", "wrk_index", "is_ip4", "lcl_is_ip4", "rmt_is_ip4", "postponed"}


class SessionTies:
    """Which app session a handle or VPP session index belongs to, from the whole trace."""

    def __init__(self, timeline: Timeline) -> None:
        self.by_handle: dict[int, int] = {}
        self.by_vpp_index: dict[int, int] = {}
        for r in timeline.records:
            if isinstance(r, TraceMessage) and "index" in r.session and "handle" in r.session:
                h, i = r.session["handle"], r.session["index"]
                self.by_handle[h] = i
                self.by_vpp_index[h & _VPP_INDEX_MASK] = i
        self._records = {r.index: r for r in timeline.records}

    def sessions(self, r: Record) -> set[int]:
        """The app sessions a record concerns."""
        if isinstance(r, TraceMessage):
            out = set()
            s = r.session
            if "index" in s:
                out.add(s["index"])
            if "handle" in s and s["handle"] in self.by_handle:
                out.add(self.by_handle[s["handle"]])
            if "vpp_index" in s and s["vpp_index"] in self.by_vpp_index:
                out.add(self.by_vpp_index[s["vpp_index"]])
            return out
        if isinstance(r, CoreCall):
            out = {int(k) for k in r.states if k.isdigit()}
            for v in (r.args.get("session"), r.result):
                if isinstance(v, int):
                    out.add(v)
            target = self._records.get(r.event) if r.event is not None else None
            if target is not None:
                out |= self.sessions(target)
            return out
        return set()


def _selected(timeline: Timeline, session: int | None) -> tuple[SessionTies, list[Record]]:
    ties = SessionTies(timeline)
    records = timeline.records
    if session is not None:
        records = [r for r in records if session in ties.sessions(r)]
    return ties, records


def format_timeline(timeline: Timeline, session: int | None = None) -> str:
    ties, records = _selected(timeline, session)
    h = timeline.header
    started = h.get("started")
    when = (
        datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(
            timespec="seconds"
        )
        if isinstance(started, (int, float))
        else "?"
    )
    argv = h.get("argv")
    command = shlex.join(map(str, argv)) if isinstance(argv, list) else "?"
    command = command.replace("\n", "\\n")  # (one line, even for ``run -c CODE``)
    lines = [f"# pid {h.get('pid', '?')} started {when}: {command}"]
    if session is not None:
        lines.append(f"# session {session} only")
    lines.append(f"{'t (s)':>10}  {'dir':9} {'kind':4} {'queue':5} {'type':26} {'sess':6} summary")
    for r in records:
        lines.append(_line(r, ties))
    if timeline.truncated:
        lines.append("# the last line was cut short (the process died while writing it)")
    return "\n".join(lines)


def _line(r: Record, ties: SessionTies) -> str:
    label = _label(r, ties)
    if isinstance(r, TraceMessage):
        head = f"{r.direction:9} {r.kind:4} {r.queue or '':5} {r.type_name:26}"
        return f"{r.t or 0:10.6f}  {head} {label:6} {_message_summary(r)}".rstrip()
    if isinstance(r, CoreCall):
        what = r.call + (f" #{r.event}" if r.event is not None else "")
        return f"{r.t:10.6f}  {'':9} core {'':5} {what:26} {label:6} {_core_summary(r)}".rstrip()
    assert isinstance(r, Note)
    text = ", ".join(f"{k}={v}" for k, v in r.fields.items() if k not in ("seq", "t", "kind"))
    return f"{r.t:10.6f}  {'':9} note {'':5} {'':26} {'':6} {text}"


def _label(r: Record, ties: SessionTies) -> str:
    found = ties.sessions(r)
    if found:
        return ",".join(f"s{i}" for i in sorted(found))
    if isinstance(r, TraceMessage):
        if "handle" in r.session:
            return f"h{r.session['handle']:#x}"
        if "vpp_index" in r.session:
            return f"v{r.session['vpp_index']}"
    return ""


def _message_summary(m: TraceMessage) -> str:
    items: list[str] = []
    f = m.fields
    if m.kind == "mq" and m.type < SessionEvent.CTRL_RPC:
        return ""  # an IO event: its type and session say it all
    for side in ("lcl", "rmt", ""):
        ip, port = f.get(f"{side}_ip" if side else "ip"), f.get(f"{side}_port" if side else "port")
        is_ip4 = f.get(f"{side}_is_ip4" if side else "is_ip4", 1)
        if isinstance(ip, bytes) and isinstance(port, int) and (any(ip) or port):
            name = f"{side} " if side else ""
            items.append(f"{name}{ip_from_wire(ip, bool(is_ip4))}:{port_from_wire(port)}")
    for k, v in f.items():
        if k in _QUIET_KEYS or k.endswith(("ip", "port")) or isinstance(v, (bytes, bytearray)):
            continue
        if not v and k != "retval":
            continue
        if k == "type" and m.type == SessionEvent.CTRL_CLEANUP:
            items.append(f"type={_name(CleanupType, v)}")
        elif isinstance(v, int) and any(h in k for h in _HEX_KEYS):
            items.append(f"{k}={v:#x}")
        else:
            items.append(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}")
    for role, fds in m.fd_roles.items():
        items.append(f"fd {role} {','.join(map(str, fds))}")
    more = len(items) - _SUMMARY_ITEMS
    return " ".join(items[:_SUMMARY_ITEMS]) + (f" (+{more})" if more > 0 else "")


def _name(kind: Any, value: int) -> str:
    try:
        return str(kind(value).name)
    except ValueError:
        return str(value)


def _core_summary(c: CoreCall) -> str:
    parts = []
    if c.call in ("listen", "connect"):
        parts.append(f"{c.args.get('ip')}:{c.args.get('port')}")
    if c.result is not None:
        parts.append(f"-> s{c.result}")
    if c.error is not None:
        parts.append(f"raised {c.error}")
    else:
        types = [str(a.get("type", "?")) if isinstance(a, dict) else "?" for a in c.actions]
        parts.append("=> " + (", ".join(types) if types else "nothing"))
    if c.states:
        parts.append(" ".join(f"s{k}:{v}" for k, v in c.states.items()))
    return "; ".join(parts)


def timeline_json(timeline: Timeline, session: int | None = None) -> dict[str, Any]:
    ties, records = _selected(timeline, session)
    out = []
    for r in records:
        d = dict(vars(r))
        d["kind"] = r.kind
        if isinstance(r, TraceMessage):
            d["type_name"] = r.type_name
            d["hex"] = d.pop("raw").hex()
        elif isinstance(r, CoreCall):
            raw = d.pop("raw")
            if raw is not None:
                d["hex"] = raw.hex()
        d["sessions"] = sorted(ties.sessions(r))
        out.append(to_jsonable(d))
    return {"header": timeline.header, "truncated": timeline.truncated, "records": out}
