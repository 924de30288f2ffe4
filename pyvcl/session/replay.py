"""Recording what the session core is asked and answers, and replaying it.

With tracing on (`pyvcl.api.live_trace`), `watch_layer` wraps the methods of one
`SessionLayer` so that every call the adapter makes -- each event handed to `handle_event`,
each request (`new_session`, `listen`, `connect`, `accept`, `shutdown`, `close`) -- becomes a
``core`` record: the call, its arguments (an event by the ``seq`` of the mq record it was
drained in), the actions returned, and the states of the sessions it concerned afterwards.

`replay` drives a fresh `SessionLayer` with those calls, taking each event's bytes from its
mq record, and reports every call whose actions or states differ from the live run's.  The
core is deterministic and IO-free, so a recorded run must come out the same; a difference is a
change of behaviour (or an edited trace).  Recording the calls rather than inferring them from
the messages on the wire keeps the order the core saw: the poller drains events without the
worker lock, so another thread's request can reach the core between the drain and the
handling of those events.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..api import live_trace
from ..api.timeline import CoreCall, Timeline
from ..api.trace import TraceMessage
from ..mq.events import Event
from ..wire.enums import SessionEvent as E
from .core import Action, Session, SessionLayer

_REQUESTS = ("new_session", "listen", "connect", "accept", "shutdown", "close")
_CONTEXT_IS_SESSION = (E.CTRL_BOUND, E.CTRL_CONNECTED, E.CTRL_UNLISTEN_REPLY)


def action_json(a: Action) -> dict[str, Any]:
    """An action as JSON: type name, target mq (None: the ctrl mq) and fields (bytes in hex)."""
    fields = {k: _jsonable(v) for k, v in a.fields.items()}
    return {"type": E(a.event_type).name, "mq": a.mq_offset, "fields": fields}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, int):
        return int(value)  # (an IntEnum as its number)
    return str(value)


def _concerned(layer: SessionLayer, ev: Event) -> set[int]:
    """Sessions an event names (looked up before and again after it is handled)."""
    found: set[int] = set()
    if ev.session_index is not None:
        found.add(ev.session_index)
    m = ev.msg
    if m is None:
        return found
    for key in ("handle", "listener_handle"):
        idx = layer.by_handle.get(getattr(m, key, None) or -1)
        if idx is not None:
            found.add(idx)
    if ev.type in _CONTEXT_IS_SESSION:
        found.add(int(m.context))
    return found


def _states(layer: SessionLayer, indices: set[int]) -> dict[str, str]:
    out = {}
    for i in sorted(indices):
        s = layer.sessions.get(i)
        out[str(i)] = s.state.value if s is not None else "gone"
    return out


def watch_layer(layer: SessionLayer, tracer: live_trace.Tracer | None = None) -> None:
    """Record ``layer``'s calls into ``tracer`` (default: the process's, if tracing is on;
    without one, nothing happens)."""
    tracer = tracer or live_trace.active()
    if tracer is None:
        return
    depth = threading.local()  # record outermost calls only (close() calls itself, ...)
    tracer.record(
        "core", call="init", args={"client_index": layer.client_index, "wrk_index": layer.wrk_index}
    )

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def traced(*args: Any) -> Any:
            if getattr(depth, "n", 0):
                return fn(*args)
            depth.n = 1
            try:
                return _recorded(tracer, layer, name, fn, args)
            finally:
                depth.n = 0

        return traced

    for name in ("handle_event", *_REQUESTS):
        setattr(layer, name, wrap(name, getattr(layer, name)))


def _recorded(
    tracer: live_trace.Tracer,
    layer: SessionLayer,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> Any:
    fields: dict[str, Any] = {"call": name}
    concerned: set[int] = set()
    if name == "handle_event":
        ev = args[0]
        seq = tracer.event_seq(ev)
        if seq is None:  # not drained by a traced queue: keep its bytes here
            fields.update(ring=ev.ring, hex=ev.raw.hex())
        else:
            fields["event"] = seq
        concerned = _concerned(layer, ev)
    else:
        fields["args"] = _request_args(name, args)
        if args and isinstance(args[0], Session):
            concerned.add(args[0].index)
    try:
        result = fn(*args)
    except Exception as e:
        tracer.record("core", **fields, error=f"{type(e).__name__}: {e}")
        raise
    actions: list[Action] = []
    if name == "handle_event":
        actions = result
        concerned |= _concerned(layer, args[0])
    elif name == "new_session":
        concerned.add(result.index)
        fields["result"] = result.index
    elif name == "accept":
        new, actions = result
        fields["result"] = None if new is None else new.index
        if new is not None:
            concerned.add(new.index)
    else:
        actions = result
    fields["actions"] = [action_json(a) for a in actions]
    fields["states"] = _states(layer, concerned)
    tracer.record("core", **fields)
    return result


def _request_args(name: str, args: tuple[Any, ...]) -> dict[str, Any]:
    if name == "new_session":
        return {"proto": int(args[0])} if args else {}
    out: dict[str, Any] = {"session": args[0].index}
    if name in ("listen", "connect"):
        out.update(ip=args[1], port=args[2], vrf=args[3] if len(args) > 3 else 0)
    return out


@dataclass
class Mismatch:
    """One call of the replay whose outcome differs from the live run's."""

    seq: int
    call: str
    what: str

    def __str__(self) -> str:
        return f"record {self.seq} ({self.call}): {self.what}"


@dataclass
class ReplayResult:
    calls: int  # core calls replayed
    events: int  # of which events
    mismatches: list[Mismatch]
    layer: SessionLayer | None


def replay(timeline: Timeline) -> ReplayResult:
    """Drive a fresh `SessionLayer` with the core calls of ``timeline`` (one process's trace:
    one ``init`` record); every difference from the recorded outcome is a `Mismatch`."""
    by_seq = {r.index: r for r in timeline.records}
    layer: SessionLayer | None = None
    known: dict[int, Session] = {}  # sessions by index, also those the layer forgot
    mismatches: list[Mismatch] = []
    calls = n_events = 0
    for rec in timeline.records:
        if not isinstance(rec, CoreCall):
            continue
        if rec.call == "init":
            layer = SessionLayer(rec.args["client_index"], rec.args.get("wrk_index", 0))
            known = {}
            continue
        if layer is None:
            mismatches.append(Mismatch(rec.index, rec.call, "a core call before the core's init"))
            continue
        calls += 1
        error = None
        actions: list[Action] = []
        result: int | None = None
        concerned: set[int] = set()
        try:
            if rec.call == "handle_event":
                n_events += 1
                ev = _event_of(rec, by_seq)
                concerned = _concerned(layer, ev)
                actions = layer.handle_event(ev)
                concerned |= _concerned(layer, ev)
            else:
                actions, result, concerned = _request(layer, known, rec)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        known.update(layer.sessions)
        if (error is None) != (rec.error is None):
            mismatches.append(Mismatch(rec.index, rec.call, f"error {error!r}, live {rec.error!r}"))
            continue
        if error is not None:
            continue
        got = [action_json(a) for a in actions]
        if got != rec.actions:
            mismatches.append(Mismatch(rec.index, rec.call, f"actions {got}, live {rec.actions}"))
        states = _states(layer, concerned)
        if states != rec.states:
            mismatches.append(Mismatch(rec.index, rec.call, f"states {states}, live {rec.states}"))
        if rec.call in ("new_session", "accept") and result != rec.result:
            mismatches.append(Mismatch(rec.index, rec.call, f"session {result}, live {rec.result}"))
    return ReplayResult(calls, n_events, mismatches, layer)


def _event_of(rec: CoreCall, by_seq: dict[int, Any]) -> Event:
    if rec.event is None:
        assert rec.ring is not None and rec.raw is not None  # (the loader checked)
        return live_trace.decode_message(rec.ring, rec.raw)
    msg = by_seq[rec.event]
    assert isinstance(msg, TraceMessage) and msg.ring is not None  # (the loader checked)
    return live_trace.decode_message(msg.ring, msg.raw)


def _request(
    layer: SessionLayer, known: dict[int, Session], rec: CoreCall
) -> tuple[list[Action], int | None, set[int]]:
    args = rec.args
    if rec.call == "new_session":
        s = layer.new_session(args.get("proto", 0)) if args else layer.new_session()
        known[s.index] = s
        return [], s.index, {s.index}
    found = known.get(args["session"])
    if found is None:
        raise LookupError(f"session {args['session']} was never created")
    s = found
    concerned = {s.index}
    if rec.call == "accept":
        new, actions = layer.accept(s)
        if new is None:
            return actions, None, concerned
        known[new.index] = new
        return actions, new.index, concerned | {new.index}
    if rec.call in ("listen", "connect"):
        method = layer.listen if rec.call == "listen" else layer.connect
        return method(s, args["ip"], args["port"], args.get("vrf", 0)), None, concerned
    if rec.call == "shutdown":
        return layer.shutdown(s), None, concerned
    if rec.call == "close":
        return layer.close(s), None, concerned
    raise LookupError(f"no core call {rec.call!r}")
